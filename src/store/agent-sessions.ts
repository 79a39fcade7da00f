// Agent tasks (a task's runs) and their sessions (one per attempt): what a task's runs are read
// as, a run's insertion with its first queued session, a next attempt, cancelling what is
// active, and the dispatch transitions, each a named function with its SQL: the claim, a
// retried poll's claim, a report, lease renewal and the requeue of a lost session.
import type { Kysely, Selectable } from "kysely";
import type { DialectAdapter } from "../db/dialect-adapter.js";
import type { AgentSessionsTable, AgentTasksTable, Database } from "../db/schema.js";
import {
  LEASED_SESSION_STATES,
  SESSION_CANCEL,
  SESSION_CLAIM,
  SESSION_LOSE,
  SESSION_REPORT,
  SESSION_RETURN,
  SESSION_START,
  type AgentSession,
  type AgentTask,
  type AgentTaskKind,
  type ReportedState,
  type SessionState,
  type TaskKind,
} from "../model/tasks.js";
import { fromDbTime, fromDbTimeOrNull, toDbTime } from "./codec.js";
import { LOGS_CHANNEL } from "./log-batches.js";
import { insertStopCommands } from "./worker-commands.js";

/**
 * The NOTIFY channel that wakes long polls (GetTask) on every replica. Its keys say whose work
 * of which agent was queued (claimKey), or that a worker has a free slot again (workerKey).
 */
export const CLAIMS_CHANNEL = "foreman_claims";

/**
 * What a waiting poll listens for: work of this owner (null: any owner, the pool of workers
 * registered with the server's token) for this agent. Owner ids and agent names hold no space.
 */
export function claimKey(ownerId: string | null, agentType: string): string {
  return `${ownerId ?? "*"}:${agentType}`;
}

/** What the poll of a worker that runs all it may listens for: one of its sessions ended. */
export function workerKey(workerId: string): string {
  return `worker:${workerId}`;
}

function toSession(row: Selectable<AgentSessionsTable>): AgentSession {
  return {
    id: row.id,
    agentTaskId: row.agent_task_id,
    attempt: row.attempt,
    state: row.state as SessionState,
    workerId: row.worker_id,
    agentType: row.agent_type,
    agentModel: row.agent_model,
    createdAt: fromDbTime(row.created_at),
    startedAt: fromDbTimeOrNull(row.started_at),
    endedAt: fromDbTimeOrNull(row.ended_at),
    exitCode: row.exit_code,
    errorMessage: row.error_message,
    lastLogSequence: Number(row.last_log_sequence),
  };
}

/** Each task's agent tasks, oldest first, each with its sessions. */
export async function agentTasksOf(db: Kysely<Database>, kind: TaskKind, taskIds: string[]): Promise<Map<string, AgentTask[]>> {
  const byTask = new Map<string, AgentTask[]>(taskIds.map((id) => [id, []]));
  if (taskIds.length === 0) return byTask;
  const column = kind === "unit" ? "unit_task_id" : "composite_task_id";
  const rows: Selectable<AgentTasksTable>[] = await db.selectFrom("agent_tasks").selectAll().where(column, "in", taskIds).orderBy("id").execute();
  const sessions = new Map<string, AgentSession[]>(rows.map((r) => [r.id, []]));
  if (rows.length > 0) {
    const sessionRows = await db
      .selectFrom("agent_sessions")
      .selectAll()
      .where(
        "agent_task_id",
        "in",
        rows.map((r) => r.id),
      )
      .orderBy("id")
      .execute();
    for (const s of sessionRows) sessions.get(s.agent_task_id)?.push(toSession(s));
  }
  for (const row of rows) byTask.get((kind === "unit" ? row.unit_task_id : row.composite_task_id)!)?.push(toAgentTask(row, sessions.get(row.id) ?? []));
  return byTask;
}

function toAgentTask(row: Selectable<AgentTasksTable>, sessions: AgentSession[]): AgentTask {
  return {
    id: row.id,
    kind: row.kind as AgentTaskKind,
    prompt: row.prompt,
    agentType: row.agent_type,
    agentModel: row.agent_model,
    createdAt: fromDbTime(row.created_at),
    sessions,
  };
}

export interface NewAgentTask {
  id: string;
  ownerId: string;
  unitTaskId: string | null;
  compositeTaskId: string | null;
  kind: AgentTaskKind;
  prompt: string;
  agentType: string;
  agentModel: string;
  /**
   * For a unit task's run: the repositories it works on, each with its branches and the commit
   * the run starts from (null when the server holds no clone: it contacts no remotes).
   */
  baseRemotes: { repositoryId: string; baseBranch: string; branchName: string; baseCommit: string | null }[];
}

