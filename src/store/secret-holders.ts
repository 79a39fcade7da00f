// Which replica holds a task's secrets in memory, and until when (SecretsService). No value and
// no name is ever written here: only what another replica needs to find the holder and to tell
// whether the secrets may still be handed out (core/secret-vault.ts).
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { TaskKind, TaskStatus } from "../model/tasks.js";
import { fromDbTime, toDbTime } from "./codec.js";

export interface SecretHolder {
  taskId: string;
  ownerId: string;
  replicaId: string;
  /** Where other replicas reach the holder; null when it has no address. */
  replicaUrl: string | null;
  /** Names one SendSecrets; a later one replaces it. */
  generation: string;
  /** How many of the task's sessions had ended lost, cancelled or failed when they were sent. */
  endedRuns: number;
  sentAt: Date;
  expiresAt: Date;
}

/** The session states that end a run's right to the secrets: its lease was lost, or the run ended badly. */
export const RUN_LOSS_STATES = ["lost", "cancelled", "failed"] as const;

/** The owner's task of this id, whichever kind, with its status; undefined when it is none of theirs. */
export async function taskStatusOf(db: Kysely<Database>, taskId: string, ownerId?: string): Promise<{ kind: TaskKind; ownerId: string; status: TaskStatus } | undefined> {
  for (const kind of ["unit", "composite"] as const) {
    const row = await db
      .selectFrom(kind === "unit" ? "unit_tasks" : "composite_tasks")
      .select(["owner_id", "status"])
      .where("id", "=", taskId)
      .$if(ownerId !== undefined, (qb) => qb.where("owner_id", "=", ownerId!))
      .executeTakeFirst();
    if (row !== undefined) return { kind, ownerId: row.owner_id, status: row.status as TaskStatus };
  }
  return undefined;
}

/** How many of the task's sessions (of every run) have ended lost, cancelled or failed. */
export async function endedRuns(db: Kysely<Database>, taskId: string): Promise<number> {
  const row = await db
    .selectFrom("agent_sessions as s")
    .innerJoin("agent_tasks as a", "a.id", "s.agent_task_id")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where((eb) => eb.or([eb("a.unit_task_id", "=", taskId), eb("a.composite_task_id", "=", taskId)]))
    .where("s.state", "in", [...RUN_LOSS_STATES])
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** A holder's columns but its task id. */
function holderColumns(h: Omit<SecretHolder, "endedRuns">, endedRuns: number) {
  return {
    owner_id: h.ownerId,
    replica_id: h.replicaId,
    replica_url: h.replicaUrl,
    generation: h.generation,
    ended_runs: endedRuns,
    sent_at: toDbTime(h.sentAt),
    expires_at: toDbTime(h.expiresAt),
  };
}

/** Records (or replaces) the holder of a task's secrets; ended_runs is counted in the same statement. */
export async function putHolder(db: Kysely<Database>, h: Omit<SecretHolder, "endedRuns">): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const values = holderColumns(h, await endedRuns(trx, h.taskId));
    await trx
      .insertInto("secret_holders")
      .values({ task_id: h.taskId, ...values })
      .onConflict((oc) => oc.column("task_id").doUpdateSet(values))
      .execute();
  });
}

/** The holder of a task made in this transaction: no run of it has ended yet. */
export async function insertNewTaskHolder(db: Kysely<Database>, h: Omit<SecretHolder, "endedRuns">): Promise<void> {
  await db
    .insertInto("secret_holders")
    .values({ task_id: h.taskId, ...holderColumns(h, 0) })
    .execute();
}

export async function getHolder(db: Kysely<Database>, taskId: string): Promise<SecretHolder | undefined> {
  const row = await db.selectFrom("secret_holders").selectAll().where("task_id", "=", taskId).executeTakeFirst();
  return (
    row && {
      taskId: row.task_id,
      ownerId: row.owner_id,
      replicaId: row.replica_id,
      replicaUrl: row.replica_url,
      generation: row.generation,
      endedRuns: Number(row.ended_runs),
      sentAt: fromDbTime(row.sent_at),
      expiresAt: fromDbTime(row.expires_at),
    }
  );
}

/** Removes the task's holder row; only the one of `generation` when given (a newer SendSecrets stays). */
export async function deleteHolder(db: Kysely<Database>, taskId: string, generation?: string): Promise<boolean> {
  const result = await db
    .deleteFrom("secret_holders")
    .where("task_id", "=", taskId)
    .$if(generation !== undefined, (qb) => qb.where("generation", "=", generation!))
    .executeTakeFirst();
  return result.numDeletedRows > 0n;
}

/** Removes the rows whose TTL has passed, on whichever replica; returns how many. */
export async function deleteExpiredHolders(db: Kysely<Database>, now: Date): Promise<number> {
  const result = await db.deleteFrom("secret_holders").where("expires_at", "<=", toDbTime(now)).executeTakeFirst();
  return Number(result.numDeletedRows);
}
