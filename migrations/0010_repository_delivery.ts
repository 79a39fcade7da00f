// How an approved task's work reaches a repository's remote (issue 18, "Review and delivery"):
// delivery_mode is 'branch' (the task branch is pushed, nothing more: the default, and what every
// repository stored before this migration does), 'merge' (the branch is also merged into the base
// branch with a merge commit), 'squash' (one commit on the base branch) or 'rebase' (the branch's
// commits replayed on it); each of the last three pushes the base branch too.
import { sql, type Kysely, type Migration } from "kysely";

export function repositoryDelivery(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable("repositories")
        .addColumn("delivery_mode", "text", (col) => col.notNull().defaultTo(sql`'branch'`))
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable("repositories").dropColumn("delivery_mode").execute();
    },
  };
}
