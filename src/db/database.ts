// Opens the database the configuration names: PostgreSQL when DATABASE_URL is set, else a
// SQLite file in the data folder (WAL, foreign keys on, a busy timeout). SQLite has one
// connection, so writes are serialised in process as SQLite requires.
import fs from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { Kysely, PostgresDialect, SqliteDialect } from "kysely";
import pg from "pg";
import type { DialectName } from "./dialect.js";
import type { Database } from "./schema.js";

export interface DatabaseOptions {
  /** PostgreSQL URL; undefined opens SQLite at sqlitePath. */
  databaseUrl?: string | undefined;
  /** A file path or ":memory:". */
  sqlitePath?: string;
  poolSize?: number;
}

export interface Db {
  kysely: Kysely<Database>;
  dialect: DialectName;
  close(): Promise<void>;
}

export function openDatabase(options: DatabaseOptions): Db {
  if (options.databaseUrl !== undefined) {
    const pool = new pg.Pool({
      connectionString: options.databaseUrl,
      max: options.poolSize ?? 10,
      // A query that the server never answers must not hang a request forever.
      query_timeout: 30_000,
      connectionTimeoutMillis: 10_000,
    });
    const kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { kysely, dialect: "postgres", close: () => kysely.destroy() };
  }
  const file = options.sqlitePath ?? ":memory:";
  if (file !== ":memory:") fs.mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new SqliteDatabase(file);
  sqlite.pragma("journal_mode = WAL");
  sqlite.pragma("synchronous = NORMAL");
  sqlite.pragma("foreign_keys = ON");
  sqlite.pragma("busy_timeout = 5000");
  const kysely = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  return { kysely, dialect: "sqlite", close: () => kysely.destroy() };
}
