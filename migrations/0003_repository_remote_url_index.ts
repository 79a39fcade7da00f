// A webhook delivery finds its repositories by remote URL, across owners; without this index
// every delivery would read the whole repositories table.
import type { Kysely, Migration } from "kysely";

export function repositoryRemoteUrlIndex(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.createIndex("repositories_remote_url_idx").on("repositories").column("remote_url").execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex("repositories_remote_url_idx").execute();
    },
  };
}
