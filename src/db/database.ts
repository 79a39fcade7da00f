// Opens the database the configuration names: PostgreSQL when DATABASE_URL is set, else a
// SQLite file in the data folder (WAL, foreign keys on, a busy timeout). SQLite has one
// connection, so writes are serialised in process as SQLite requires. Across processes (two
// servers, or `foreman migrate` beside `foreman serve`, on one data folder) SQLite transactions
// begin IMMEDIATE, taking the write lock before they read, and the migrator runs in one: kysely
// would otherwise migrate SQLite outside any transaction and without a lock, so a second process
// re-ran a migration another had just applied ("table users already exists"), and a migration
// that failed halfway left a half-made schema that every later start refused.
import fs from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import {
  CompiledQuery,
  Kysely,
  PostgresDialect,
  SqliteAdapter,
  SqliteDialect,
  SqliteDriver,
  type DatabaseConnection,
  type DialectAdapter as KyselyDialectAdapter,
  type Driver,
  type SqliteDialectConfig,
} from "kysely";
import pg from "pg";
import { postgresAdapter, sqliteAdapter, type DialectAdapter } from "./dialect-adapter.js";
import type { DialectName } from "./dialect.js";
import { useNamedStatements } from "./named-statements.js";
import type { Database } from "./schema.js";
import { withStatementCache } from "./statement-cache.js";

export interface DatabaseOptions {
  /** PostgreSQL URL; undefined opens SQLite at sqlitePath. */
  databaseUrl?: string | undefined;
  /** A file path or ":memory:". */
  sqlitePath?: string;
  poolSize?: number;
  /** Told when PostgreSQL drops an idle pooled connection (a restart, pg_terminate_backend). */
  onIdleConnectionError?: (error: Error) => void;
}

export interface Db {
  kysely: Kysely<Database>;
  /** The dialect's name, for logs and the migrations. */
  dialect: DialectName;
  /** What the dialect does differently (advisory locks, NOTIFY), for the store's queries. */
  adapter: DialectAdapter;
  close(): Promise<void>;
}

class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("begin immediate"));
  }
}

/** SQLite's DDL is transactional; saying so makes the migrator run in a transaction, whose
 * BEGIN IMMEDIATE is the migration lock between processes. */
class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

class ForemanSqliteDialect extends SqliteDialect {
  constructor(private readonly sqliteConfig: SqliteDialectConfig) {
    super(sqliteConfig);
  }

  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.sqliteConfig);
  }

  override createAdapter(): KyselyDialectAdapter {
    return new TransactionalDdlSqliteAdapter();
  }
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
    // The pool already discards such a connection and opens a new one when needed; without a
    // listener, pg re-throws the error as an uncaught exception that ends the process.
    pool.on("error", (error) => options.onIdleConnectionError?.(error));
    useNamedStatements(pool);
    const kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { kysely, dialect: "postgres", adapter: postgresAdapter, close: () => kysely.destroy() };
  }
  const file = options.sqlitePath ?? ":memory:";
  if (file !== ":memory:") fs.mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new SqliteDatabase(file);
  sqlite.pragma("journal_mode = WAL");
  sqlite.pragma("synchronous = NORMAL");
  sqlite.pragma("foreign_keys = ON");
  sqlite.pragma("busy_timeout = 5000");
  const kysely = new Kysely<Database>({ dialect: new ForemanSqliteDialect({ database: withStatementCache(sqlite) }) });
  return { kysely, dialect: "sqlite", adapter: sqliteAdapter, close: () => kysely.destroy() };
}

/**
 * Whether a query failed because every connection of the pool stayed busy for
 * connectionTimeoutMillis: the server is overloaded (pg-pool says so only in its message).
 */
export function isPoolTimeout(error: unknown): boolean {
  return error instanceof Error && error.message === "timeout exceeded when trying to connect";
}
