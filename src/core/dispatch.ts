// The dispatcher: workers claim queued sessions with fenced leases (GetTask, a long poll),
// report on them (ReportStatus) and renew them (Heartbeat). The rules are here; each queue
// transition is a named function with its SQL in store/agent-sessions.ts, and the states they
// move between are in model/tasks.ts.
//
// A claim gives the worker a lease: (session id, attempt, lease token), and only the token's
// hash is stored. Every later call about the session carries the token; a stale or foreign one
// is FailedPrecondition with reason LEASE_LOST, so a worker presumed dead can never overwrite the
// work of its successor. A lease lasts three heartbeat intervals and each heartbeat renews it.
//
// A waiting poll is woken, whichever comes first, by:
//  - the in-process notifier, when this replica queues work it may claim (wake one poll per
//    queued session: the owner's own workers first, then the pool's);
//  - NOTIFY from any replica, sent in the transaction that queued the work
//    (store/agent-sessions.ts insertSession), which wakes one poll per key on each replica. The
//    replica that queued the work hears its own NOTIFY too, so a second of its polls wakes, finds
//    the session taken and waits again: one wasted claim query per queued session, which is
//    cheaper than telling a replica's own notifications apart;
//  - the backstop: while any poll waits, the replica reads the queue itself every
//    FOREMAN_STREAM_POLL_SECONDS and wakes as many polls as each owner and agent has sessions
//    queued. One read for all its polls, not a claim per poll: measured here with 10,000 queued
//    sessions, the read takes about 2 ms on either database, while a claim that finds nothing
//    takes 0.7 ms on SQLite and 1.6 ms on PostgreSQL, which ten thousand idle workers polling
//    every 2 s would make 5,000 a second. A lost notification delays work by at most one
//    interval and never loses it.
import { createHmac } from "node:crypto";
import type { Kysely } from "kysely";
import { hashToken } from "../auth/opaque-token.js";
import type { Database } from "../db/schema.js";
import type { Logger } from "../logger.js";
import { RUN_END, SESSION_CLAIM, SESSION_REPORT, type ReportedState, type SessionState } from "../model/tasks.js";
import * as sessions from "../store/agent-sessions.js";
import { unitTaskOfRun } from "../store/task-branches.js";
import { isUniqueViolation } from "../store/errors.js";
import * as taskEvents from "../store/task-events.js";
import * as tasksStore from "../store/tasks.js";
import * as workersStore from "../store/workers.js";
import { AGENT_TYPES } from "./agents.js";
import { pendingCommands, type WorkerCommand } from "./commands.js";
import type { Core } from "./context.js";
import { leaseTokenHash } from "./leases.js";
import { invalidArgument, leaseLost, notFound } from "./errors.js";
import type { NotifierChannel } from "./notifier.js";
import { hasSecrets } from "./secret-vault.js";
import { readRunResult, type RunResult } from "./task-branches.js";
import { workspacePath } from "./workspace-access.js";
import { quote, truncate } from "./text.js";
import { Violations } from "./validation.js";
import { waitForWake } from "./wait.js";
import { DEFAULT_MAX_ATTEMPTS, returnUnstarted } from "./worker-health.js";
import { HEARTBEAT_INTERVAL_SECONDS, unregisteredMeanwhile } from "./workers.js";

/**
 * A lease lasts three heartbeat intervals: a worker that misses three heartbeats loses it (the
 * health monitor, core/worker-health.ts, then requeues the session as the next attempt).
 */
export const LEASE_HEARTBEATS = 3;
export const LEASE_TOKEN_PREFIX = "fls_";
const POLL_ID_MAX = 128;
/** Longest error a worker may report, in characters; a task keeps its first REASON_MAX. */
export const ERROR_MESSAGE_MAX = 4000;
const REASON_MAX = 2000;
/** How many (owner, agent) groups of queued work one backstop reads. */
const BACKSTOP_GROUPS = 1000;
const HEAD_COMMIT = /^[0-9a-f]{7,64}$/i;

