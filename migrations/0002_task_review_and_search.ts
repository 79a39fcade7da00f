// Task review details and search: why a task reached its status (a reviewer's reason), whether a
// composite task's plan was approved (so a retry resumes execution rather than planning), and
// a lower-cased copy of title and prompt to search, lower-cased by the server so that both
// databases fold case alike (SQLite's lower() knows only ASCII).
import type { Kysely, Migration } from "kysely";
import type { DialectName } from "./dialect.js";

export function taskReviewAndSearch(dialect: DialectName): Migration {
  const time = dialect === "postgres" ? "timestamptz" : "text";
  return {
    async up(db: Kysely<unknown>) {
      for (const table of ["unit_tasks", "composite_tasks"]) {
        await db.schema.alterTable(table).addColumn("status_reason", "text").execute();
        await db.schema
          .alterTable(table)
          .addColumn("search_text", "text", (c) => c.notNull().defaultTo(""))
          .execute();
        const rows = await (db as Kysely<Record<string, { id: string; title: string; prompt: string; search_text: string }>>)
          .selectFrom(table)
          .select(["id", "title", "prompt"])
          .execute();
        for (const row of rows) {
          await (db as Kysely<Record<string, { id: string; search_text: string }>>)
            .updateTable(table)
            .set({ search_text: `${row.title}\n${row.prompt}`.toLowerCase() })
            .where("id", "=", row.id)
            .execute();
        }
      }
      await db.schema.alterTable("composite_tasks").addColumn("plan_approved_at", time).execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable("composite_tasks").dropColumn("plan_approved_at").execute();
      for (const table of ["unit_tasks", "composite_tasks"]) {
        await db.schema.alterTable(table).dropColumn("search_text").execute();
        await db.schema.alterTable(table).dropColumn("status_reason").execute();
      }
    },
  };
}
