// Indexes for lookups that cross owners: a webhook delivery finds its repositories by remote
// URL (compared without case: GitHub's owner and repository names ignore it), and GetLoginUrl
// counts the logins in progress (by expiry) to bound them.
import { sql, type Kysely, type Migration } from "kysely";

export function lookupIndexes(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.createIndex("repositories_remote_url_idx").on("repositories").expression(sql`lower(remote_url)`).execute();
      await db.schema.createIndex("auth_states_expires_at_idx").on("auth_states").column("expires_at").execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex("auth_states_expires_at_idx").execute();
      await db.schema.dropIndex("repositories_remote_url_idx").execute();
    },
  };
}