export interface DispatchSettings {
  /** The longest a GetTask waits (FOREMAN_MAX_POLL_SECONDS). */
  maxPollSeconds: number;
  /** How often waiting polls look at the queue themselves (FOREMAN_STREAM_POLL_SECONDS). */
  backstopMs: number;
  /** How often workers heartbeat (FOREMAN_HEARTBEAT_SECONDS); HEARTBEAT_INTERVAL_SECONDS when unset. */
  heartbeatSeconds?: number;
  /** FOREMAN_MAX_ATTEMPTS; DEFAULT_MAX_ATTEMPTS when unset. */
  maxAttempts?: number;
}

/** The replica's long polls: their wake-ups (the claims channel) and the backstop that covers a lost one. */
export class Dispatcher {
  private waiting = 0;
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;

  constructor(
    private readonly db: Kysely<Database>,
    readonly claims: NotifierChannel,
    readonly settings: DispatchSettings,
    private readonly logger: Logger,
  ) {}

  get heartbeatSeconds(): number {
    return this.settings.heartbeatSeconds ?? HEARTBEAT_INTERVAL_SECONDS;
  }

  get maxAttempts(): number {
    return this.settings.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  }

  /** How long a lease lasts from its claim or its last renewal. */
  get leaseMs(): number {
    return LEASE_HEARTBEATS * this.heartbeatSeconds * 1000;
  }

  /** `count` sessions of this owner and agent were queued: wakes as many polls, the owner's own workers' first. */
  queued(ownerId: string, agentType: string, count = 1): void {
    const own = this.claims.wake(sessions.claimKey(ownerId, agentType), count);
    if (own < count) this.claims.wake(sessions.claimKey(null, agentType), count - own);
  }

  /** One of the worker's sessions ended: wakes its poll if it waits for a free slot. */
  freed(workerId: string): void {
    this.claims.wake(sessions.workerKey(workerId), 1);
  }

  /** A poll waits; the backstop runs while any does. Returns the function that ends the wait. */
  enterWait(): () => void {
    this.waiting++;
    if (this.timer === undefined) {
      this.timer = setInterval(() => void this.backstop(), this.settings.backstopMs);
      this.timer.unref();
    }
    let left = false;
    return () => {
      if (left) return;
      left = true;
      if (--this.waiting === 0) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }

  private async backstop(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      for (const group of await sessions.queuedWork(this.db, BACKSTOP_GROUPS)) this.queued(group.ownerId, group.agentType, group.count);
    } catch (error) {
      this.logger.warn({ err: error }, "the claim backstop could not read the queue; it tries again");
    } finally {
      this.sweeping = false;
    }
  }
}

/**
 * The lease token of the claim a poll makes: an HMAC of the poll id under the worker's
 * credential. Derived rather than random so that a retried poll (the same poll id, the answer
 * lost on the way) gets the same token back although only its hash is stored: the worker proves
 * it holds the credential by sending it, and nobody without the credential (the database
 * included, which keeps only hashes of both) can compute the token. It carries the
 * credential's 256 random bits on, and a poll id names one claim only (a unique index).
 */
export function leaseToken(credential: string, pollId: string): string {
  return LEASE_TOKEN_PREFIX + createHmac("sha256", credential).update(`foreman lease v1\0${pollId}`, "utf8").digest("base64url");
}

export interface AssignedRepository {
  repositoryId: string;
  name: string;
  /** Where the worker fetches and pushes the workspace: a path on the server's port (core/workspace-access.ts). */
  cloneUrl: string;
  baseBranch: string;
  branchName: string;
  baseCommit: string;
}

export interface Lease {
  sessionId: string;
  attempt: number;
  token: string;
  expiresAt: Date;
}

export interface Assignment {
  lease: Lease;
  taskId: string;
  agentTaskId: string;
  /** The run's whole prompt, a reviewer's feedback included (RequestChanges). */
  prompt: string;
  agentType: string;
  agentModel: string;
  repositories: AssignedRepository[];
  /** Whether the task has secrets its worker may fetch with GetSecrets (core/secret-vault.ts hasSecrets). */
  hasSecrets: boolean;
}

/**
 * The calling worker: its id, its owner (null: every user) and the credential it sent, with its
 * agents and most sessions, which only a new registration (and so a new credential) changes.
 */
