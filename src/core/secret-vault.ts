// Task secrets (SecretsService, WorkerService.GetSecrets): a client sends a task's secrets, the
// worker holding the current lease of a session of that task fetches them. Values are held in
// this replica's memory only (the vault below), never in the database, a log line, an error or a
// metric. The database says only which replica holds a task's secrets and until when
// (store/secret-holders.ts), so that a worker whose GetSecrets lands on another replica still gets
// them: that replica asks the holder over the replica route (server/replica-secrets.ts), which
// checks the lease again itself and answers with the values sealed under FOREMAN_SECRET_KEY.
//
// Nobody gets them any more (not even a later attempt's worker: the client sends them again)
// once the task has ended, once one of its sessions ended lost, cancelled or failed after they
// were sent, after ClearSecrets, and after their TTL. Each read checks these against the
// database, so a lease lost or a task ended through another replica counts at once; a sweep now
// and then (and a timer at the TTL) frees the memory.
import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { Logger } from "../logger.js";
import type { TaskStatus } from "../model/tasks.js";
import * as sessions from "../store/agent-sessions.js";
import * as holders from "../store/secret-holders.js";
import type { Core } from "./context.js";
import { heldSession, leaseProblem } from "./leases.js";
import { failedPrecondition, leaseLost, notFound, replicaUnavailable } from "./errors.js";
import { quote } from "./text.js";
import { Violations } from "./validation.js";

/** A name: environment-variable style, A-Z, 0-9 and _, not starting with a digit. */
const NAME = /^[A-Z_][A-Z0-9_]*$/;
export const NAME_MAX = 128;
/** Largest value, in bytes of UTF-8. */
export const VALUE_MAX_BYTES = 64 * 1024;
/** Largest set, values and names together, in bytes of UTF-8. */
export const TOTAL_MAX_BYTES = 256 * 1024;
export const DEFAULT_TTL_SECONDS = 3600;
export const MAX_TTL_SECONDS = 86400;
/** How often each replica frees the memory of secrets no longer handed out. */
export const SWEEP_MS = 30_000;
/** A task in one of these has ended: it takes no secrets, and those it had are gone. */
export const ENDED_STATUSES: TaskStatus[] = ["done", "rejected", "failed", "cancelled"];

interface Held {
  generation: string;
  values: ReadonlyMap<string, string>;
  timer: NodeJS.Timeout;
}

/** What a replica asks the holder: the lease it checked, which the holder checks again. */
export interface HolderRequest {
  taskId: string;
  sessionId: string;
  workerId: string;
  /** The hash of the worker's lease token, as the database keeps it; never the token. */
  leaseTokenHash: string;
  generation: string;
  /** The replica the asker believes holds them. */
  holderReplicaId: string;
}

export type HolderAnswer =
  | { kind: "secrets"; values: Record<string, string> }
  /** The holder is not that replica any more (restarted), or no longer has them in memory. */
  | { kind: "gone" }
  /** No longer handed out (cleared, expired, the task ended, a lease lost). */
  | { kind: "none" }
  | { kind: "lease_lost"; why: string }
  /** The holder could not be reached or answered nonsense; worth trying again. */
  | { kind: "unreachable"; why: string };

/** How a replica asks another (server/replica-secrets.ts). */
export interface SecretPeers {
  ask(url: string, request: HolderRequest): Promise<HolderAnswer>;
}

/**
 * This replica's secrets, in memory: one set per task, with a timer that drops it at its TTL.
 * The replica id is new at every start, so a restarted replica (whose memory is gone) is told
 * apart from the one that received the secrets.
 */
export class SecretVault {
  readonly replicaId = randomUUID();
  /** Where other replicas reach this one (FOREMAN_REPLICA_URL or derived); set once listening. */
  url: string | null = null;
  peers: SecretPeers | undefined;
  private readonly held = new Map<string, Held>();
  private sweeper: NodeJS.Timeout | undefined;

