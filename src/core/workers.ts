// Worker identity: registration tokens (made by a user, or configured on the server), the
// exchange of one for a worker credential at RegisterWorker, and checking that credential on
// each worker call. A worker registered with a user's token serves only that user; one
// registered with the configured token serves every user.
import { WORKER_CREDENTIAL_PREFIX, WORKER_REGISTRATION_TOKEN_PREFIX, hashToken, newOpaqueToken, sameSecret } from "../auth/opaque-token.js";
import { newId } from "../store/codec.js";
import * as store from "../store/workers.js";
import * as sessions from "../store/agent-sessions.js";
import type { Logger } from "../logger.js";
import { isAgentType } from "./agents.js";
import type { Core } from "./context.js";
import { notFound, unauthenticated } from "./errors.js";
import { readPage, writePage } from "./pagination.js";
import { quote } from "./text.js";
import { loseSessions, returnUnstarted } from "./worker-health.js";
import type { CredentialOwner } from "./worker-credentials.js";
import { Violations, readId } from "./validation.js";

export type { RegistrationToken, Worker } from "../store/workers.js";

/** How often a worker heartbeats; three missed intervals make it unhealthy (dispatch issue). */
export const HEARTBEAT_INTERVAL_SECONDS = 10;

const NAME_MAX = 100;
const MAX_TTL_SECONDS = 365 * 86_400;
const MAX_LABELS = 64;
const MAX_CONCURRENT_SESSIONS = 64;
/** Longer than any token this server issues or accepts in configuration: refused unhashed. */
const MAX_TOKEN_LENGTH = 1024;

export async function createRegistrationToken(
  core: Core,
  ownerId: string,
  input: { name: string; ttlSeconds: number },
): Promise<{ token: store.RegistrationToken; secret: string }> {
  const name = input.name.trim();
  const v = new Violations();
  v.text("name", name, { required: true, max: NAME_MAX, singleLine: true });
  if (input.ttlSeconds < 0 || input.ttlSeconds > MAX_TTL_SECONDS) {
    v.add("ttl_seconds", `must be between 0 (no expiry) and ${MAX_TTL_SECONDS}`);
  }
  v.throwIfAny();
  const now = core.now();
  const secret = newOpaqueToken(WORKER_REGISTRATION_TOKEN_PREFIX);
  const token = await store.insertRegistrationToken(core.db, {
    id: newId(now.getTime()),
    ownerId,
    name,
    tokenHash: hashToken(secret),
    createdAt: now,
    expiresAt: input.ttlSeconds === 0 ? null : new Date(now.getTime() + input.ttlSeconds * 1000),
  });
  return { token, secret };
}

export async function listRegistrationTokens(
  core: Core,
  ownerId: string,
  input: { pageSize: number; pageToken: string },
): Promise<{ items: store.RegistrationToken[]; nextPageToken: string }> {
  const v = new Violations();
  const page = readPage(v, input.pageSize, input.pageToken, "worker_registration_tokens");
  v.throwIfAny();
  return writePage(page, await store.listRegistrationTokens(core.db, ownerId, page));
}

/** Stops the token registering new workers; workers it registered keep their credentials. */
export async function revokeRegistrationToken(core: Core, ownerId: string, rawId: string): Promise<void> {
  const id = readId(rawId);
  const token = await store.revokeRegistrationToken(core.db, ownerId, id, core.now());
  if (token === undefined) throw notFound("worker registration token", id);
}

/** A worker as its lister sees it: the sessions it holds, and which of them are the lister's. */
export interface ListedWorker extends store.Worker {
  heldSessionCount: number;
  /** The held sessions that are the lister's (every one in single-user mode), oldest first. */
  heldSessionIds: string[];
}

/**
 * The workers a user may see: those of their own registration tokens and the pool's (the
 * configured token's, serving every user); in single-user mode, every one. A pool worker's
 * sessions of other users are counted, never named.
 */