export interface WorkerCaller {
  workerId: string;
  ownerId: string | null;
  credential: string;
  agentTypes: string[];
  maxConcurrentSessions: number;
}

function readPollId(v: Violations, raw: string): string {
  if (raw === "") v.add("poll_id", "is required: a fresh id for each poll (a UUID, say), the same when the poll is retried");
  else v.text("poll_id", raw, { max: POLL_ID_MAX, singleLine: true });
  return raw;
}

/**
 * GetTask: claims the oldest queued session the worker may serve and returns its assignment,
 * at once when there is one, else when one arrives within min(wait_seconds, max poll), else
 * none; with the worker's pending commands either way. A retry with the same poll id returns
 * the claim that poll made. A new command for the worker ends the wait at once, with no
 * claim, so that a worker that only polls gets a stop as soon as one on its stream would.
 * `signal` ends the wait (the client left, or the server shuts down) with no claim.
 */
export async function getTask(
  core: Core,
  log: Logger,
  caller: WorkerCaller,
  input: { pollId: string; waitSeconds: number },
  signal: AbortSignal,
): Promise<{ assignment: Assignment | undefined; commands: WorkerCommand[] }> {
  const { assignment, noCommands } = await claimWithin(core, log, caller, input, signal);
  return { assignment, commands: noCommands ? [] : await pendingCommands(core, caller.workerId) };
}

/** The claim, if any, and whether the worker is known to have no commands waiting (no read needed). */
async function claimWithin(
  core: Core,
  log: Logger,
  caller: WorkerCaller,
  input: { pollId: string; waitSeconds: number },
  signal: AbortSignal,
): Promise<{ assignment: Assignment | undefined; noCommands: boolean }> {
  const v = new Violations();
  const pollId = readPollId(v, input.pollId);
  const maxPoll = core.dispatch.settings.maxPollSeconds;
  if (input.waitSeconds < 0) v.add("wait_seconds", `must be 0 (answer at once) or more (at most ${maxPoll} are waited), got ${input.waitSeconds}`);
  v.throwIfAny();

  const token = leaseToken(caller.credential, pollId);
  const claimant: sessions.Claimant = {
    workerId: caller.workerId,
    ownerId: caller.ownerId,
    agentTypes: caller.agentTypes,
    maxSessions: caller.maxConcurrentSessions,
  };
  const deadline = performance.now() + Math.min(input.waitSeconds, maxPoll) * 1000;
  const agents = caller.agentTypes.length > 0 ? caller.agentTypes : [...AGENT_TYPES];
  const workKeys = agents.map((agent) => sessions.claimKey(caller.ownerId, agent));
  for (;;) {
    // Subscribed before the claim is tried, so work (or a command) queued meanwhile still wakes this poll.
    const wake = new PollWake(core.dispatch.claims, workKeys, sessions.workerKey(caller.workerId), core.commands, caller.workerId);
    let outcome: Awaited<ReturnType<typeof attemptClaim>>;
    let waited = false;
    try {
      outcome = await attemptClaim(core, log, claimant, pollId, token);
      if ("assignment" in outcome) return outcome;
      // A draining worker claims nothing: it answers at once, empty.
      if (outcome.kind === "draining") return { assignment: undefined, noCommands: !outcome.hasCommands };
      const left = deadline - performance.now();
      if (!signal.aborted && left > 0) {
        waited = true;
        // A worker that holds its most sessions waits for one of them to end, not for new work
        // (which it would take from a worker that can run it).
        if (outcome.kind === "full") wake.dropWork();
        if (!wake.woken) {
          const leave = core.dispatch.enterWait();
          try {
            await waitForWake(signal, left, (done) => wake.onWake(done));
          } finally {
            leave();
          }
        }
      }
    } finally {
      wake.close();
    }
    // The wait ran out unwoken: no claim again, since work queued meanwhile would have woken it
    // (its NOTIFY, or the backstop's read); nor a read of commands, since a command queued since
    // the claim's outlook would have woken it too. An idle poll is then that one read.
    if (!waited || signal.aborted || wake.command || !wake.woken) {
      return { assignment: undefined, noCommands: !outcome.hasCommands && !wake.command };
    }
    // Woken: try again (the outlook reads the worker's status again: one that started draining
    // or was unregistered meanwhile waits no more).
  }
}