  hold(taskId: string, generation: string, values: ReadonlyMap<string, string>, ttlMs: number): void {
    this.drop(taskId);
    const timer = setTimeout(() => this.drop(taskId, generation), ttlMs);
    // The TTL never keeps the process alive.
    timer.unref();
    this.held.set(taskId, { generation, values, timer });
  }

  /** The values of that SendSecrets, if still held. */
  take(taskId: string, generation: string): Record<string, string> | undefined {
    const entry = this.held.get(taskId);
    return entry?.generation === generation ? Object.fromEntries(entry.values) : undefined;
  }

  /** Forgets the task's set (only that generation's when given). */
  drop(taskId: string, generation?: string): void {
    const entry = this.held.get(taskId);
    if (entry === undefined || (generation !== undefined && entry.generation !== generation)) return;
    clearTimeout(entry.timer);
    this.held.delete(taskId);
  }

  /** The tasks whose secrets are held here, with their generation. */
  entries(): { taskId: string; generation: string }[] {
    return [...this.held].map(([taskId, e]) => ({ taskId, generation: e.generation }));
  }

  get size(): number {
    return this.held.size;
  }

  /** Runs `sweep` every SWEEP_MS (unref'd) until close(). */
  startSweeping(sweep: () => Promise<void>, everyMs = SWEEP_MS): void {
    if (this.sweeper !== undefined) return;
    this.sweeper = setInterval(() => void sweep(), everyMs);
    this.sweeper.unref();
  }

  /** Shutdown: the timers stop and the memory is dropped. */
  close(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const taskId of [...this.held.keys()]) this.drop(taskId);
  }
}

/**
 * The task's holder row if its secrets may still be handed out; otherwise the row (if any) is
 * removed, this replica's copy dropped, and undefined returned.
 */
async function currentHolder(core: Core, taskId: string): Promise<holders.SecretHolder | undefined> {
  const holder = await holders.getHolder(core.db, taskId);
  if (holder === undefined) return undefined;
  const task = await holders.taskStatusOf(core.db, taskId, holder.ownerId);
  const valid =
    task !== undefined &&
    !ENDED_STATUSES.includes(task.status) &&
    holder.expiresAt > core.now() &&
    (await holders.endedRuns(core.db, taskId)) === holder.endedRuns;
  if (valid) return holder;
  await holders.deleteHolder(core.db, taskId, holder.generation);
  core.taskSecrets.drop(taskId, holder.generation);
  return undefined;
}

/** Whether the task has secrets a worker may fetch (Assignment.has_secrets). */
export async function hasSecrets(core: Core, taskId: string): Promise<boolean> {
  return (await currentHolder(core, taskId)) !== undefined;
}

function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/** The request's names and values checked; violations name the name and the size, never a value. */
function readSecrets(v: Violations, raw: Record<string, string>, mapField = "secrets"): Map<string, string> {
  const values = new Map<string, string>();
  let total = 0;
  for (const [name, value] of Object.entries(raw)) {
    const field = `${mapField}[${quote(name, 40)}]`;
    if (name.length > NAME_MAX) v.add(field, `the name must be at most ${NAME_MAX} characters, got ${name.length}`);
    else if (!NAME.test(name)) v.add(field, "the name must be A-Z, 0-9 and _ only, not starting with a digit (an environment variable's name)");
    const bytes = utf8Bytes(value);
    if (bytes > VALUE_MAX_BYTES) v.add(field, `the value must be at most ${VALUE_MAX_BYTES} bytes (UTF-8), got ${bytes}`);
    total += bytes + utf8Bytes(name);
    values.set(name, value);
  }
  if (total > TOTAL_MAX_BYTES) v.add(mapField, `names and values together must be at most ${TOTAL_MAX_BYTES} bytes (UTF-8), got ${total}`);
  return values;
}