/** Inserts an agent task and its first queued session; run it in a transaction. Returns it as stored. */
export async function insertAgentTask(db: Kysely<Database>, adapter: DialectAdapter, a: NewAgentTask, sessionId: string, now: Date): Promise<AgentTask> {
  const at = toDbTime(now);
  const row = await db
    .insertInto("agent_tasks")
    .values({
      id: a.id,
      owner_id: a.ownerId,
      unit_task_id: a.unitTaskId,
      composite_task_id: a.compositeTaskId,
      kind: a.kind,
      prompt: a.prompt,
      agent_type: a.agentType,
      agent_model: a.agentModel,
      created_at: at,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  if (a.baseRemotes.length > 0) {
    await db
      .insertInto("agent_task_base_remotes")
      .values(
        a.baseRemotes.map((r) => ({
          agent_task_id: a.id,
          repository_id: r.repositoryId,
          base_branch: r.baseBranch,
          branch_name: r.branchName,
          base_commit: r.baseCommit,
        })),
      )
      .execute();
  }
  const session = await insertSession(db, adapter, { id: sessionId, ownerId: a.ownerId, agentTaskId: a.id, attempt: 1, agentType: a.agentType, agentModel: a.agentModel }, now);
  return toAgentTask(row, [session]);
}

/**
 * Queues a session, and wakes a poll that may claim it on every replica once the transaction
 * commits: one of the owner's own workers and one of the pool's (one of them finds it taken,
 * and waits again). The session id makes each notification distinct (see core/notifier.ts).
 */
export async function insertSession(
  db: Kysely<Database>,
  adapter: DialectAdapter,
  s: { id: string; ownerId: string; agentTaskId: string; attempt: number; agentType: string; agentModel: string },
  now: Date,
): Promise<AgentSession> {
  const row = await db
    .insertInto("agent_sessions")
    .values({
      id: s.id,
      owner_id: s.ownerId,
      agent_task_id: s.agentTaskId,
      attempt: s.attempt,
      state: SESSION_START,
      agent_type: s.agentType,
      agent_model: s.agentModel,
      created_at: toDbTime(now),
      updated_at: toDbTime(now),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  await adapter.notifyOnCommit(db, CLAIMS_CHANNEL, `${claimKey(s.ownerId, s.agentType)} ${s.id}`);
  await adapter.notifyOnCommit(db, CLAIMS_CHANNEL, `${claimKey(null, s.agentType)} ${s.id}`);
  return toSession(row);
}

/**
 * The base remotes of an agent task, for the next run of the same unit task: the same branches,
 * each starting where this run's ended (where it started, if it recorded no end).
 */
export async function baseRemotesOf(db: Kysely<Database>, agentTaskId: string): Promise<NewAgentTask["baseRemotes"]> {
  const rows = await db
    .selectFrom("agent_task_base_remotes")
    .select(["repository_id", "base_branch", "branch_name", "base_commit", "end_commit"])
    .where("agent_task_id", "=", agentTaskId)
    .orderBy("repository_id")
    .execute();
  return rows.map((r) => ({ repositoryId: r.repository_id, baseBranch: r.base_branch, branchName: r.branch_name, baseCommit: r.end_commit ?? r.base_commit }));
}

/** Records where a run's branches ended, per repository. */
export async function setEndCommits(db: Kysely<Database>, agentTaskId: string, heads: Map<string, string>): Promise<void> {
  for (const [repositoryId, commit] of heads) {
    await db
      .updateTable("agent_task_base_remotes")
      .set({ end_commit: commit })
      .where("agent_task_id", "=", agentTaskId)
      .where("repository_id", "=", repositoryId)
      .execute();
  }
}

/** A session a cancel or stop ended, with the worker that held it (null: it was queued). */
export interface CancelledSession {
  id: string;
  workerId: string | null;
}

/**
 * Cancels the agent tasks' active sessions as SESSION_CANCEL says; a worker that held one is
 * sent a stop command in the same transaction. Returns the cancelled sessions.
 */
export async function cancelActiveSessions(
  db: Kysely<Database>,
  adapter: DialectAdapter,
  agentTaskIds: string[],
  reason: string,
  now: Date,
): Promise<CancelledSession[]> {
  if (agentTaskIds.length === 0) return [];
  const rows = await db
    .updateTable("agent_sessions")
    .set({
      state: SESSION_CANCEL.to,
      ended_at: toDbTime(now),
      updated_at: toDbTime(now),
      stop_requested_at: toDbTime(now),
      stop_reason: reason,
      ...(SESSION_CANCEL.dropsLease ? { lease_token_hash: null, lease_expires_at: null } : {}),
    })
    .where("agent_task_id", "in", agentTaskIds)
    .where("state", "in", SESSION_CANCEL.from)
    .returning(["id", "worker_id"])
    .execute();
  const cancelled = rows.map((r) => ({ id: r.id, workerId: r.worker_id }));
  await insertStopCommands(db, adapter, heldStops(cancelled, reason), now);
  await notifyEnded(db, adapter, cancelled.map((s) => s.id));
  return cancelled;
}

/** Wakes the readers of the sessions' logs on every replica once the transaction commits: the sessions ended. */
async function notifyEnded(db: Kysely<Database>, adapter: DialectAdapter, sessionIds: string[]): Promise<void> {
  for (const id of sessionIds) await adapter.notifyOnCommit(db, LOGS_CHANNEL, `${id} end`);
}

/** The stops to send for sessions that workers held (a queued one had no worker to tell). */
function heldStops(ended: CancelledSession[], reason: string) {
  return ended.flatMap((s) => (s.workerId === null ? [] : [{ sessionId: s.id, workerId: s.workerId, reason }]));
}

/**
 * Stopping one session (SessionService.StopSession): an active one ends as cancelled, as
 * SESSION_CANCEL says, its lease dropped in the same write, with who stopped it and why, and
 * the worker that held it is sent a stop command. Undefined when it is not active (any more).
 */
export async function stopSession(db: Kysely<Database>, adapter: DialectAdapter, sessionId: string, reason: string, now: Date): Promise<LeasedSession | undefined> {
  const at = toDbTime(now);
  const row = await db
    .updateTable("agent_sessions")
    .set({
      state: SESSION_CANCEL.to,
      ended_at: at,
      updated_at: at,
      stop_requested_at: at,
      stop_reason: reason,
      ...(SESSION_CANCEL.dropsLease ? { lease_token_hash: null, lease_expires_at: null } : {}),
    })
    .where("id", "=", sessionId)
    .where("state", "in", SESSION_CANCEL.from)
    .returningAll()
    .executeTakeFirst();
  if (row === undefined) return undefined;
  await insertStopCommands(db, adapter, heldStops([{ id: row.id, workerId: row.worker_id }], reason), now);
  await notifyEnded(db, adapter, [row.id]);
  return toLeased(row);
}

/** Who claims: a worker, whose owner (null: every owner) and agents (empty: every agent) bound what it may take. */
export interface Claimant {
  workerId: string;
  ownerId: string | null;
  agentTypes: string[];
  maxSessions: number;
}

/** The lease a claim hands out: only the token's hash is stored. */
export interface NewLease {
  tokenHash: string;
  expiresAt: Date;
  pollId: string;
}

/** A session as the dispatcher reads it: with its owner, lease and poll. */
export interface LeasedSession extends AgentSession {
  ownerId: string;
  leaseTokenHash: string | null;
  leaseExpiresAt: Date | null;
  claimPollId: string | null;
  headCommit: string | null;
  stopRequested: boolean;
  /** Why a user's stop or cancel ended it; null otherwise. */
  stopReason: string | null;
}

function toLeased(row: Selectable<AgentSessionsTable>): LeasedSession {
  return {
    ...toSession(row),
    ownerId: row.owner_id,
    leaseTokenHash: row.lease_token_hash,
    leaseExpiresAt: fromDbTimeOrNull(row.lease_expires_at),
    claimPollId: row.claim_poll_id,
    headCommit: row.head_commit,
    stopRequested: row.stop_requested_at !== null,
    stopReason: row.stop_reason,
  };
}

/**
 * The claim: the oldest queued session the worker may serve goes to it with a lease, in one
 * statement, unless the worker already holds its most sessions. The inner select picks the row
 * (FOR UPDATE SKIP LOCKED on PostgreSQL: see DialectAdapter.skipLocked), the update takes it:
 *
 *   UPDATE agent_sessions SET state = 'assigned', worker_id = $worker, lease_token_hash = $hash,
 *          lease_expires_at = $expiry, claim_poll_id = $poll, updated_at = $now
 *    WHERE id = (SELECT q.id FROM agent_sessions q
 *                 WHERE q.state = 'queued' [AND q.owner_id = $owner] [AND q.agent_type IN (...)]
 *                   AND EXISTS (SELECT 1 FROM workers w WHERE w.id = $worker AND w.status NOT IN ('draining', 'unregistered'))
 *                   AND (SELECT count(*) FROM agent_sessions h
 *                         WHERE h.worker_id = $worker AND h.state IN ('assigned', 'running')) < $max
 *                 ORDER BY q.id LIMIT 1 [FOR UPDATE SKIP LOCKED])
 *      AND state = 'queued'
 *   RETURNING *
 *
 * Oldest first by id (UUIDv7, so by creation), on the (state, id) index. The count is exact only
 * if one claim of the worker runs at a time: the caller holds the worker's lock
 * (DialectAdapter.lockForOrder), and so also the session row, then the task's, in that order.
 * Measured here with 10,000 sessions queued, a claim (the lock and this statement, in its
 * transaction) takes 0.12 ms on SQLite and 1.2 ms on PostgreSQL (median); one that finds nothing
 * for its agents reads past the queue on the index, 0.7 and 1.6 ms: an index that leads with the
 * agent type would cut that, should the benchmarks show it matters.
 */
export async function claimSession(
  db: Kysely<Database>,
  adapter: DialectAdapter,
  w: Claimant,
  lease: NewLease,
  now: Date,
): Promise<ClaimedSession | undefined> {
  const candidate = adapter.skipLocked(
    db
      .selectFrom("agent_sessions as q")
      .select("q.id")
      .where("q.state", "=", SESSION_CLAIM.from)
      .$if(w.ownerId !== null, (qb) => qb.where("q.owner_id", "=", w.ownerId!))
      .$if(w.agentTypes.length > 0, (qb) => qb.where("q.agent_type", "in", w.agentTypes))
      // A draining (or unregistered) worker claims nothing: its lock orders this against the drain.
      .where((eb) => eb.exists(eb.selectFrom("workers as w").select("w.id").where("w.id", "=", w.workerId).where("w.status", "not in", ["draining", "unregistered"])))
      .where((eb) =>
        eb(
          eb.selectFrom("agent_sessions as h").select(eb.fn.countAll<number>().as("n")).where("h.worker_id", "=", w.workerId).where("h.state", "in", LEASED_SESSION_STATES),
          "<",
          w.maxSessions,
        ),
      )
      .orderBy("q.id")
      .limit(1),
  );
  const row = await db
    .updateTable("agent_sessions")
    .set({
      state: SESSION_CLAIM.to,
      worker_id: w.workerId,
      lease_token_hash: lease.tokenHash,
      lease_expires_at: toDbTime(lease.expiresAt),
      claim_poll_id: lease.pollId,
      updated_at: toDbTime(now),
    })
    .where("id", "=", candidate)
    .where("state", "=", SESSION_CLAIM.from)
    .returningAll()
    // What the assignment needs of the run, read by the same statement rather than by one
    // round trip each: the run's prompt and task, whether the task has secrets and whether the
    // worker has commands waiting (the next reads are skipped when not).
    .returning((eb) => [
      eb.selectFrom("agent_tasks as a").select("a.unit_task_id").whereRef("a.id", "=", "agent_sessions.agent_task_id").as("run_unit_task_id"),
      eb.selectFrom("agent_tasks as a").select("a.composite_task_id").whereRef("a.id", "=", "agent_sessions.agent_task_id").as("run_composite_task_id"),
      eb.selectFrom("agent_tasks as a").select("a.kind").whereRef("a.id", "=", "agent_sessions.agent_task_id").as("run_kind"),
      eb.selectFrom("agent_tasks as a").select("a.prompt").whereRef("a.id", "=", "agent_sessions.agent_task_id").as("run_prompt"),
      eb
        .exists(
          eb
            .selectFrom("secret_holders as sh")
            .innerJoin("agent_tasks as a", (join) => join.on((j) => j.or([j("a.unit_task_id", "=", j.ref("sh.task_id")), j("a.composite_task_id", "=", j.ref("sh.task_id"))])))
            .select("sh.task_id")
            .whereRef("a.id", "=", "agent_sessions.agent_task_id"),
        )
        .as("has_secret_holder"),
      eb.exists(eb.selectFrom("worker_commands as c").select("c.id").where("c.worker_id", "=", w.workerId)).as("has_commands"),
    ])
    .executeTakeFirst();
  if (row === undefined) return undefined;
  return {
    session: toLeased(row),
    run: { id: row.agent_task_id, kind: row.run_kind as AgentTaskKind, prompt: row.run_prompt ?? "" },
    task: runTask(row),
    hasSecretHolder: Boolean(row.has_secret_holder),
    hasCommands: Boolean(row.has_commands),
  };
}

/** A claim: the session, what the assignment needs of its run, and which further reads it needs. */
export interface ClaimedSession {
  session: LeasedSession;
  run: SessionWork["agentTask"];
  task: SessionWork["task"];
  /** The task has a secret_holders row (core/secret-vault.ts decides whether it still counts). */
  hasSecretHolder: boolean;
  /** The worker has commands waiting. */
  hasCommands: boolean;
}

/** The task a session's run is for, from the ids a statement read with it. */
function runTask(row: { owner_id: string; run_unit_task_id: string | null; run_composite_task_id: string | null }): SessionWork["task"] {
  if (row.run_unit_task_id !== null) return { kind: "unit", id: row.run_unit_task_id, ownerId: row.owner_id };
  if (row.run_composite_task_id !== null) return { kind: "composite", id: row.run_composite_task_id, ownerId: row.owner_id };
  throw new Error("an agent task belongs to no task");
}

/** What one poll needs to know before it tries a claim (pollOutlook). */
export interface PollOutlook {
  /** The worker's status now. */
  status: string;
  /** This poll id already names a claim (a retried poll). */
  earlierClaim: boolean;
  /** Sessions the worker holds. */
  leased: number;
  /** A queued session the worker may serve exists. */
  workQueued: boolean;
  /** The worker has commands waiting. */
  hasCommands: boolean;
}

/**
 * Whether a poll has anything to claim, in one read: the worker's status, whether the poll id
 * already names a claim, how many sessions the worker holds, whether work it may serve is
 * queued and whether it has commands waiting. Undefined when there is no such worker. Most polls
 * of an idle worker find nothing here and so skip the claim's transaction: on PostgreSQL an idle
 * poll was eight round trips (the credential's read, begin, the worker's lock, the poll id, the
 * claim, commit, the count of sessions held, the commands) and is this one.
 */
export async function pollOutlook(db: Kysely<Database>, w: Claimant, pollId: string): Promise<PollOutlook | undefined> {
  const row = await db
    .selectFrom("workers as w")
    .select((eb) => [
      "w.status",
      eb.exists(eb.selectFrom("agent_sessions as p").select("p.id").where("p.claim_poll_id", "=", pollId)).as("earlier_claim"),
      eb.selectFrom("agent_sessions as h").select(eb.fn.countAll<number>().as("n")).where("h.worker_id", "=", w.workerId).where("h.state", "in", LEASED_SESSION_STATES).as("leased"),
      eb
        .exists(
          eb
            .selectFrom("agent_sessions as q")
            .select("q.id")
            .where("q.state", "=", SESSION_CLAIM.from)
            .$if(w.ownerId !== null, (qb) => qb.where("q.owner_id", "=", w.ownerId!))
            .$if(w.agentTypes.length > 0, (qb) => qb.where("q.agent_type", "in", w.agentTypes)),
        )
        .as("work_queued"),
      eb.exists(eb.selectFrom("worker_commands as c").select("c.id").whereRef("c.worker_id", "=", "w.id")).as("has_commands"),
    ])
    .where("w.id", "=", w.workerId)
    .executeTakeFirst();
  if (row === undefined) return undefined;
  return {
    status: row.status,
    earlierClaim: Boolean(row.earlier_claim),
    leased: Number(row.leased),
    workQueued: Boolean(row.work_queued),
    hasCommands: Boolean(row.has_commands),
  };
}

/** The session a poll claimed, if any (claim_poll_id is unique). */
export async function findByPollId(db: Kysely<Database>, pollId: string): Promise<LeasedSession | undefined> {
  const row = await db.selectFrom("agent_sessions").selectAll().where("claim_poll_id", "=", pollId).executeTakeFirst();
  return row && toLeased(row);
}

/**
 * A retried poll's claim: the session the poll claimed, if the worker still holds it, with its
 * lease token's hash set to the one given (the same, unless the worker's credential changed
 * since, for the token is derived from it). Its expiry stays.
 */
export async function reclaim(db: Kysely<Database>, workerId: string, pollId: string, tokenHash: string, now: Date): Promise<LeasedSession | undefined> {
  const row = await db
    .updateTable("agent_sessions")
    .set({ lease_token_hash: tokenHash })
    .where("claim_poll_id", "=", pollId)
    .where("worker_id", "=", workerId)
    .where("state", "in", LEASED_SESSION_STATES)
    .where("lease_expires_at", ">", toDbTime(now))
    .returningAll()
    .executeTakeFirst();
  return row && toLeased(row);
}

/** How many sessions the worker holds. */
export async function leasedCount(db: Kysely<Database>, workerId: string): Promise<number> {
  const row = await db
    .selectFrom("agent_sessions")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("worker_id", "=", workerId)
    .where("state", "in", LEASED_SESSION_STATES)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export async function getSession(db: Kysely<Database>, id: string): Promise<LeasedSession | undefined> {
  const row = await db.selectFrom("agent_sessions").selectAll().where("id", "=", id).executeTakeFirst();
  return row && toLeased(row);
}

/** What a claimed session is work on: its run, the task the run is for, and the repositories. */
export interface SessionWork {
  agentTask: { id: string; kind: AgentTaskKind; prompt: string };
  task: { kind: TaskKind; id: string; ownerId: string };
  repositories: { repositoryId: string; name: string; baseBranch: string; branchName: string; baseCommit: string | null }[];
}

export async function workOf(db: Kysely<Database>, session: { agentTaskId: string }): Promise<SessionWork> {
  const agent = await db
    .selectFrom("agent_tasks")
    .select(["id", "kind", "prompt", "owner_id", "unit_task_id", "composite_task_id"])
    .where("id", "=", session.agentTaskId)
    .executeTakeFirstOrThrow();
  return {
    agentTask: { id: agent.id, kind: agent.kind as AgentTaskKind, prompt: agent.prompt },
    task: runTask({ owner_id: agent.owner_id, run_unit_task_id: agent.unit_task_id, run_composite_task_id: agent.composite_task_id }),
    repositories: await remotesOf(db, agent.id),
  };
}

/** The repositories a run works on, with its branches and base commits. */
export async function remotesOf(db: Kysely<Database>, agentTaskId: string): Promise<SessionWork["repositories"]> {
  const remotes = await db
    .selectFrom("agent_task_base_remotes as b")
    .innerJoin("repositories as r", "r.id", "b.repository_id")
    .select(["b.repository_id", "r.name", "b.base_branch", "b.branch_name", "b.base_commit"])
    .where("b.agent_task_id", "=", agentTaskId)
    .orderBy("b.repository_id")
    .execute();
  return remotes.map((r) => ({
    repositoryId: r.repository_id,
    name: r.name,
    baseBranch: r.base_branch,
    branchName: r.branch_name,
    baseCommit: r.base_commit,
  }));
}

/** A worker's report on a session, as SESSION_REPORT allows it. */
export interface Report {
  sessionId: string;
  workerId: string;
  /** The worker's owner: a worker that serves one user reports only that user's sessions (null: any). */
  ownerId: string | null;
  tokenHash: string;
  state: ReportedState;
  exitCode: number | null;
  errorMessage: string | null;
  headCommit: string | null;
}

/**
 * The report transition, fenced: it applies only while the worker holds the session's lease
 * (its worker, its token's hash, a state the report may follow, an expiry still ahead), so a
 * worker presumed dead cannot overwrite its successor's work. An end releases the lease (no
 * expiry) but keeps the token's hash, by which a repeat of the same report is recognised.
 * Returns the session and its run's task (read by the same statement), or undefined when
 * nothing applied; the caller tells a repeat from a lost lease.
 */
export async function reportSession(
  db: Kysely<Database>,
  adapter: DialectAdapter,
  r: Report,
  now: Date,
): Promise<{ session: LeasedSession; task: SessionWork["task"] } | undefined> {
  const transition = SESSION_REPORT[r.state];
  const at = toDbTime(now);
  const row = await db
    .updateTable("agent_sessions")
    .set(
      transition.ends
        ? { state: transition.to, ended_at: at, exit_code: r.exitCode, error_message: r.errorMessage, head_commit: r.headCommit, lease_expires_at: null, updated_at: at }
        : { state: transition.to, started_at: at, updated_at: at },
    )
    .where("id", "=", r.sessionId)
    .$if(r.ownerId !== null, (qb) => qb.where("owner_id", "=", r.ownerId!))
    .where("worker_id", "=", r.workerId)
    .where("lease_token_hash", "=", r.tokenHash)
    .where("state", "in", transition.from)
    .where("lease_expires_at", ">", at)
    .returningAll()
    .returning((eb) => [
      eb.selectFrom("agent_tasks as a").select("a.unit_task_id").whereRef("a.id", "=", "agent_sessions.agent_task_id").as("run_unit_task_id"),
      eb.selectFrom("agent_tasks as a").select("a.composite_task_id").whereRef("a.id", "=", "agent_sessions.agent_task_id").as("run_composite_task_id"),
    ])
    .executeTakeFirst();
  if (row === undefined) return undefined;
  if (transition.ends) await notifyEnded(db, adapter, [row.id]);
  return { session: toLeased(row), task: runTask(row) };
}

/**
 * Lease renewal (Heartbeat): each listed lease the worker still holds (its token's hash, a
 * leased state, an expiry still ahead) gets the new expiry, in one statement. Returns the
 * renewed sessions; a listed lease absent from them is lost.
 */
export async function renewLeases(
  db: Kysely<Database>,
  workerId: string,
  leases: { sessionId: string; tokenHash: string }[],
  expiresAt: Date,
  now: Date,
): Promise<{ id: string; attempt: number; tokenHash: string }[]> {
  if (leases.length === 0) return [];
  const rows = await db
    .updateTable("agent_sessions")
    .set({ lease_expires_at: toDbTime(expiresAt) })
    .where("worker_id", "=", workerId)
    .where("state", "in", LEASED_SESSION_STATES)
    .where("lease_expires_at", ">", toDbTime(now))
    .where((eb) => eb.or(leases.map((l) => eb.and([eb("id", "=", l.sessionId), eb("lease_token_hash", "=", l.tokenHash)]))))
    .returning(["id", "attempt", "lease_token_hash"])
    .execute();
  return rows.map((r) => ({ id: r.id, attempt: r.attempt, tokenHash: r.lease_token_hash! }));
}

/** Which held sessions a requeue may take: any, or only one whose lease expired before `expiredAt`, or only `workerId`'s. */
export interface LoseCondition {
  expiredBefore?: Date;
  workerId?: string;
}

/**
 * The lose transition, one conditional UPDATE: a held session (as the condition narrows it)
 * ends as lost, dropping its lease, with why in its error. Of several monitors (replicas) that
 * try the same session at once, one finds it held and the others find it lost already: on
 * PostgreSQL the second UPDATE waits for the first's row lock and re-reads the state. Its
 * worker, should it still be alive, is sent a stop command. Returns the lost session, or
 * undefined when it held no lease (any more).
 */
export async function loseSession(
  db: Kysely<Database>,
  adapter: DialectAdapter,
  sessionId: string,
  why: string,
  now: Date,
  when: LoseCondition = {},
): Promise<LeasedSession | undefined> {
  const at = toDbTime(now);
  const row = await db
    .updateTable("agent_sessions")
    .set({ state: SESSION_LOSE.to, ended_at: at, updated_at: at, lease_token_hash: null, lease_expires_at: null, error_message: why })
    .where("id", "=", sessionId)
    .where("state", "in", SESSION_LOSE.from)
    .$if(when.expiredBefore !== undefined, (qb) => qb.where("lease_expires_at", "<", toDbTime(when.expiredBefore!)))
    .$if(when.workerId !== undefined, (qb) => qb.where("worker_id", "=", when.workerId!))
    .returningAll()
    .executeTakeFirst();
  if (row === undefined) return undefined;
  await insertStopCommands(db, adapter, heldStops([{ id: row.id, workerId: row.worker_id }], `its lease was lost: ${why}`), now);
  await notifyEnded(db, adapter, [row.id]);
  return toLeased(row);
}

/**
 * The return transition: a session the worker holds but has not started goes back to the
 * queue as it is (the same attempt), with no worker, lease or poll, and wakes a poll that may
 * claim it on every replica once the transaction commits; the worker is sent a stop command.
 * Undefined when the worker no longer holds it unstarted.
 */
export async function returnSession(db: Kysely<Database>, adapter: DialectAdapter, sessionId: string, workerId: string, now: Date): Promise<LeasedSession | undefined> {
  const at = toDbTime(now);
  const row = await db
    .updateTable("agent_sessions")
    .set({ state: SESSION_RETURN.to, worker_id: null, lease_token_hash: null, lease_expires_at: null, claim_poll_id: null, updated_at: at })
    .where("id", "=", sessionId)
    .where("worker_id", "=", workerId)
    .where("state", "=", SESSION_RETURN.from)
    .returningAll()
    .executeTakeFirst();
  if (row === undefined) return undefined;
  await insertStopCommands(db, adapter, [{ sessionId: row.id, workerId, reason: "it went back to the queue unstarted" }], now);
  // Distinct from the insertion's notification, and from another return of the same session.
  await adapter.notifyOnCommit(db, CLAIMS_CHANNEL, `${claimKey(row.owner_id, row.agent_type)} ${row.id}@${at}`);
  await adapter.notifyOnCommit(db, CLAIMS_CHANNEL, `${claimKey(null, row.agent_type)} ${row.id}@${at}`);
  return toLeased(row);
}

/** Queues the next attempt of a lost session's run (waking a poll that may claim it); returns its id. */
export async function queueNextAttempt(db: Kysely<Database>, adapter: DialectAdapter, lost: LeasedSession, newSessionId: string, now: Date): Promise<string> {
  await insertSession(
    db,
    adapter,
    { id: newSessionId, ownerId: lost.ownerId, agentTaskId: lost.agentTaskId, attempt: lost.attempt + 1, agentType: lost.agentType, agentModel: lost.agentModel },
    now,
  );
  return newSessionId;
}

/**
 * The requeue transition: a lost session (its lease expired, or its worker went away) ends as
 * lost, dropping its lease, and the next attempt of its run is queued, in the caller's
 * transaction, so the lease is revoked exactly when the work returns to the queue. Returns the
 * new session's id, or undefined when the session held no lease any more.
 */
export async function requeueSession(
  db: Kysely<Database>,
  adapter: DialectAdapter,
  sessionId: string,
  newSessionId: string,
  now: Date,
  when: LoseCondition = {},
): Promise<string | undefined> {
  const lost = await loseSession(db, adapter, sessionId, "requeued", now, when);
  return lost && queueNextAttempt(db, adapter, lost, newSessionId, now);
}

/**
 * How many attempts of the run were lost in a row by requeues: the latest session (lost), and
 * before it each lost session that the next one requeued (queueNextAttempt inserts the next
 * attempt in the transaction that loses the last, so its created_at is the lost one's ended_at).
 * A session that ended otherwise, or one a user queued later (RetryTask after the run failed
 * for good), starts the count again. A run has few sessions.
 */
export async function lostStreak(db: Kysely<Database>, agentTaskId: string): Promise<number> {
  const rows = await db
    .selectFrom("agent_sessions")
    .select(["state", "created_at", "ended_at"])
    .where("agent_task_id", "=", agentTaskId)
    .orderBy("id", "desc")
    .execute();
  let streak = 0;
  for (let i = 0; i < rows.length && rows[i]!.state === SESSION_LOSE.to; i++) {
    streak++;
    const older = rows[i + 1];
    if (older === undefined || older.state !== SESSION_LOSE.to || older.ended_at === null) break;
    if (fromDbTime(older.ended_at).getTime() !== fromDbTime(rows[i]!.created_at).getTime()) break;
  }
  return streak;
}

/** Held sessions whose lease expired before `now`, soonest expired first (the health monitor's sweep). */
export async function expiredLeases(db: Kysely<Database>, now: Date, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom("agent_sessions")
    .select("id")
    .where("state", "in", LEASED_SESSION_STATES)
    .where("lease_expires_at", "<", toDbTime(now))
    .orderBy("lease_expires_at")
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/** The sessions a worker holds (only its unstarted ones, assigned and not running, if asked). */
export async function heldBy(db: Kysely<Database>, workerId: string, only: { unstarted?: boolean } = {}): Promise<string[]> {
  const rows = await db
    .selectFrom("agent_sessions")
    .select("id")
    .where("worker_id", "=", workerId)
    .where("state", "in", only.unstarted ? [SESSION_CLAIM.to] : LEASED_SESSION_STATES)
    .orderBy("id")
    .execute();
  return rows.map((r) => r.id);
}

/** The sessions these workers hold, with whose each is, oldest first (ListWorkers' page). */
export async function heldByWorkers(db: Kysely<Database>, workerIds: readonly string[]): Promise<{ id: string; workerId: string; ownerId: string }[]> {
  if (workerIds.length === 0) return [];
  const rows = await db
    .selectFrom("agent_sessions")
    .select(["id", "worker_id", "owner_id"])
    .where("worker_id", "in", workerIds)
    .where("state", "in", LEASED_SESSION_STATES)
    .orderBy("id")
    .execute();
  return rows.map((r) => ({ id: r.id, workerId: r.worker_id!, ownerId: r.owner_id }));
}

/** Queued work by owner and agent, with how many sessions each has (for the poll backstop). */
export async function queuedWork(db: Kysely<Database>, limit: number): Promise<{ ownerId: string; agentType: string; count: number }[]> {
  const rows = await db
    .selectFrom("agent_sessions")
    .select(["owner_id", "agent_type", (eb) => eb.fn.countAll<number>().as("n")])
    .where("state", "=", SESSION_START)
    .groupBy(["owner_id", "agent_type"])
    .limit(limit)
    .execute();
  return rows.map((r) => ({ ownerId: r.owner_id, agentType: r.agent_type, count: Number(r.n) }));
}