/** One poll's subscriptions: to work it may claim, to a free slot of its worker, and to its worker's commands. */
class PollWake {
  woken = false;
  /** Woken by a new command for the worker: the poll answers at once, with it. */
  command = false;
  private done: (() => void) | undefined;
  private work: (() => void)[];
  private readonly slot: () => void;
  private readonly commands: () => void;

  constructor(channel: NotifierChannel, workKeys: string[], workerKey: string, commands: NotifierChannel, workerId: string) {
    // Woken through one key, it leaves the others at once, so a second wake goes to another poll.
    const listener = () => {
      this.woken = true;
      this.close();
      this.done?.();
    };
    this.work = workKeys.map((key) => channel.subscribe(key, listener));
    this.slot = channel.subscribe(workerKey, listener);
    this.commands = commands.subscribe(workerId, () => {
      this.command = true;
      listener();
    });
  }

  onWake(done: (() => void) | undefined): void {
    this.done = done;
  }

  dropWork(): void {
    for (const leave of this.work) leave();
    this.work = [];
  }

  close(): void {
    this.dropWork();
    this.slot();
    this.commands();
  }
}

/** Why a try claimed nothing, and whether the worker has commands waiting. */
type NoClaim = { kind: "none" | "full" | "draining"; hasCommands: boolean };

/**
 * One try: the poll's earlier claim, a new claim, or why there is none. The outlook comes first
 * and is one read; the claim's transaction runs only when there may be something to claim.
 */
async function attemptClaim(
  core: Core,
  log: Logger,
  w: sessions.Claimant,
  pollId: string,
  token: string,
  retried = false,
): Promise<{ assignment: Assignment; noCommands: boolean } | NoClaim> {
  const outlook = await sessions.pollOutlook(core.db, w, pollId);
  if (outlook === undefined || outlook.status === "unregistered") throw unregisteredMeanwhile(core, w.workerId);
  const { hasCommands } = outlook;
  if (outlook.status === "draining") return { kind: "draining", hasCommands };
  if (!outlook.earlierClaim) {
    if (outlook.leased >= w.maxSessions) return { kind: "full", hasCommands };
    if (!outlook.workQueued) return { kind: "none", hasCommands };
  }
  const tokenHash = hashToken(token);
  const now = core.now();
  const expiresAt = new Date(now.getTime() + core.dispatch.leaseMs);
  type Claimed = { session: sessions.LeasedSession; work: sessions.SessionWork; place: tasksStore.TaskPlace | undefined; hasSecretHolder: boolean; hasCommands: boolean };
  let claimed: Claimed | undefined;
  try {
    claimed = await core.adapter.transaction(core.db, async (trx): Promise<Claimed | undefined> => {
      // One claim of a worker at a time, so that its count of sessions is exact (see claimSession).
      await core.adapter.lockForOrder(trx, `claims:${w.workerId}`);
      // A poll id the outlook found unused needs no look: should a copy of this poll claim with
      // it meanwhile, this claim breaks the unique index and is tried again below.
      const earlier = outlook.earlierClaim ? await sessions.findByPollId(trx, pollId) : undefined;
      if (earlier !== undefined) {
        if (earlier.workerId !== w.workerId) throw pollIdTaken();
        const session = await sessions.reclaim(trx, w.workerId, pollId, tokenHash, now);
        if (session === undefined) {
          throw invalidArgument([{ field: "poll_id", description: `named an earlier poll, whose claim of session ${earlier.id} has ended; use a fresh id for each poll` }]);
        }
        const work = await sessions.workOf(trx, session);
        return { session, work, place: undefined, hasSecretHolder: true, hasCommands: true };
      }
      const claim = await sessions.claimSession(trx, core.adapter, w, { tokenHash, expiresAt, pollId }, now);
      if (claim === undefined) return undefined;
      const place = await tasksStore.setRunState(trx, claim.task, SESSION_CLAIM.executionState, now);
      if (place === undefined) throw new Error(`session ${claim.session.id} has no task`);
      await taskEvents.insertTaskEvent(trx, core.adapter, { ownerId: place.ownerId, workspaceId: place.workspaceId, taskId: place.id, type: "updated" }, now);
      const work = { agentTask: claim.run, task: claim.task, repositories: await sessions.remotesOf(trx, claim.run.id) };
      return { session: claim.session, work, place, hasSecretHolder: claim.hasSecretHolder, hasCommands: claim.hasCommands };
    });
  } catch (error) {
    // The poll id was taken at the same moment: by a copy of this poll (the try again finds its
    // claim and answers with it) or by another worker's claim (the try again says so).
    if (isUniqueViolation(error)) {
      if (!retried) return attemptClaim(core, log, w, pollId, token, true);
      throw pollIdTaken();
    }
    throw error;
  }
  if (claimed === undefined) return { kind: (await sessions.leasedCount(core.db, w.workerId)) >= w.maxSessions ? "full" : "none", hasCommands };
  const { session, work, place } = claimed;
  if (place !== undefined) {
    core.taskChanges.notify(place.workspaceId);
    log.info({ session_id: session.id, attempt: session.attempt, task_id: work.task.id, worker_id: w.workerId }, "session claimed");
  }
  const assignment: Assignment = {
    lease: { sessionId: session.id, attempt: session.attempt, token, expiresAt: session.leaseExpiresAt! },
    taskId: work.task.id,
    agentTaskId: work.agentTask.id,
    prompt: work.agentTask.prompt,
    agentType: session.agentType,
    agentModel: session.agentModel,
    repositories: work.repositories.map((r) => ({ ...r, cloneUrl: workspacePath(session.id, r.repositoryId), baseCommit: r.baseCommit ?? "" })),
    hasSecrets: claimed.hasSecretHolder && (await hasSecrets(core, work.task.id)),
  };
  return { assignment, noCommands: !claimed.hasCommands };
}