function readTtl(v: Violations, ttlSeconds: number, field = "ttl_seconds"): number {
  if (ttlSeconds < 0 || ttlSeconds > MAX_TTL_SECONDS) {
    v.add(field, `must be 0 (the default, ${DEFAULT_TTL_SECONDS}) or 1 to ${MAX_TTL_SECONDS} seconds, got ${ttlSeconds}`);
  }
  return ttlSeconds === 0 ? DEFAULT_TTL_SECONDS : ttlSeconds;
}

/**
 * SendSecrets: the owner's task's secrets, held here until the TTL; a second call replaces the
 * set. Returns the names held, sorted, and when they expire.
 */
export async function sendSecrets(
  core: Core,
  log: Logger,
  ownerId: string,
  input: { taskId: string; secrets: Record<string, string>; ttlSeconds: number },
): Promise<{ names: string[]; expiresAt: Date }> {
  const v = new Violations();
  const taskId = v.id("task_id", input.taskId);
  const values = readSecrets(v, input.secrets);
  const ttlSeconds = readTtl(v, input.ttlSeconds);
  v.throwIfAny();
  const task = await holders.taskStatusOf(core.db, taskId, ownerId);
  if (task === undefined) throw notFound("task", taskId);
  if (ENDED_STATUSES.includes(task.status)) {
    throw failedPrecondition(`task ${taskId} has ended (${task.status}): it takes no secrets; retry it first if it failed or was cancelled`, {
      task_id: taskId,
      status: task.status,
    });
  }
  const holder = holdHere(core, { id: taskId, ownerId }, { values, ttlSeconds }, core.now());
  try {
    await holders.putHolder(core.db, holder);
  } catch (error) {
    core.taskSecrets.drop(taskId, holder.generation);
    throw error;
  }
  log.info({ task_id: taskId, secret_count: values.size, ttl_seconds: ttlSeconds }, "task secrets held");
  return { names: [...values.keys()].sort(), expiresAt: holder.expiresAt };
}

/**
 * Holds a task's secrets in this replica's memory under a new generation; returns the holder row
 * to record. In memory before the row that points here, so that a reader who finds the row finds them.
 */
function holdHere(core: Core, task: { id: string; ownerId: string }, secrets: NewTaskSecrets, now: Date): Omit<holders.SecretHolder, "endedRuns"> {
  const vault = core.taskSecrets;
  const generation = randomUUID();
  vault.hold(task.id, generation, secrets.values, secrets.ttlSeconds * 1000);
  const expiresAt = new Date(now.getTime() + secrets.ttlSeconds * 1000);
  return { taskId: task.id, ownerId: task.ownerId, replicaId: vault.replicaId, replicaUrl: vault.url, generation, sentAt: now, expiresAt };
}

/** Secrets given with a new task (CreateUnitTask's `secrets`), checked as SendSecrets checks its own. */
export interface NewTaskSecrets {
  values: ReadonlyMap<string, string>;
  ttlSeconds: number;
}

export function readNewTaskSecrets(v: Violations, secrets: Record<string, string>, ttlSeconds: number): NewTaskSecrets {
  return { values: readSecrets(v, secrets), ttlSeconds: readTtl(v, ttlSeconds, "secrets_ttl_seconds") };
}

/**
 * Holds a new task's secrets here, and records this replica as their holder in the transaction
 * that makes the task, so that the claim of its first run (which cannot see the task before that
 * transaction commits) finds them. Nothing when none were given. When the transaction fails,
 * the caller drops them (vault.drop of the task id, which nothing else can hold).
 */
export async function holdNewTaskSecrets(core: Core, trx: Kysely<Database>, task: { id: string; ownerId: string }, secrets: NewTaskSecrets, now: Date): Promise<void> {
  if (secrets.values.size === 0) return;
  // Logged with the task's creation, once the transaction has committed (core/tasks.ts).
  await holders.insertNewTaskHolder(trx, holdHere(core, task, secrets, now));
}

