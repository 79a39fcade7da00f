// What PostgreSQL and SQLite do differently, as the members of one small interface (kysely's
// own dialect adapters do the same), so that shared code never asks which dialect it runs on.
import { sql, type Kysely, type SelectQueryBuilder } from "kysely";
import type { Database } from "./schema.js";

export interface DialectAdapter {
  /**
   * Inside a transaction: waits for any other transaction holding `key`, then holds it until
   * this one ends, so that the writes made under one key commit in the order they took it.
   */
  lockForOrder(db: Kysely<Database>, key: string): Promise<void>;
  /** Inside a transaction: wakes every replica's listeners of `channel` with `payload` once it commits. */
  notifyOnCommit(db: Kysely<Database>, channel: string, payload: string): Promise<void>;
  /**
   * The select that picks a claim's row: on PostgreSQL it locks the row it returns and passes
   * over rows other transactions hold (FOR UPDATE SKIP LOCKED), so concurrent claims take
   * different rows without waiting on each other; on SQLite it is the select as it is, since the
   * claiming transaction is the only writer.
   */
  skipLocked<DB, TB extends keyof DB, O>(query: SelectQueryBuilder<DB, TB, O>): SelectQueryBuilder<DB, TB, O>;
}

export const postgresAdapter: DialectAdapter = {
  async lockForOrder(db, key) {
    await sql`SELECT pg_advisory_xact_lock(hashtext(${key}))`.execute(db);
  },
  async notifyOnCommit(db, channel, payload) {
    await sql`SELECT pg_notify(${channel}, ${payload})`.execute(db);
  },
  skipLocked: (query) => query.forUpdate().skipLocked(),
};

export const sqliteAdapter: DialectAdapter = {
  // One writer at a time: a write transaction begins IMMEDIATE, so it commits before the next begins.
  async lockForOrder() {},
  // No NOTIFY: the in-process notifier wakes this process's listeners, and another process on
  // the same file finds the change by its poll.
  async notifyOnCommit() {},
  // BEGIN IMMEDIATE took the write lock before the select ran: no other writer can touch the row.
  skipLocked: (query) => query,
};
