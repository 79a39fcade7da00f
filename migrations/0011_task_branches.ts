// Where each unit task's branch stands, per repository, for every replica: the server's clones
// live in each replica's own data folder, and a worker's push lands in one of them. head_commit
// is the branch's head as the last push left it; bundle holds the branch's own commits (from
// base_commit, which every replica fetches from upstream, to head_commit) as a git bundle, so a
// replica that did not take the push makes its clone's branch the same (core/task-branches.ts).
// NULL bundle: the branch is still at its base. Until the blob store comes, the bundle lives here.
import { type Kysely, type Migration } from "kysely";
import type { DialectName } from "./dialect.js";

export function taskBranches(dialect: DialectName): Migration {
  const pg = dialect === "postgres";
  const id = pg ? "uuid" : "text";
  const time = pg ? "timestamptz" : "text";
  const bytes = pg ? "bytea" : "blob";
  return {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("task_branches")
        .addColumn("unit_task_id", id, (c) => c.notNull().references("unit_tasks.id").onDelete("cascade"))
        .addColumn("repository_id", id, (c) => c.notNull().references("repositories.id").onDelete("cascade"))
        .addColumn("branch_name", "text", (c) => c.notNull())
        .addColumn("base_commit", "text", (c) => c.notNull())
        .addColumn("head_commit", "text", (c) => c.notNull())
        .addColumn("bundle", bytes)
        .addColumn("updated_at", time, (c) => c.notNull())
        .addPrimaryKeyConstraint("task_branches_pkey", ["unit_task_id", "repository_id"])
        .execute();
      await db.schema.createIndex("task_branches_repository_idx").on("task_branches").column("repository_id").execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable("task_branches").execute();
    },
  };
}