/** ClearSecrets: nobody gets the owner's task's secrets any more; clearing none is no error. */
export async function clearSecrets(core: Core, log: Logger, ownerId: string, input: { taskId: string }): Promise<void> {
  const v = new Violations();
  const taskId = v.id("task_id", input.taskId);
  v.throwIfAny();
  if ((await holders.taskStatusOf(core.db, taskId, ownerId)) === undefined) throw notFound("task", taskId);
  // The row first: from then on no replica hands them out; the holder's sweep frees its memory.
  const removed = await holders.deleteHolder(core.db, taskId);
  core.taskSecrets.drop(taskId);
  if (removed) log.info({ task_id: taskId }, "task secrets cleared");
}

/** The calling worker, as dispatch knows it. */
export interface SecretsCaller {
  workerId: string;
  ownerId: string | null;
}

/**
 * GetSecrets: the secrets of the session's task, for the worker holding the session's current
 * lease only (LEASE_LOST otherwise). An empty map when the task has none to hand out (never
 * sent, cleared, expired, or no longer handed out); FailedPrecondition when the replica that
 * held them restarted or stopped, so they are gone and the client must send them again.
 */
export async function getSecrets(core: Core, log: Logger, caller: SecretsCaller, input: { sessionId: string; leaseToken: string }): Promise<Record<string, string>> {
  const v = new Violations();
  const sessionId = v.id("session_id", input.sessionId);
  if (input.leaseToken === "") v.add("lease_token", "is required: the token of the session's lease, from GetTask");
  v.throwIfAny();
  const { session, tokenHash } = await heldSession(core, caller, sessionId, input.leaseToken);
  const { task } = await sessions.workOf(core.db, session);
  const holder = await currentHolder(core, task.id);
  if (holder === undefined) return {};
  const vault = core.taskSecrets;
  if (holder.replicaId === vault.replicaId) {
    const values = vault.take(task.id, holder.generation);
    // Dropped at the TTL a moment before the row's expiry was read: none any more.
    return values ?? {};
  }
  const request: HolderRequest = { taskId: task.id, sessionId, workerId: caller.workerId, leaseTokenHash: tokenHash, generation: holder.generation, holderReplicaId: holder.replicaId };
  // No address, or this replica's own (a restart of it, whose memory went with the old process): nobody to ask.
  const nobody = holder.replicaUrl === null || holder.replicaUrl === vault.url || vault.peers === undefined;
  const answer: HolderAnswer = nobody ? { kind: "gone" } : await vault.peers!.ask(holder.replicaUrl!, request);
  switch (answer.kind) {
    case "secrets":
      log.info({ task_id: task.id, session_id: sessionId, holder_replica_id: holder.replicaId }, "task secrets fetched from the replica holding them");
      return answer.values;
    case "none":
      return {};
    case "lease_lost":
      throw leaseLost(sessionId, answer.why);
    case "gone":
      await holders.deleteHolder(core.db, task.id, holder.generation);
      log.warn({ task_id: task.id, holder_replica_id: holder.replicaId }, "the replica holding a task's secrets restarted or stopped: they are gone");
      throw failedPrecondition(
        `the secrets of task ${task.id} were held in memory by the server replica that received them, which has restarted or stopped since, so they are gone; ` +
          "the client must send them again (SecretsService.SendSecrets)",
        { task_id: task.id },
      );
    case "unreachable":
      log.warn({ task_id: task.id, holder_replica_id: holder.replicaId, problem: answer.why }, "the replica holding a task's secrets did not answer");
      throw holderUnreachable(task.id, answer.why);
  }
}

/** The holder replica did not answer: it may still hold them, so the worker should try again shortly. */
function holderUnreachable(taskId: string, why: string) {
  return replicaUnavailable(`the server replica holding the secrets of task ${taskId} did not answer (${why}); try again in a few seconds`, { task_id: taskId });
}

/**
 * The holder's side of the replica route: checks the lease again against the database (the
 * asker is trusted only to have asked), and answers with the values if they are still handed out.
 */