export async function listWorkers(
  core: Core,
  userId: string,
  input: { pageSize: number; pageToken: string; includeUnregistered: boolean },
): Promise<{ items: ListedWorker[]; nextPageToken: string }> {
  const v = new Violations();
  // The filter is in the scope, so a page token works only with the filter it was made with.
  const page = readPage(v, input.pageSize, input.pageToken, `workers:${input.includeUnregistered ? "all" : "registered"}`);
  v.throwIfAny();
  const singleUser = core.auth.login === undefined;
  const filter = { ownerId: singleUser ? undefined : userId, includeUnregistered: input.includeUnregistered };
  const { items, nextPageToken } = writePage(page, await store.listWorkers(core.db, filter, page));
  const held = new Map<string, { id: string; ownerId: string }[]>();
  for (const h of await sessions.heldByWorkers(core.db, items.map((w) => w.id))) {
    const list = held.get(h.workerId);
    if (list === undefined) held.set(h.workerId, [h]);
    else list.push(h);
  }
  const listed = items.map((w): ListedWorker => {
    const holds = held.get(w.id) ?? [];
    return {
      ...w,
      heldSessionCount: holds.length,
      heldSessionIds: holds.filter((h) => singleUser || h.ownerId === userId).map((h) => h.id),
    };
  });
  return { items: listed, nextPageToken };
}

export interface RegisterWorkerInput {
  registrationToken: string;
  name: string;
  hostname: string;
  version: string;
  agentTypes: string[];
  labels: Record<string, string>;
  maxConcurrentSessions: number;
  /**
   * The credential the worker had, if it sends one (Authorization: Bearer fwk_…): a daemon that
   * restarts presents its previous identity this way, the contract having no field for it.
   */
  previousCredential?: string | undefined;
}

export async function registerWorker(core: Core, log: Logger, input: RegisterWorkerInput): Promise<{ worker: store.Worker; credential: string }> {
  // The token is this call's credential: check it before reading the rest of the body, so an
  // anonymous caller learns nothing from validation and costs no more than a refusal.
  const now = core.now();
  const presented = await checkRegistrationToken(core, input.registrationToken, now, "look");

  const name = input.name.trim();
  const hostname = input.hostname.trim();
  const version = input.version.trim();
  const v = new Violations();
  v.text("name", name, { required: true, max: NAME_MAX, singleLine: true });
  v.text("hostname", hostname, { max: 255, singleLine: true });
  v.text("version", version, { max: 100, singleLine: true });
  const labels = Object.entries(input.labels);
  if (labels.length > MAX_LABELS) v.add("labels", `must have at most ${MAX_LABELS} entries`);
  for (const [key, value] of labels) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/.test(key)) v.add("labels", `key ${quote(key)} must be 1-63 letters, digits, '.', '_', '/' or '-'`);
    v.text("labels", value, { max: 255, singleLine: true });
  }
  for (const agent of input.agentTypes) {
    if (!isAgentType(agent)) v.add("agent_types", `holds an unknown agent type (${quote(agent)})`);
  }
  if (input.maxConcurrentSessions < 0 || input.maxConcurrentSessions > MAX_CONCURRENT_SESSIONS) {
    v.add("max_concurrent_sessions", `must be between 0 (meaning 1) and ${MAX_CONCURRENT_SESSIONS}`);
  }
  v.throwIfAny();

  // Marked used only now that the registration is valid (and refused if revoked meanwhile).
  const ownerAndToken = presented.registrationTokenId === null ? presented : await checkRegistrationToken(core, input.registrationToken, now, "use");
  const credential = newOpaqueToken(WORKER_CREDENTIAL_PREFIX);
  const fields = {
    ...ownerAndToken,
    name,
    hostname,
    version,
    agentTypes: [...new Set(input.agentTypes)],
    labels: input.labels,
    maxConcurrentSessions: input.maxConcurrentSessions === 0 ? 1 : input.maxConcurrentSessions,
    registeredAt: now,
    credentialHash: hashToken(credential),
  };
  // A worker that comes back with the credential it had gets its id back (and a new credential,
  // the old one ending in the same write), if the same owner's token registers it and it was not
  // unregistered, which ends an identity for good. Any other credential is ignored: the worker
  // gets a new identity, as one sending none does.
  const previous = input.previousCredential;
  const again =
    previous !== undefined && previous.startsWith(WORKER_CREDENTIAL_PREFIX) && previous.length <= MAX_TOKEN_LENGTH
      ? await store.reregisterWorker(core.db, core.adapter, hashToken(previous), fields)
      : undefined;
  // Its old credential ended: this replica forgets it now, the others when they hear.
  if (again !== undefined) core.workerCredentials.forgetWorker(again.id);
  const worker = again ?? (await store.insertWorker(core.db, { id: newId(now.getTime()), ...fields }));
  log.info({ worker_id: worker.id, owner_id: worker.ownerId, name, hostname, again: again !== undefined }, "worker registered");
  return { worker, credential };
}