function pollIdTaken() {
  return invalidArgument([{ field: "poll_id", description: "is the id of another worker's poll; use a fresh id (a UUID, say) for each poll" }]);
}

export interface ReportInput {
  sessionId: string;
  leaseToken: string;
  /** core's name of the reported state; undefined when not given. */
  state: string | undefined;
  exitCode?: number | undefined;
  errorMessage: string;
  headCommit: string;
}

const REPORTABLE = Object.keys(SESSION_REPORT) as ReportedState[];

/**
 * ReportStatus: moves the session the worker holds, and its task, as SESSION_REPORT and RUN_END
 * say, fenced by the lease token. The same report again is accepted and changes nothing.
 */
export async function reportStatus(core: Core, log: Logger, caller: WorkerCaller, input: ReportInput): Promise<{ state: SessionState; stopRequested: boolean }> {
  const v = new Violations();
  const sessionId = v.id("session_id", input.sessionId);
  if (input.leaseToken === "") v.add("lease_token", "is required: the token of the session's lease, from GetTask");
  const state = input.state as ReportedState;
  if (input.state === undefined) v.add("state", `is required: ${REPORTABLE.map((s) => s.toUpperCase()).join(", ")}`);
  else if (!REPORTABLE.includes(state)) v.add("state", `must be RUNNING, SUCCEEDED, FAILED or CANCELLED, got ${input.state.toUpperCase()}`);
  const errorMessage = input.errorMessage.trim();
  v.text("error_message", errorMessage, { max: ERROR_MESSAGE_MAX });
  const headCommit = input.headCommit.trim();
  if (headCommit !== "" && !HEAD_COMMIT.test(headCommit)) v.add("head_commit", `must be a commit id (7 to 64 hexadecimal digits), got ${quote(headCommit)}`);
  v.throwIfAny();

  const tokenHash = leaseTokenHash(input.leaseToken);
  const transition = SESSION_REPORT[state];
  const report: sessions.Report = {
    sessionId,
    workerId: caller.workerId,
    ownerId: caller.ownerId,
    tokenHash,
    state,
    exitCode: transition.ends ? (input.exitCode ?? null) : null,
    errorMessage: transition.ends && errorMessage !== "" ? errorMessage : null,
    headCommit: transition.ends && headCommit !== "" ? headCommit.toLowerCase() : null,
  };
  // A run that succeeded: where it left its branches, read before the report applies.
  const result = state === "succeeded" && tokenHash !== "" ? await succeededRun(core, caller, sessionId, tokenHash, report.headCommit) : undefined;
  if (result !== undefined) {
    report.headCommit = [...result.heads.values()].find((h) => report.headCommit !== null && h.startsWith(report.headCommit)) ?? result.endCommit ?? null;
  }
  const now = core.now();
  // A token of no lease's form cannot apply; why is told below, as for one that did not.
  const done =
    tokenHash === ""
      ? undefined
      : await core.adapter.transaction(core.db, async (trx) => {
          // The session first, then its task: the order a claim and a task's status change lock them in.
          const reported = await sessions.reportSession(trx, core.adapter, report, now);
          if (reported === undefined) return undefined;
          let place: tasksStore.TaskPlace | undefined;
          if (!transition.ends) {
            place = await tasksStore.setRunState(trx, reported.task, transition.executionState, now);
            if (place === undefined) throw new Error(`session ${sessionId} has no task`);
          } else {
            const to = RUN_END[reported.task.kind][state as "succeeded" | "failed" | "cancelled"];
            let reason = state === "failed" ? truncate(errorMessage || failedWithout(report.exitCode), REASON_MAX) : null;
            if (result !== undefined && reported.task.kind === "unit") {
              await sessions.setEndCommits(trx, result.agentTaskId, result.heads);
              // Still in review: the reviewer reads the log, then asks for changes or rejects.
              if (!result.changed) reason = NO_CHANGES;
            }
            // A leased session's task is in its work status: whatever moves it from there cancels
            // the session first, which the fenced report above would have found.
            place = await tasksStore.endRun(trx, reported.task, { status: to, executionState: transition.executionState, reason, endCommit: result?.endCommit }, now);
            if (place === undefined) throw new Error(`task ${reported.task.id} moved while session ${sessionId} held a lease`);
            await core.adapter.notifyOnCommit(trx, sessions.CLAIMS_CHANNEL, sessions.workerKey(caller.workerId));
          }
          await taskEvents.insertTaskEvent(trx, core.adapter, { ownerId: place.ownerId, workspaceId: place.workspaceId, taskId: place.id, type: "updated" }, now);
          return { updated: reported.session, place };
        });

  if (done === undefined) {
    const current = await sessions.getSession(core.db, sessionId);
    // Deleted with its task meanwhile, or another user's session, which does not exist for a
    // worker that serves one user.
    if (current === undefined || (caller.ownerId !== null && current.ownerId !== caller.ownerId)) throw notFound("session", sessionId);
    if (tokenHash === "") throw leaseLost(sessionId, "the lease token is not this session's lease");
    const holder = current.workerId === caller.workerId && current.leaseTokenHash === tokenHash;
    // A repeat: the report that ended the session, or RUNNING while it runs.
    const held = transition.ends || (current.leaseExpiresAt !== null && current.leaseExpiresAt > now);
    if (holder && current.state === transition.to && held) return { state: current.state, stopRequested: current.stopRequested };
    // A lease revoked (the run cancelled, or requeued) leaves no hash: its worker is told why.
    const mine = current.workerId === caller.workerId && (current.leaseTokenHash === tokenHash || current.leaseTokenHash === null);
    throw leaseLost(sessionId, lostBecause(current, mine, now));
  }
  core.taskChanges.notify(done.place.workspaceId);
  if (transition.ends) {
    core.dispatch.freed(caller.workerId);
    // Readers of its log end their streams.
    core.logs.notify(sessionId);
  }
  log.info({ session_id: sessionId, task_id: done.place.id, state, exit_code: report.exitCode, worker_id: caller.workerId }, "session reported");
  return { state: done.updated.state, stopRequested: done.updated.stopRequested };
}

