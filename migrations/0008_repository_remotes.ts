// One repository per remote, and the credentials the server reaches it with.
//
// remote_key is the remote's canonical spelling (src/core/remote-url.ts canonicalRemote: host,
// port and path, no scheme, user or ".git"), unique per workspace as remote_url was: the https,
// ssh and other spellings of one remote are one repository. remote_url keeps what the user
// typed, to show. The key is computed in code, which a migration must not import, so rows
// stored before this migration get theirs when the server starts (core/repositories.ts
// fillRemoteKeys); until then they are NULL, which a unique index lets repeat.
//
// upstream_credentials holds a token, or a user name and password, sealed by the secret box
// (src/auth/secret-box.ts) and bound to the row; NULL when the remote needs none.
import { type Kysely, type Migration } from "kysely";

export function repositoryRemotes(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("repositories").addColumn("remote_key", "text").execute();
      await db.schema.alterTable("repositories").addColumn("upstream_credentials", "text").execute();
      await db.schema
        .createIndex("repositories_workspace_remote_key_idx")
        .on("repositories")
        .columns(["workspace_id", "remote_key"])
        .unique()
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex("repositories_workspace_remote_key_idx").execute();
      await db.schema.alterTable("repositories").dropColumn("upstream_credentials").execute();
      await db.schema.alterTable("repositories").dropColumn("remote_key").execute();
    },
  };
}
