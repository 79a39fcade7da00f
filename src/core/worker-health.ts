// The worker health monitor, one per replica (server.ts starts and stops it): every
// FOREMAN_HEALTH_CHECK_SECONDS it
//  - marks unhealthy each worker silent for three heartbeat intervals, and in the same
//    transaction loses every session it holds (each ends as lost, its lease revoked) and
//    requeues each as the run's next attempt;
//  - loses and requeues each session whose lease expired although its worker still heartbeats
//    (the worker stopped listing it).
// A run lost FOREMAN_MAX_ATTEMPTS times in a row fails its task, with the reason recorded.
//
// Safe with several replicas running it at once: each transition is one conditional UPDATE
// (store/workers.ts markUnhealthy, store/agent-sessions.ts loseSession) that only one of them
// wins; on PostgreSQL the loser waits for the winner's row lock and then finds the row moved.
// The requeued session wakes a waiting poll at once: in process through core.dispatch, and on
// other replicas by the NOTIFY its insertion sends on commit.
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { Logger } from "../logger.js";
import { RUN_END, RUN_LOST_FOR_GOOD, RUN_REQUEUE, SESSION_RETURN } from "../model/tasks.js";
import * as sessions from "../store/agent-sessions.js";
import { newId } from "../store/codec.js";
import * as taskEvents from "../store/task-events.js";
import * as tasksStore from "../store/tasks.js";
import * as workersStore from "../store/workers.js";
import { commandsQueued } from "./commands.js";
import type { Core } from "./context.js";
import { truncate } from "./text.js";

/** Attempts a run gets when the server sets none (FOREMAN_MAX_ATTEMPTS). */
export const DEFAULT_MAX_ATTEMPTS = 3;
/** Missed heartbeat intervals that make a worker unhealthy (and a lease's length). */
export const MISSED_HEARTBEATS = 3;
/** Most workers, and most expired leases, one sweep takes; the next sweep takes the rest. */
const SWEEP_LIMIT = 500;
const REASON_MAX = 2000;

export interface HealthSettings {
  /** FOREMAN_HEARTBEAT_SECONDS. */
  heartbeatSeconds: number;
  /** FOREMAN_MAX_ATTEMPTS: a run lost this many times in a row fails its task. */
  maxAttempts: number;
  /** FOREMAN_HEALTH_CHECK_SECONDS, in milliseconds. */
  intervalMs: number;
}

/** What one sweep did. */
export interface HealthSweep {
  unhealthy: string[];
  /** The lost sessions, each with the session that requeued it (undefined: its task failed). */
  lost: { sessionId: string; requeuedAs: string | undefined }[];
}

/** What to do once a lose transaction committed: wake-ups and the log line. */
interface Lost {
  session: sessions.LeasedSession;
  requeuedAs: string | undefined;
  workspaceId: string;
  taskId: string;
}

export class WorkerHealth {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly core: Core,
    readonly settings: HealthSettings,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.run(), this.settings.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer and waits for a sweep under way. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private run(): void {
    if (this.running !== undefined) return;
    this.running = this.tick()
      .catch((error: unknown) => this.logger.warn({ err: error }, "the worker health monitor could not sweep; it tries again"))
      .finally(() => (this.running = undefined));
  }

  /** One sweep; safe to run beside another (here or on another replica). */
  async tick(): Promise<HealthSweep> {
    const { core } = this;
    const now = core.now();
    const silentSince = new Date(now.getTime() - MISSED_HEARTBEATS * this.settings.heartbeatSeconds * 1000);
    const sweep: HealthSweep = { unhealthy: [], lost: [] };
    for (const workerId of await workersStore.silentWorkers(core.db, silentSince, SWEEP_LIMIT)) {
      const why = `its worker missed ${MISSED_HEARTBEATS} heartbeats`;
      const done = await core.adapter.transaction(core.db, async (trx) => {
        if (!(await workersStore.markUnhealthy(trx, workerId, silentSince))) return undefined;
        const lost: Lost[] = [];
        for (const id of await sessions.heldBy(trx, workerId)) {
          const one = await loseInTransaction(core, trx, id, why, { workerId }, this.settings.maxAttempts, now);
          if (one !== undefined) lost.push(one);
        }
        return lost;
      });
      if (done === undefined) continue;
      sweep.unhealthy.push(workerId);
      this.logger.warn({ worker_id: workerId, lost_sessions: done.length }, "worker unhealthy: it missed its heartbeats");
      for (const l of done) afterLoss(core, this.logger, l, why, sweep);
    }
    for (const id of await sessions.expiredLeases(core.db, now, SWEEP_LIMIT)) {
      const why = "its lease expired (its worker did not renew it)";
      const one = await loseSessions(core, [id], why, { expiredBefore: now }, this.settings.maxAttempts, this.logger);
      sweep.lost.push(...one.lost);
    }
    return sweep;
  }
}

/**
 * Loses each of the sessions (as `when` narrows which) and requeues it, or fails its task past
 * the attempts, one transaction per session; for UnregisterWorker and a draining worker too.
 */
