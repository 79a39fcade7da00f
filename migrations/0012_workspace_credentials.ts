// A workspace's upstream credentials (issue 18, "a token or user/password per repository, or per
// workspace"): sealed by the secret box like repositories.upstream_credentials, bound to their
// workspace (core/upstream.ts workspaceCredentialsAad), and used for every repository of the
// workspace that has none of its own. NULL: none.
import { type Kysely, type Migration } from "kysely";

export function workspaceCredentials(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("workspaces").addColumn("upstream_credentials", "text").execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable("workspaces").dropColumn("upstream_credentials").execute();
    },
  };
}