export async function answerHolderRequest(core: Core, request: HolderRequest): Promise<HolderAnswer> {
  const vault = core.taskSecrets;
  if (request.holderReplicaId !== vault.replicaId) return { kind: "gone" };
  const session = await sessions.getSession(core.db, request.sessionId);
  if (session === undefined) return { kind: "none" };
  const problem = leaseProblem(session, request.workerId, request.leaseTokenHash, core.now());
  if (problem !== undefined) return { kind: "lease_lost", why: problem };
  const { task } = await sessions.workOf(core.db, session);
  if (task.id !== request.taskId) return { kind: "lease_lost", why: "the session is not one of this task's" };
  const holder = await currentHolder(core, task.id);
  if (holder === undefined || holder.generation !== request.generation) return { kind: "none" };
  const values = vault.take(task.id, holder.generation);
  return values === undefined ? { kind: "gone" } : { kind: "secrets", values };
}

/**
 * The sweep: drops this replica's sets that are no longer handed out (checked against the
 * database: replaced, cleared, expired, the task ended or a lease lost), and removes expired rows.
 */
export async function sweepSecrets(core: Core, log: Logger): Promise<void> {
  const vault = core.taskSecrets;
  try {
    for (const { taskId, generation } of vault.entries()) {
      const holder = await currentHolder(core, taskId);
      if (holder === undefined || holder.generation !== generation || holder.replicaId !== vault.replicaId) vault.drop(taskId, generation);
    }
    await holders.deleteExpiredHolders(core.db, core.now());
  } catch (error) {
    log.warn({ err: error }, "the task secrets sweep could not read the database; it tries again");
  }
}

/** How long a replica keeps values it fetched from the holder to mask a session's log. */
const MASK_CACHE_MS = 10_000;
const maskCaches = new WeakMap<SecretVault, Map<string, { generation: string; values: string[]; until: number }>>();

/**
 * The values of the task's secrets, to mask the log of a session whose lease the caller holds
 * (AppendLogs, core/session-logs.ts): this replica's own copy, else the holder's as GetSecrets
 * would fetch it, kept here for MASK_CACHE_MS (in memory only) so a busy log does not ask for
 * every batch. Masking more than needed is harmless, so this checks less than GetSecrets (a set
 * held here masks even if no longer handed out). None when the task has none. The holder not
 * answering is an error worth a retry: an unmasked line must not be stored.
 */
export async function secretValuesToMask(core: Core, request: Omit<HolderRequest, "generation" | "holderReplicaId">): Promise<string[]> {
  const vault = core.taskSecrets;
  const here = vault.entries().find((e) => e.taskId === request.taskId);
  if (here !== undefined) return Object.values(vault.take(request.taskId, here.generation) ?? {});
  const holder = await holders.getHolder(core.db, request.taskId);
  if (holder === undefined || holder.replicaId === vault.replicaId || holder.replicaUrl === null || holder.replicaUrl === vault.url || vault.peers === undefined) return [];
  let cache = maskCaches.get(vault);
  if (cache === undefined) maskCaches.set(vault, (cache = new Map()));
  const now = core.now().getTime();
  const hit = cache.get(request.taskId);
  if (hit !== undefined && hit.generation === holder.generation && hit.until > now) return hit.values;
  const answer = await vault.peers.ask(holder.replicaUrl, { ...request, generation: holder.generation, holderReplicaId: holder.replicaId });
  if (answer.kind === "lease_lost") throw leaseLost(request.sessionId, answer.why);
  if (answer.kind === "unreachable") throw holderUnreachable(request.taskId, answer.why);
  const values = answer.kind === "secrets" ? Object.values(answer.values) : [];
  for (const [taskId, entry] of cache) if (entry.until <= now) cache.delete(taskId);
  cache.set(request.taskId, { generation: holder.generation, values, until: now + MASK_CACHE_MS });
  return values;
}
