// Worker registration tokens and registered workers. A token or worker with no owner was made
// from the server's configured registration token and serves every user.
import type { ExpressionBuilder, Kysely, Selectable } from "kysely";
import type { DialectAdapter } from "../db/dialect-adapter.js";
import type { Database, WorkerRegistrationTokensTable, WorkersTable } from "../db/schema.js";
import { fromDbJson, fromDbTime, fromDbTimeOrNull, toDbTime } from "./codec.js";
import { prepared } from "./prepared.js";
import { keysetPage, type PageWindow } from "./pages.js";

/** NOTIFY channel: a worker's credential stopped working (key: the worker id); core/worker-credentials.ts. */
export const WORKER_CREDENTIALS_CHANNEL = "foreman_worker_credentials";

export interface RegistrationToken {
  id: string;
  ownerId: string | null;
  name: string;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

function toRegistrationToken(row: Selectable<WorkerRegistrationTokensTable>): RegistrationToken {
  return {
    id: row.id,
    ownerId: row.owner_id,
    name: row.name,
    createdAt: fromDbTime(row.created_at),
    expiresAt: fromDbTimeOrNull(row.expires_at),
    revokedAt: fromDbTimeOrNull(row.revoked_at),
    lastUsedAt: fromDbTimeOrNull(row.last_used_at),
  };
}

export async function insertRegistrationToken(
  db: Kysely<Database>,
  t: { id: string; ownerId: string; name: string; tokenHash: string; createdAt: Date; expiresAt: Date | null },
): Promise<RegistrationToken> {
  const row = await db
    .insertInto("worker_registration_tokens")
    .values({
      id: t.id,
      owner_id: t.ownerId,
      name: t.name,
      token_hash: t.tokenHash,
      created_at: toDbTime(t.createdAt),
      expires_at: t.expiresAt === null ? null : toDbTime(t.expiresAt),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toRegistrationToken(row);
}

/** The owner's tokens, oldest first, after the given id. */
export async function listRegistrationTokens(
  db: Kysely<Database>,
  ownerId: string,
  page: PageWindow,
): Promise<RegistrationToken[]> {
  const query = db.selectFrom("worker_registration_tokens").selectAll().where("owner_id", "=", ownerId);
  return (await keysetPage(query, page)).map(toRegistrationToken);
}

/** Revokes the owner's token; undefined when the owner has no such token. Revoking twice keeps the first time. */
export async function revokeRegistrationToken(
  db: Kysely<Database>,
  ownerId: string,
  id: string,
  now: Date,
): Promise<RegistrationToken | undefined> {
  await db
    .updateTable("worker_registration_tokens")
    .set({ revoked_at: toDbTime(now) })
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .where("revoked_at", "is", null)
    .execute();
  const row = await db
    .selectFrom("worker_registration_tokens")
    .selectAll()
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .executeTakeFirst();
  return row && toRegistrationToken(row);
}

/** The token with this hash, not revoked and not expired at `now`. */
function usableToken(eb: ExpressionBuilder<Database, "worker_registration_tokens">, tokenHash: string, now: Date) {
  return eb.and([
    eb("token_hash", "=", tokenHash),
    eb("revoked_at", "is", null),
    eb.or([eb("expires_at", "is", null), eb("expires_at", ">", toDbTime(now))]),
  ]);
}

/** The registration token with this hash, if it may register a worker now. */
export async function findUsableRegistrationToken(db: Kysely<Database>, tokenHash: string, now: Date): Promise<RegistrationToken | undefined> {
  const row = await db
    .selectFrom("worker_registration_tokens")
    .selectAll()
    .where((eb) => usableToken(eb, tokenHash, now))
    .executeTakeFirst();
  return row && toRegistrationToken(row);
}

/** Records a use of a live token and returns it; undefined when unknown, revoked or expired. */
export async function useRegistrationToken(db: Kysely<Database>, tokenHash: string, now: Date): Promise<RegistrationToken | undefined> {
  const row = await db
    .updateTable("worker_registration_tokens")
    .set({ last_used_at: toDbTime(now) })
    .where((eb) => usableToken(eb, tokenHash, now))
    .returningAll()
    .executeTakeFirst();
  return row && toRegistrationToken(row);
}

export type WorkerStatus = "active" | "draining" | "unhealthy" | "unregistered";

/** A worker in these states heartbeats, and may hold sessions the health monitor watches. */
const LIVE_STATUSES: WorkerStatus[] = ["active", "draining"];

export interface Worker {
  id: string;
  ownerId: string | null;
  registrationTokenId: string | null;
  name: string;
  hostname: string;
  version: string;
  status: WorkerStatus;
  agentTypes: string[];
  labels: Record<string, string>;
  maxConcurrentSessions: number;
  lastHeartbeatAt: Date;
  registeredAt: Date;
  unregisteredAt: Date | null;
}

function toWorker(row: Selectable<WorkersTable>): Worker {
  return {
    id: row.id,
    ownerId: row.owner_id,
    registrationTokenId: row.registration_token_id,
    name: row.name,
    hostname: row.hostname,
    version: row.version,
    status: row.status as WorkerStatus,
    agentTypes: fromDbJson<string[]>(row.agent_types),
    labels: fromDbJson<Record<string, string>>(row.labels),
    maxConcurrentSessions: row.max_concurrent_sessions,
    lastHeartbeatAt: fromDbTime(row.last_heartbeat_at),
    registeredAt: fromDbTime(row.registered_at),
    unregisteredAt: fromDbTimeOrNull(row.unregistered_at),
  };
}

/** What a registration (a first one, or a restarted worker's) writes: its capabilities, credential, and active as of now. */
function registrationColumns(w: Omit<Worker, "id" | "ownerId" | "status" | "lastHeartbeatAt" | "unregisteredAt"> & { credentialHash: string }) {
  return {
    registration_token_id: w.registrationTokenId,
    name: w.name,
    hostname: w.hostname,
    version: w.version,
    credential_hash: w.credentialHash,
    status: "active" as const,
    agent_types: JSON.stringify(w.agentTypes),
    labels: JSON.stringify(w.labels),
    max_concurrent_sessions: w.maxConcurrentSessions,
    last_heartbeat_at: toDbTime(w.registeredAt),
  };
}

export async function insertWorker(
  db: Kysely<Database>,
  w: Omit<Worker, "status" | "lastHeartbeatAt" | "unregisteredAt"> & { credentialHash: string },
): Promise<Worker> {
  const row = await db
    .insertInto("workers")
    .values({
      id: w.id,
      owner_id: w.ownerId,
      ...registrationColumns(w),
      registered_at: toDbTime(w.registeredAt),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toWorker(row);
}

/**
 * Workers in id (registration) order, after the page's id: those of this owner and the pool's
 * (owner null), or every worker for `ownerId` undefined (single-user mode). Unregistered ones
 * only when asked for.
 */
export async function listWorkers(
  db: Kysely<Database>,
  filter: { ownerId: string | undefined; includeUnregistered: boolean },
  page: PageWindow,
): Promise<Worker[]> {
  let query = db.selectFrom("workers").selectAll();
  const { ownerId } = filter;
  if (ownerId !== undefined) query = query.where((eb) => eb.or([eb("owner_id", "is", null), eb("owner_id", "=", ownerId)]));
  if (!filter.includeUnregistered) query = query.where("status", "!=", "unregistered");
  return (await keysetPage(query, page)).map(toWorker);
}

// Every call a worker makes (heartbeats by the thousand a second) reads it: compiled once.
const selectWorkerByCredential = prepared((db, credentialHash: string) =>
  db.selectFrom("workers").selectAll().where("credential_hash", "=", credentialHash),
);

export async function findWorkerByCredential(db: Kysely<Database>, credentialHash: string): Promise<Worker | undefined> {
  const [row] = await selectWorkerByCredential(db, credentialHash);
  return row && toWorker(row);
}

const selectWorkerById = prepared((db, id: string) => db.selectFrom("workers").selectAll().where("id", "=", id));

export async function findWorker(db: Kysely<Database>, id: string): Promise<Worker | undefined> {
  const [row] = await selectWorkerById(db, id);
  return row && toWorker(row);
}

/**
 * A worker registering again with the credential it had (a restarted daemon): the same row, so
 * the same id, with the new registration's name, capabilities and credential, active again.
 * Only for a worker of the same owner (null: the configured token's) that was not
 * unregistered; the old credential stops working in this same write. Undefined otherwise.
 */
export async function reregisterWorker(
  db: Kysely<Database>,
  adapter: DialectAdapter,
  previousCredentialHash: string,
  w: Omit<Worker, "id" | "status" | "lastHeartbeatAt" | "unregisteredAt"> & { credentialHash: string },
): Promise<Worker | undefined> {
  const row = await db
    .updateTable("workers")
    .set(registrationColumns(w))
    .where("credential_hash", "=", previousCredentialHash)
    .where("status", "!=", "unregistered")
    .where((eb) => (w.ownerId === null ? eb("owner_id", "is", null) : eb("owner_id", "=", w.ownerId)))
    .returningAll()
    .executeTakeFirst();
  if (row === undefined) return undefined;
  await adapter.notifyOnCommit(db, WORKER_CREDENTIALS_CHANNEL, row.id);
  return toWorker(row);
}

/** Whether the updated worker has commands waiting, read in the heartbeat's own statement. */
const hasCommandsWaiting = (eb: ExpressionBuilder<Database, "workers">) =>
  eb.exists(eb.selectFrom("worker_commands as c").select("c.id").whereRef("c.worker_id", "=", "workers.id")).as("has_commands");

/**
 * A draining worker's heartbeat: it was seen now, and is draining. (Other heartbeats are written
 * together, by touchWorkers.)
 */
export async function touchDrainingWorker(db: Kysely<Database>, id: string, now: Date): Promise<{ registered: boolean; hasCommands: boolean }> {
  const row = await db
    .updateTable("workers")
    .set({ last_heartbeat_at: toDbTime(now), status: "draining" })
    .where("id", "=", id)
    .where("status", "!=", "unregistered")
    // Whether the worker has commands waiting, in the same statement: most heartbeats find
    // none, and then the commands are not read.
    .returning(hasCommandsWaiting)
    .executeTakeFirst();
  return { registered: row !== undefined, hasCommands: Boolean(row?.has_commands) };
}

/** Ids a statement names at most: SQLite allows 32,766 parameters, PostgreSQL 65,535. */
const TOUCH_CHUNK = 1000;

/**
 * Heartbeats of many workers in one statement per chunk (core/heartbeat-writer.ts gathers
 * them): each was seen at `now` and is active again, unless unregistered. Returns whether each
 * one written has commands waiting, found in the same statement; an unregistered one is absent.
 */
export async function touchWorkers(db: Kysely<Database>, ids: string[], now: Date): Promise<Map<string, boolean>> {
  const touched = new Map<string, boolean>();
  for (let i = 0; i < ids.length; i += TOUCH_CHUNK) {
    const rows = await db
      .updateTable("workers")
      .set({ last_heartbeat_at: toDbTime(now), status: "active" })
      .where("id", "in", ids.slice(i, i + TOUCH_CHUNK))
      .where("status", "!=", "unregistered")
      .returning(["id", hasCommandsWaiting])
      .execute();
    for (const r of rows) touched.set(r.id, Boolean(r.has_commands));
  }
  return touched;
}

/** Workers that may hold work (active or draining) and were last seen before `before`. */
export async function silentWorkers(db: Kysely<Database>, before: Date, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom("workers")
    .select("id")
    .where("status", "in", LIVE_STATUSES)
    .where("last_heartbeat_at", "<", toDbTime(before))
    .orderBy("last_heartbeat_at")
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/**
 * The unhealthy transition, one conditional UPDATE: a worker still silent since before
 * `before` becomes unhealthy. Of several monitors marking it at once, one does (true).
 */
export async function markUnhealthy(db: Kysely<Database>, id: string, before: Date): Promise<boolean> {
  const result = await db
    .updateTable("workers")
    .set({ status: "unhealthy" })
    .where("id", "=", id)
    .where("status", "in", LIVE_STATUSES)
    .where("last_heartbeat_at", "<", toDbTime(before))
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/**
 * Unregisters the worker; its credential stops working at once, and every replica hears of it
 * when the change commits (core/worker-credentials.ts). Idempotent.
 */
export async function unregisterWorker(db: Kysely<Database>, adapter: DialectAdapter, id: string, now: Date): Promise<void> {
  await db
    .updateTable("workers")
    .set({ status: "unregistered", unregistered_at: toDbTime(now) })
    .where("id", "=", id)
    .where("status", "!=", "unregistered")
    .execute();
  await adapter.notifyOnCommit(db, WORKER_CREDENTIALS_CHANNEL, id);
}

/** Workers alike for what they may take: whom they serve (null: every owner), their status, their agents. */
export interface WorkerKind {
  ownerId: string | null;
  status: WorkerStatus;
  /** Empty: every agent. */
  agentTypes: string[];
}

/**
 * The kinds of worker registered now (not unregistered) that may serve any of these owners:
 * their own and the configured token's. One row per kind, however many workers share it, so
 * a pool of thousands of alike workers is a row or two.
 */
export async function workerKindsServing(db: Kysely<Database>, ownerIds: readonly string[]): Promise<WorkerKind[]> {
  if (ownerIds.length === 0) return [];
  const rows = await db
    .selectFrom("workers")
    .select(["owner_id", "status", "agent_types"])
    .distinct()
    .where("status", "in", [...LIVE_STATUSES, "unhealthy"])
    .where((eb) => eb.or([eb("owner_id", "is", null), eb("owner_id", "in", ownerIds)]))
    .execute();
  return rows.map((r) => ({ ownerId: r.owner_id, status: r.status as WorkerStatus, agentTypes: fromDbJson<string[]>(r.agent_types) }));
}
