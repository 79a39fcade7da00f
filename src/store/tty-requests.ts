// TTY input requests: questions agents asked through their workers, and their answers. A
// request's status is stored as pending or answered; a pending one whose session has ended reads
// as cancelled (model/tty.ts ttyStatus), so every read here carries its session's state. That is
// a subquery rather than a join, so that keysetPage's unqualified `id` stays the request's.
import { sql, type Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { ACTIVE_SESSION_STATES, LEASED_SESSION_STATES, type SessionState } from "../model/tasks.js";
import { ttyStatus, type TtyInputRequest, type TtyInputStatus, type TtyInputType } from "../model/tty.js";
import { fromDbJson, fromDbTime, fromDbTimeOrNull, toDbTime } from "./codec.js";
import { keysetPage, type PageWindow } from "./pages.js";

export type { TtyInputRequest, TtyInputStatus, TtyInputType } from "../model/tty.js";

function selectRequests(db: Kysely<Database>) {
  return db
    .selectFrom("tty_input_requests")
    .selectAll()
    .select((eb) =>
      eb
        .selectFrom("agent_sessions")
        .select("agent_sessions.state")
        .whereRef("agent_sessions.id", "=", "tty_input_requests.session_id")
        .as("session_state"),
    );
}

type Row = Awaited<ReturnType<ReturnType<typeof selectRequests>["executeTakeFirstOrThrow"]>>;

function toRequest(row: Row): TtyInputRequest {
  return {
    id: row.id,
    ownerId: row.owner_id,
    sessionId: row.session_id,
    taskId: row.task_id,
    clientRequestId: row.client_request_id,
    prompt: row.prompt,
    inputType: row.input_type as TtyInputType,
    options: fromDbJson<string[]>(row.options),
    // A request goes with its session (ON DELETE CASCADE), so the state is there.
    status: ttyStatus(row.status as TtyInputStatus, ACTIVE_SESSION_STATES.includes(row.session_state as SessionState)),
    response: row.response,
    createdAt: fromDbTime(row.created_at),
    answeredAt: fromDbTimeOrNull(row.answered_at),
  };
}

/** A status as it reads (see ttyStatus), as a condition on stored rows. */
function withStatus<Q extends ReturnType<typeof selectRequests>>(query: Q, status: TtyInputStatus): Q {
  const active = sql<boolean>`tty_input_requests.session_id in (select s.id from agent_sessions s where s.state in (${sql.join(ACTIVE_SESSION_STATES)}))`;
  switch (status) {
    case "answered":
      return query.where("tty_input_requests.status", "=", "answered") as Q;
    case "pending":
      return query.where("tty_input_requests.status", "=", "pending").where(active) as Q;
    case "cancelled":
      return query.where((eb) =>
        eb.or([eb("tty_input_requests.status", "=", "cancelled"), eb.and([eb("tty_input_requests.status", "=", "pending"), eb.not(active)])]),
      ) as Q;
  }
}

export interface NewTtyRequest {
  id: string;
  ownerId: string;
  sessionId: string;
  taskId: string;
  clientRequestId: string;
  prompt: string;
  inputType: TtyInputType;
  options: string[];
}

/** Stores a pending request; false when the session already has one under this client request id (nothing is written). */
export async function insertTtyRequest(db: Kysely<Database>, r: NewTtyRequest, now: Date): Promise<boolean> {
  const result = await db
    .insertInto("tty_input_requests")
    .values({
      id: r.id,
      owner_id: r.ownerId,
      session_id: r.sessionId,
      task_id: r.taskId,
      client_request_id: r.clientRequestId,
      prompt: r.prompt,
      input_type: r.inputType,
      options: JSON.stringify(r.options),
      status: "pending",
      response: null,
      created_at: toDbTime(now),
      answered_at: null,
    })
    .onConflict((oc) => oc.columns(["session_id", "client_request_id"]).doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) > 0;
}

export async function findByClientRequestId(db: Kysely<Database>, sessionId: string, clientRequestId: string): Promise<TtyInputRequest | undefined> {
  const row = await selectRequests(db)
    .where("tty_input_requests.session_id", "=", sessionId)
    .where("tty_input_requests.client_request_id", "=", clientRequestId)
    .executeTakeFirst();
  return row && toRequest(row);
}

/** The owner's request; undefined for another user's or an unknown one. */
export async function getTtyRequest(db: Kysely<Database>, ownerId: string, id: string): Promise<TtyInputRequest | undefined> {
  const row = await selectRequests(db).where("tty_input_requests.owner_id", "=", ownerId).where("tty_input_requests.id", "=", id).executeTakeFirst();
  return row && toRequest(row);
}

export interface TtyRequestFilter {
  sessionId: string | undefined;
  taskId: string | undefined;
  status: TtyInputStatus | undefined;
}

/** One page of the owner's requests, oldest first. */
export async function listTtyRequests(db: Kysely<Database>, ownerId: string, filter: TtyRequestFilter, page: PageWindow): Promise<TtyInputRequest[]> {
  let query = selectRequests(db).where("tty_input_requests.owner_id", "=", ownerId);
  if (filter.sessionId !== undefined) query = query.where("tty_input_requests.session_id", "=", filter.sessionId);
  if (filter.taskId !== undefined) query = query.where("tty_input_requests.task_id", "=", filter.taskId);
  if (filter.status !== undefined) query = withStatus(query, filter.status);
  return (await keysetPage(query, page)).map(toRequest);
}

export interface TtyRequestsOfOptions {
  /** Only requests with this status (as it reads). */
  status?: TtyInputStatus;
  /** Only requests created after this one (ids are UUIDv7: creation order). */
  afterId?: string;
  /** At most this many; default 1000. */
  limit?: number;
}

/**
 * A session's requests, oldest first, with their status as of now: what StreamLog hands its
 * readers. The caller has checked that the reader may see the session.
 */
export async function ttyRequestsOf(db: Kysely<Database>, sessionId: string, options: TtyRequestsOfOptions = {}): Promise<TtyInputRequest[]> {
  let query = selectRequests(db).where("tty_input_requests.session_id", "=", sessionId);
  if (options.status !== undefined) query = withStatus(query, options.status);
  return (await keysetPage(query, { afterId: options.afterId, fetch: options.limit ?? 1000 })).map(toRequest);
}

/**
 * Answers a pending request of a session a worker holds, in one conditional write: of two
 * answers at once exactly one finds it pending (on PostgreSQL the second waits for the first's
 * row lock, then finds it answered). Returns the worker to send the answer to, or undefined when
 * the request was not pending, or its session not held, at the time.
 */
export async function answerTtyRequest(
  db: Kysely<Database>,
  ownerId: string,
  id: string,
  response: string,
  now: Date,
): Promise<{ workerId: string; sessionId: string } | undefined> {
  const updated = await db
    .updateTable("tty_input_requests")
    .set({ status: "answered", response, answered_at: toDbTime(now) })
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .where("status", "=", "pending")
    .where((eb) =>
      eb(
        "session_id",
        "in",
        eb.selectFrom("agent_sessions").select("id").where("state", "in", LEASED_SESSION_STATES).where("worker_id", "is not", null),
      ),
    )
    .returning("session_id")
    .executeTakeFirst();
  if (updated === undefined) return undefined;
  const session = await db.selectFrom("agent_sessions").select("worker_id").where("id", "=", updated.session_id).executeTakeFirstOrThrow();
  return { workerId: session.worker_id!, sessionId: updated.session_id };
}
