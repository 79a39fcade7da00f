// What PostgreSQL and SQLite do differently, as the members of one small interface (kysely's
// own dialect adapters do the same), so that shared code never asks which dialect it runs on.
import { sql, type Kysely, type SelectQueryBuilder, type Transaction } from "kysely";
import type { Database } from "./schema.js";

export interface DialectAdapter {
  /**
   * Runs `work` in a transaction, as kysely's `transaction().execute` does; on PostgreSQL the
   * notifications that `notifyOnCommit` queues inside it go out in one statement just before the
   * commit, instead of one round trip each (a dispatch run queued five).
   */
  transaction<T>(db: Kysely<Database>, work: (trx: Transaction<Database>) => Promise<T>): Promise<T>;
  /**
   * Inside a transaction: waits for any other transaction holding `key`, then holds it until
   * this one ends, so that the writes made under one key commit in the order they took it.
   */
  lockForOrder(db: Kysely<Database>, key: string): Promise<void>;
  /**
   * Inside a transaction: wakes every replica's listeners of `channel` with `payload` once it
   * commits. In one that `transaction` began, it is sent with the others before the commit.
   */
  notifyOnCommit(db: Kysely<Database>, channel: string, payload: string): Promise<void>;
  /**
   * The select that picks a claim's row: on PostgreSQL it locks the row it returns and passes
   * over rows other transactions hold (FOR UPDATE SKIP LOCKED), so concurrent claims take
   * different rows without waiting on each other; on SQLite it is the select as it is, since the
   * claiming transaction is the only writer.
   */
  skipLocked<DB, TB extends keyof DB, O>(query: SelectQueryBuilder<DB, TB, O>): SelectQueryBuilder<DB, TB, O>;
}

/** The notifications each open `transaction` has queued, as "channel\0payload" (PostgreSQL sends a repeat once anyway). */
const queuedNotifications = new WeakMap<Kysely<Database>, Set<string>>();

export const postgresAdapter: DialectAdapter = {
  async transaction(db, work) {
    return await db.transaction().execute(async (trx) => {
      const queued = new Set<string>();
      queuedNotifications.set(trx, queued);
      const result = await work(trx);
      queuedNotifications.delete(trx);
      if (queued.size > 0) {
        const calls = [...queued].map((entry) => {
          const [channel, payload] = entry.split("\0") as [string, string];
          return sql`pg_notify(${channel}, ${payload})`;
        });
        await sql`SELECT ${sql.join(calls)}`.execute(trx);
      }
      return result;
    });
  },
  async lockForOrder(db, key) {
    await sql`SELECT pg_advisory_xact_lock(hashtext(${key}))`.execute(db);
  },
  async notifyOnCommit(db, channel, payload) {
    const queued = queuedNotifications.get(db);
    if (queued !== undefined) queued.add(`${channel}\0${payload}`);
    else await sql`SELECT pg_notify(${channel}, ${payload})`.execute(db);
  },
  skipLocked: (query) => query.forUpdate().skipLocked(),
};

export const sqliteAdapter: DialectAdapter = {
  transaction: (db, work) => db.transaction().execute(work),
  // One writer at a time: a write transaction begins IMMEDIATE, so it commits before the next begins.
  async lockForOrder() {},
  // No NOTIFY: the in-process notifier wakes this process's listeners, and another process on
  // the same file finds the change by its poll.
  async notifyOnCommit() {},
  // BEGIN IMMEDIATE took the write lock before the select ran: no other writer can touch the row.
  skipLocked: (query) => query,
};
