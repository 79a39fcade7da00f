// A session's log, as the batches its worker appended, each under the session's next sequence.
// The lines are stored as JSON, already masked (core/session-logs.ts): no secret value reaches
// this table. agent_sessions.last_log_sequence is the highest sequence acknowledged.
import { sql, type Kysely } from "kysely";
import type { DialectAdapter } from "../db/dialect-adapter.js";
import type { Database } from "../db/schema.js";
import type { LogLine } from "../model/logs.js";
import { LEASED_SESSION_STATES } from "../model/tasks.js";
import { fromDbJson, fromDbTime, toDbTime } from "./codec.js";

/**
 * The NOTIFY channel that wakes readers of a session's log on every replica: never log text.
 * Its payload's key (up to the first space) is the session id when the log grew (then the
 * batch's sequence) or the session ended (then `end`), and `<session id>:tty` when one of its
 * TTY requests was raised or answered (core/log-stream.ts ttyKey).
 */
export const LOGS_CHANNEL = "foreman_logs";

export interface StoredBatch {
  sequence: number;
  lines: LogLine[];
  createdAt: Date;
}

/** One line as stored: short keys, and the defaults (kind text, no time, no payload) left out. */
interface StoredLine {
  s: LogLine["stream"];
  t: string;
  k?: LogLine["kind"];
  at?: string;
  p?: string;
}

function toStoredLine(l: LogLine): StoredLine {
  const out: StoredLine = { s: l.stream, t: l.text };
  if (l.kind !== "text") out.k = l.kind;
  if (l.time !== null) out.at = toDbTime(l.time);
  if (l.payload !== null) out.p = l.payload;
  return out;
}

function fromStoredLine(l: StoredLine): LogLine {
  return { stream: l.s, kind: l.k ?? "text", text: l.t, time: l.at === undefined ? null : fromDbTime(l.at), payload: l.p ?? null };
}

/** The session's batches after `afterSequence`, in sequence order, at most `limit` of them. */
export async function listBatches(db: Kysely<Database>, sessionId: string, afterSequence: number, limit: number): Promise<StoredBatch[]> {
  const rows = await db
    .selectFrom("log_batches")
    .select(["sequence", "lines", "created_at"])
    .where("session_id", "=", sessionId)
    .where("sequence", ">", afterSequence)
    .orderBy("sequence")
    .limit(limit)
    .execute();
  return rows.map((r) => ({ sequence: Number(r.sequence), lines: fromDbJson<StoredLine[]>(r.lines).map(fromStoredLine), createdAt: fromDbTime(r.created_at) }));
}

/** Who appends: the session, and the worker's lease as the database keeps it (the token's hash). */
export interface LogWriter {
  sessionId: string;
  workerId: string;
  tokenHash: string;
}

/**
 * In the appending transaction: the fence and the lock in one statement. While the writer holds
 * the session's lease (its worker, its token's hash, a leased state, an expiry still ahead) the
 * row is locked until the transaction ends (a no-op UPDATE), so two appends of one session, or an
 * append and the report that ends the session, take turns. Returns the acknowledged sequence and
 * the bytes received so far (byte_count of the newest batch), or undefined when the lease is not held.
 */
export async function lockForAppend(db: Kysely<Database>, w: LogWriter, now: Date): Promise<{ lastSequence: number; receivedBytes: number } | undefined> {
  const row = await db
    .updateTable("agent_sessions")
    .set({ last_log_sequence: sql`last_log_sequence` })
    .where("id", "=", w.sessionId)
    .where("worker_id", "=", w.workerId)
    .where("lease_token_hash", "=", w.tokenHash)
    .where("state", "in", LEASED_SESSION_STATES)
    .where("lease_expires_at", ">", toDbTime(now))
    .returning("last_log_sequence")
    .executeTakeFirst();
  if (row === undefined) return undefined;
  // The newest row's running total: one index step, however long the log.
  const newest = await db
    .selectFrom("log_batches")
    .select("byte_count")
    .where("session_id", "=", w.sessionId)
    .orderBy("sequence", "desc")
    .limit(1)
    .executeTakeFirst();
  return { lastSequence: Number(row.last_log_sequence), receivedBytes: newest === undefined ? 0 : Number(newest.byte_count) };
}

export interface NewBatch {
  sequence: number;
  lines: LogLine[];
  /**
   * The bytes the worker has sent in the session's log up to and including this batch (text and
   * payload, before masking and any cut-off): a running total, stored as byte_count, so that the
   * session's size is its newest row's, not a sum over all of them.
   */
  receivedBytes: number;
}

/**
 * In the appending transaction: stores the batches, moves the session's acknowledged sequence to
 * `lastSequence` (past batches acknowledged without being stored, after a cut-off), and wakes
 * the log's readers on every replica once it commits.
 */
export async function appendBatches(db: Kysely<Database>, adapter: DialectAdapter, sessionId: string, batches: NewBatch[], lastSequence: number, now: Date): Promise<void> {
  if (batches.length > 0) {
    await db
      .insertInto("log_batches")
      .values(
        batches.map((b) => ({
          session_id: sessionId,
          sequence: b.sequence,
          lines: JSON.stringify(b.lines.map(toStoredLine)),
          line_count: b.lines.length,
          byte_count: b.receivedBytes,
          created_at: toDbTime(now),
        })),
      )
      .execute();
  }
  await db.updateTable("agent_sessions").set({ last_log_sequence: lastSequence }).where("id", "=", sessionId).execute();
  await adapter.notifyOnCommit(db, LOGS_CHANNEL, `${sessionId} ${lastSequence}`);
}
