// Kysely's SQLite driver prepares every query's SQL afresh, and preparing is the largest single
// cost of a cheap call (about 12 µs of a GetWorkspace's ~190 µs of server CPU here). The app's
// queries come in a few hundred shapes, so the prepared statements are kept by their SQL text,
// least recently used dropped past a bound (an IN list of varying length makes a new shape per
// length). SQLite re-prepares a kept statement by itself when the schema changes.
import type { Database as SqliteDatabase, Statement } from "better-sqlite3";
import type { SqliteDatabase as KyselySqliteDatabase } from "kysely";

/** Enough for every query shape the server has, with room for IN lists of many lengths. */
export const STATEMENT_CACHE_SIZE = 1000;

export function withStatementCache(sqlite: SqliteDatabase, size = STATEMENT_CACHE_SIZE): KyselySqliteDatabase {
  // A Map iterates in insertion order: re-inserting on use keeps the least recent first.
  const statements = new Map<string, Statement>();
  return {
    prepare(sql: string): Statement {
      const kept = statements.get(sql);
      // A statement still iterating (a streamed query) cannot run again until it finishes.
      if (kept !== undefined && !kept.busy) {
        statements.delete(sql);
        statements.set(sql, kept);
        return kept;
      }
      const statement = sqlite.prepare(sql);
      if (kept === undefined) {
        statements.set(sql, statement);
        if (statements.size > size) statements.delete(statements.keys().next().value!);
      }
      return statement;
    },
    close(): void {
      statements.clear();
      sqlite.close();
    },
  };
}
