// Runs the migrations in migrations/. Safe when several servers start at once on one
// PostgreSQL: kysely takes an advisory lock and runs each migration in a transaction, and the
// losers of the race find nothing left to do.
import { Migrator, type MigrationResultSet } from "kysely";
import { migrations } from "../../migrations/index.js";
import type { Db } from "./database.js";

export class MigrationError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationError";
  }
}

/** Migrates to the latest version and returns the names of the migrations it ran. */
export async function migrateToLatest(db: Db): Promise<string[]> {
  const migrator = new Migrator({
    db: db.kysely,
    provider: { getMigrations: async () => migrations(db.dialect) },
  });
  const result: MigrationResultSet = await migrator.migrateToLatest();
  if (result.error !== undefined) {
    const failed = result.results?.find((r) => r.status === "Error")?.migrationName;
    throw new MigrationError(`migration ${failed ?? "(setup)"} failed: ${String(result.error)}`, {
      cause: result.error,
    });
  }
  return (result.results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}