/** The status reason of a task whose run succeeded without a commit. */
export const NO_CHANGES = "the agent's run succeeded and made no commits: the diff is empty";

/**
 * What a success report's run left on its branches (core/task-branches.ts readRunResult), when
 * the caller holds the session's lease; undefined otherwise (the fenced report says why) and
 * when the server keeps no clones.
 */
async function succeededRun(core: Core, caller: WorkerCaller, sessionId: string, tokenHash: string, headCommit: string | null): Promise<RunResult | undefined> {
  if (!core.remotes.contact) return undefined;
  const session = await sessions.getSession(core.db, sessionId);
  if (session === undefined || session.workerId !== caller.workerId || session.leaseTokenHash !== tokenHash) return undefined;
  if (caller.ownerId !== null && session.ownerId !== caller.ownerId) return undefined;
  const unitTaskId = await unitTaskOfRun(core.db, session.agentTaskId);
  if (unitTaskId === undefined) return undefined;
  return readRunResult(core, { unitTaskId, agentTaskId: session.agentTaskId }, await sessions.remotesOf(core.db, session.agentTaskId), headCommit);
}

function failedWithout(exitCode: number | null): string {
  return exitCode === null ? "the run failed" : `the run failed with exit code ${exitCode}`;
}

/** Why a lease is not held, for the worker; never the token. */
function lostBecause(s: sessions.LeasedSession, holder: boolean, now: Date): string {
  if (!holder) return "the lease token is not this session's lease";
  if (!["assigned", "running"].includes(s.state)) return `the session ended as ${s.state}`;
  if (s.leaseExpiresAt === null || s.leaseExpiresAt <= now) return "its lease expired (heartbeats renew it)";
  return `a ${s.state} session cannot be reported so`;
}

