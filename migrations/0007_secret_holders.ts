// Which replica holds a task's secrets, and until when: what other replicas need to find them
// (SecretsService). The secrets themselves live only in that replica's memory; this table holds
// no value and no name. ended_runs is how many of the task's sessions had ended lost, cancelled
// or failed when the secrets were sent: one more since means a lease was lost or the run ended,
// and the secrets are no longer handed out (core/secret-vault.ts).
import { type Kysely, type Migration } from "kysely";
import type { DialectName } from "./dialect.js";

export function secretHolders(dialect: DialectName): Migration {
  const pg = dialect === "postgres";
  const id = pg ? "uuid" : "text";
  const time = pg ? "timestamptz" : "text";
  return {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("secret_holders")
        // A unit or a composite task: no foreign key, and a row whose task is gone is removed when read.
        .addColumn("task_id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("replica_id", "text", (c) => c.notNull())
        // Where other replicas reach the holder; NULL when it has no address (one replica only).
        .addColumn("replica_url", "text")
        // Names one SendSecrets: a later one replaces the set, and the older set's memory is freed.
        .addColumn("generation", "text", (c) => c.notNull())
        .addColumn("ended_runs", "integer", (c) => c.notNull())
        .addColumn("sent_at", time, (c) => c.notNull())
        .addColumn("expires_at", time, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("secret_holders_expires_idx").on("secret_holders").column("expires_at").execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable("secret_holders").execute();
    },
  };
}