/** Who a registration token registers workers for; "use" also records that it was used. */
async function checkRegistrationToken(
  core: Core,
  token: string,
  now: Date,
  mode: "look" | "use",
): Promise<{ ownerId: string | null; registrationTokenId: string | null }> {
  if (token === "") throw unauthenticated("registration_token is required: a worker registers with a worker registration token");
  if (token.length > MAX_TOKEN_LENGTH) throw unauthenticated("unknown, revoked or expired worker registration token");
  const configured = core.auth.config.workerRegistrationToken;
  if (configured !== undefined && sameSecret(token, configured)) return { ownerId: null, registrationTokenId: null };
  const find = mode === "use" ? store.useRegistrationToken : store.findUsableRegistrationToken;
  const found = token.startsWith(WORKER_REGISTRATION_TOKEN_PREFIX) ? await find(core.db, hashToken(token), now) : undefined;
  if (found === undefined) throw unauthenticated("unknown, revoked or expired worker registration token");
  return { ownerId: found.ownerId, registrationTokenId: found.id };
}

const UNREGISTERED = "this worker was unregistered; register it again";

/**
 * A call's own statement found its worker unregistered, though its credential was kept as valid:
 * the unregistration came through another replica (or process) whose word had not arrived yet.
 * Forgets the credential here; returns the error to throw.
 */
export function unregisteredMeanwhile(core: Core, workerId: string): Error {
  core.workerCredentials.forgetWorker(workerId);
  return unauthenticated(UNREGISTERED);
}

/** The worker a credential belongs to, while it is registered (core/worker-credentials.ts keeps what it found). */
export async function authenticateWorker(core: Core, credential: string): Promise<CredentialOwner> {
  const hash = hashToken(credential);
  const kept = core.workerCredentials.find(hash, core.now().getTime());
  if (kept !== undefined) return kept;
  const epoch = core.workerCredentials.epoch;
  const worker = await store.findWorkerByCredential(core.db, hash);
  if (worker === undefined) throw unauthenticated("unknown worker credential; register the worker again");
  if (worker.status === "unregistered") throw unauthenticated(UNREGISTERED);
  const owner = { workerId: worker.id, ownerId: worker.ownerId, agentTypes: worker.agentTypes, maxConcurrentSessions: worker.maxConcurrentSessions };
  core.workerCredentials.remember(hash, owner, core.now().getTime(), epoch);
  return owner;
}

/**
 * Unregisters the worker: its credential stops working, what it had not started goes back to
 * the queue as the same attempt (in the transaction that unregisters it), and what it was
 * running is lost and requeued as the next attempt (its worker can no longer report it).
 */
export async function unregisterWorker(core: Core, log: Logger, workerId: string): Promise<void> {
  const why = "its worker unregistered";
  const returned = await returnUnstarted(core, log, workerId, why, (trx) => store.unregisterWorker(trx, core.adapter, workerId, core.now()));
  core.workerCredentials.forgetWorker(workerId);
  const running = await sessions.heldBy(core.db, workerId);
  const { lost } = await loseSessions(core, running, why, { workerId }, core.dispatch.maxAttempts, log);
  log.info({ worker_id: workerId, returned_sessions: returned.length, requeued_sessions: lost.length }, "worker unregistered");
}