export interface HeartbeatLease {
  sessionId: string;
  leaseToken: string;
}

/**
 * Heartbeat: the worker was seen now, and each listed lease it still holds lasts a lease's length
 * from now; the others are lost (ended, requeued, expired, or never its own).
 */
export async function heartbeat(
  core: Core,
  log: Logger,
  caller: WorkerCaller,
  status: "idle" | "busy" | "draining" | undefined,
  leases: HeartbeatLease[],
): Promise<{ renewed: Lease[]; lost: string[]; commands: WorkerCommand[] }> {
  const v = new Violations();
  const listed = leases.map((l, i) => {
    const sessionId = v.id(`leases[${i}].session_id`, l.sessionId);
    if (l.leaseToken === "") v.add(`leases[${i}].lease_token`, "is required: the token GetTask gave with the lease");
    return { sessionId, token: l.leaseToken, tokenHash: leaseTokenHash(l.leaseToken) };
  });
  v.throwIfAny();
  const now = core.now();
  const expiresAt = new Date(now.getTime() + core.dispatch.leaseMs);
  let registered = false;
  let hasCommands = true;
  if (status === "draining") {
    // Draining: no new claims, and what it has not started goes back to the queue at once (its
    // leases are then lost below); what runs it may finish and report. Returning work queues
    // stop commands, so they are read whatever the touch found.
    await returnUnstarted(core, log, caller.workerId, "its worker is draining", async (trx) => {
      ({ registered } = await workersStore.touchDrainingWorker(trx, caller.workerId, now));
    });
  } else {
    ({ registered, hasCommands } = await core.heartbeats.touch(caller.workerId, now));
  }
  if (!registered) throw unregisteredMeanwhile(core, caller.workerId);
  const held = await sessions.renewLeases(core.db, caller.workerId, listed.filter((l) => l.tokenHash !== ""), expiresAt, now);
  // Each session once: renewed if any entry for it held its lease, else lost.
  const attempts = new Map(held.map((h) => [`${h.id} ${h.tokenHash}`, h.attempt]));
  const renewed = new Map<string, Lease>();
  for (const l of listed) {
    const attempt = attempts.get(`${l.sessionId} ${l.tokenHash}`);
    if (attempt !== undefined && !renewed.has(l.sessionId)) renewed.set(l.sessionId, { sessionId: l.sessionId, attempt, token: l.token, expiresAt });
  }
  const lost = new Set(listed.map((l) => l.sessionId).filter((id) => !renewed.has(id)));
  // A session whose lease was revoked while the worker held it has a stop command saying why.
  return { renewed: [...renewed.values()], lost: [...lost], commands: hasCommands || lost.size > 0 ? await pendingCommands(core, caller.workerId) : [] };
}
