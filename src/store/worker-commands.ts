// Commands for a worker, kept until it acknowledges them: stop a session whose lease was
// revoked while the worker held it (a user cancelled, stopped or deleted its task, or the
// lease was lost or handed back), and a user's answer to a question its agent asked
// (tty_input_answer, whose payload carries the answer). Each is delivered by the worker's
// command stream (ReceiveCommands), its heartbeats and its polls until acknowledged, and
// deleted then. A stop's row says why; an answer's holds what the user typed, as the request's
// row does; neither holds a task secret.
import type { Kysely } from "kysely";
import type { DialectAdapter } from "../db/dialect-adapter.js";
import type { Database } from "../db/schema.js";
import { fromDbJson, fromDbTime, toDbTime } from "./codec.js";

/** The NOTIFY channel that wakes a worker's command stream and poll on every replica (payload: the worker id). */
export const COMMANDS_CHANNEL = "foreman_commands";

export interface StopCommand {
  kind: "stop_session";
  /** The command's id: one per session, so that stopping a session twice makes one command. */
  id: string;
  workerId: string;
  sessionId: string;
  reason: string;
  createdAt: Date;
}

/** A user's answer to a TTY input request of a session the worker holds, for its agent. */
export interface TtyAnswerCommand {
  kind: "tty_input_answer";
  /** The command's id: one per request, which is answered once. */
  id: string;
  workerId: string;
  sessionId: string;
  requestId: string;
  response: string;
  createdAt: Date;
}

export type WorkerCommand = StopCommand | TtyAnswerCommand;

/** A stop for a session a worker held: who held it and why it must stop. */
export interface HeldStop {
  sessionId: string;
  workerId: string;
  reason: string;
}

export function stopCommandId(sessionId: string): string {
  return `stop:${sessionId}`;
}

/**
 * Queues a stop command for each session its worker held, in the caller's transaction (the one
 * that revokes the lease), and wakes the workers' streams on every replica once it commits. A
 * session stopped again keeps its first command.
 */
export async function insertStopCommands(db: Kysely<Database>, adapter: DialectAdapter, stops: HeldStop[], now: Date): Promise<void> {
  if (stops.length === 0) return;
  await db
    .insertInto("worker_commands")
    .values(
      stops.map((s) => ({
        id: stopCommandId(s.sessionId),
        worker_id: s.workerId,
        session_id: s.sessionId,
        kind: "stop_session",
        payload: JSON.stringify({ reason: s.reason }),
        created_at: toDbTime(now),
      })),
    )
    .onConflict((oc) => oc.column("id").doNothing())
    .execute();
  for (const workerId of new Set(stops.map((s) => s.workerId))) await adapter.notifyOnCommit(db, COMMANDS_CHANNEL, workerId);
}

export function ttyAnswerCommandId(requestId: string): string {
  return `tty:${requestId}`;
}

/**
 * Queues the answer to a request for the worker holding its session, in the caller's
 * transaction (the one that answers the request), and wakes the worker's stream on every replica
 * once it commits.
 */
export async function insertTtyAnswerCommand(
  db: Kysely<Database>,
  adapter: DialectAdapter,
  answer: { workerId: string; sessionId: string; requestId: string; response: string },
  now: Date,
): Promise<void> {
  await db
    .insertInto("worker_commands")
    .values({
      id: ttyAnswerCommandId(answer.requestId),
      worker_id: answer.workerId,
      session_id: answer.sessionId,
      kind: "tty_input_answer",
      payload: JSON.stringify({ request_id: answer.requestId, response: answer.response }),
      created_at: toDbTime(now),
    })
    .execute();
  await adapter.notifyOnCommit(db, COMMANDS_CHANNEL, answer.workerId);
}

/**
 * The worker's unacknowledged commands, oldest first: the newest `limit` of them, so that a
 * worker that never acknowledges still sees each new one.
 */
export async function pendingCommands(db: Kysely<Database>, workerId: string, limit: number): Promise<WorkerCommand[]> {
  const rows = await db
    .selectFrom("worker_commands")
    .select(["id", "worker_id", "session_id", "kind", "payload", "created_at"])
    .where("worker_id", "=", workerId)
    .orderBy("created_at", "desc")
    .orderBy("id", "desc")
    .limit(limit)
    .execute();
  return rows.reverse().map((r): WorkerCommand => {
    const common = { id: r.id, workerId: r.worker_id, sessionId: r.session_id, createdAt: fromDbTime(r.created_at) };
    if (r.kind === "tty_input_answer") {
      const p = fromDbJson<{ request_id: string; response: string }>(r.payload);
      return { kind: "tty_input_answer", ...common, requestId: p.request_id, response: p.response };
    }
    return { kind: "stop_session", ...common, reason: fromDbJson<{ reason?: string }>(r.payload).reason ?? "" };
  });
}

/** Removes the worker's commands with these ids (another worker's, or unknown ones, stay as they are); returns how many. */
export async function acknowledgeCommands(db: Kysely<Database>, workerId: string, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const result = await db.deleteFrom("worker_commands").where("worker_id", "=", workerId).where("id", "in", ids).executeTakeFirst();
  return Number(result.numDeletedRows);
}
