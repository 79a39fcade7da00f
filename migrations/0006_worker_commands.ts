// Commands for a worker (stop a session; TTY answers with the logs issue) are kept until the
// worker acknowledges them, and belong to the worker, not to the session: a task deleted while
// its run was held deletes the session, and its worker must still be told to stop. The table
// of 0001 (tied to the session, cascading with it) was never written to; this replaces it.
// The id is the command's own (e.g. "stop:<session id>"), so that stopping a session twice
// makes one command: text on both databases.
import type { Kysely, Migration } from "kysely";
import type { DialectName } from "./dialect.js";

export function workerCommands(dialect: DialectName): Migration {
  const pg = dialect === "postgres";
  const id = pg ? "uuid" : "text";
  const time = pg ? "timestamptz" : "text";
  const json = pg ? "jsonb" : "text";
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.dropTable("worker_commands").execute();
      await db.schema
        .createTable("worker_commands")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("worker_id", id, (c) => c.notNull().references("workers.id").onDelete("cascade"))
        .addColumn("session_id", id, (c) => c.notNull())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("payload", json, (c) => c.notNull())
        .addColumn("created_at", time, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("worker_commands_worker_idx").on("worker_commands").columns(["worker_id", "created_at"]).execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable("worker_commands").execute();
      await db.schema
        .createTable("worker_commands")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("session_id", id, (c) => c.notNull().references("agent_sessions.id").onDelete("cascade"))
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("payload", json, (c) => c.notNull())
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("acknowledged_at", time)
        .execute();
      await db.schema.createIndex("worker_commands_session_idx").on("worker_commands").column("session_id").execute();
    },
  };
}