export async function loseSessions(
  core: Core,
  ids: string[],
  why: string,
  when: sessions.LoseCondition,
  maxAttempts: number,
  logger: Logger,
): Promise<Pick<HealthSweep, "lost">> {
  const sweep: HealthSweep = { unhealthy: [], lost: [] };
  for (const id of ids) {
    const one = await core.adapter.transaction(core.db, (trx) => loseInTransaction(core, trx, id, why, when, maxAttempts, core.now()));
    if (one !== undefined) afterLoss(core, logger, one, why, sweep);
  }
  return sweep;
}

/**
 * One session lost, in the caller's transaction: it ends as lost (its lease revoked) and its
 * run's next attempt is queued, or, when the run was lost maxAttempts times in a row, its task
 * fails with the reason. The session first, then its task: the order claims, reports and task
 * moves lock them in.
 */
async function loseInTransaction(
  core: Core,
  trx: Kysely<Database>,
  sessionId: string,
  why: string,
  when: sessions.LoseCondition,
  maxAttempts: number,
  now: Date,
): Promise<Lost | undefined> {
  const session = await sessions.loseSession(trx, core.adapter, sessionId, why, now, when);
  if (session === undefined) return undefined;
  const { task } = await sessions.workOf(trx, session);
  const place = await tasksStore.getTaskPlace(trx, task);
  if (place === undefined) throw new Error(`session ${sessionId} has no task`);
  const streak = await sessions.lostStreak(trx, session.agentTaskId);
  let requeuedAs: string | undefined;
  if (streak < maxAttempts) {
    requeuedAs = await sessions.queueNextAttempt(trx, core.adapter, session, newId(now.getTime()), now);
    await tasksStore.setExecutionState(trx, place, RUN_REQUEUE.executionState, now);
  } else {
    const reason = truncate(`the run was lost ${streak} times in a row (at most ${maxAttempts} attempts); the last time ${why}`, REASON_MAX);
    const to = RUN_END[place.kind][RUN_LOST_FOR_GOOD.end]!;
    if (!(await tasksStore.moveTask(trx, place, place.status, { status: to, executionState: RUN_LOST_FOR_GOOD.executionState, reason }, now))) {
      throw new Error(`task ${place.id} moved while session ${sessionId} held a lease`);
    }
  }
  await taskEvents.insertTaskEvent(trx, core.adapter, { ownerId: place.ownerId, workspaceId: place.workspaceId, taskId: place.id, type: "updated" }, now);
  return { session, requeuedAs, workspaceId: place.workspaceId, taskId: place.id };
}

function afterLoss(core: Core, logger: Logger, l: Lost, why: string, sweep: HealthSweep): void {
  core.taskChanges.notify(l.workspaceId);
  core.logs.notify(l.session.id);
  if (l.requeuedAs !== undefined) core.dispatch.queued(l.session.ownerId, l.session.agentType);
  if (l.session.workerId !== null) {
    commandsQueued(core, [l.session.workerId]);
    core.dispatch.freed(l.session.workerId);
  }
  sweep.lost.push({ sessionId: l.session.id, requeuedAs: l.requeuedAs });
  logger.info(
    { session_id: l.session.id, attempt: l.session.attempt, task_id: l.taskId, worker_id: l.session.workerId, requeued_as: l.requeuedAs ?? null, why },
    l.requeuedAs === undefined ? "session lost; its task failed, out of attempts" : "session lost; requeued as the next attempt",
  );
}

/**
 * Returns the worker's unstarted sessions (assigned, not running) to the queue, each as the
 * same attempt (SESSION_RETURN), in one transaction under the worker's claim lock, after
 * `first` (the drain or unregistration that stops its claims) in the same transaction: so a
 * claim of the worker either came before and is returned here, or comes after and finds the
 * worker draining. Wakes a poll per returned session, and the worker's own waiting poll (which
 * then finds it draining and answers empty). Returns the returned sessions' ids.
 */
export async function returnUnstarted(core: Core, logger: Logger, workerId: string, why: string, first: (trx: Kysely<Database>) => Promise<unknown>): Promise<string[]> {
  const now = core.now();
  const returned = await core.adapter.transaction(core.db, async (trx) => {
    await core.adapter.lockForOrder(trx, `claims:${workerId}`);
    await first(trx);
    const done: { session: sessions.LeasedSession; workspaceId: string }[] = [];
    for (const id of await sessions.heldBy(trx, workerId, { unstarted: true })) {
      const session = await sessions.returnSession(trx, core.adapter, id, workerId, now);
      if (session === undefined) continue;
      const { task } = await sessions.workOf(trx, session);
      const place = await tasksStore.getTaskPlace(trx, task);
      if (place === undefined) throw new Error(`session ${id} has no task`);
      await tasksStore.setExecutionState(trx, place, SESSION_RETURN.executionState, now);
      await taskEvents.insertTaskEvent(trx, core.adapter, { ownerId: place.ownerId, workspaceId: place.workspaceId, taskId: place.id, type: "updated" }, now);
      done.push({ session, workspaceId: place.workspaceId });
    }
    return done;
  });
  for (const r of returned) {
    core.taskChanges.notify(r.workspaceId);
    core.dispatch.queued(r.session.ownerId, r.session.agentType);
    logger.info({ session_id: r.session.id, attempt: r.session.attempt, worker_id: workerId, why }, "session returned to the queue unstarted");
  }
  if (returned.length > 0) commandsQueued(core, [workerId]);
  core.dispatch.freed(workerId);
  return returned.map((r) => r.session.id);
}
