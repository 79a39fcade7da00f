// The task change log that WatchTasks reads: one row per created, updated or deleted task,
// with an increasing id that is the stream's cursor, and a NOTIFY per change to other replicas.
import type { Kysely } from "kysely";
import type { DialectAdapter } from "../db/dialect-adapter.js";
import type { Database } from "../db/schema.js";
import { fromDbTime, toDbTime } from "./codec.js";
import type { TaskChangeType } from "../model/tasks.js";

export interface TaskEvent {
  /** Increasing; the WatchTasks cursor. */
  id: number;
  taskId: string;
  type: TaskChangeType;
  createdAt: Date;
}

/** The NOTIFY channel that wakes other replicas' watchers of a workspace (payload: its id). */
export const TASK_CHANGES_CHANNEL = "foreman_task_changes";

/**
 * Records a change, in the transaction that made it. A workspace's changes become visible in
 * the order of their ids, so a watcher that has read up to id N never later finds an N-1 that
 * committed late: on SQLite because one transaction writes at a time, on PostgreSQL because a
 * trigger gives the row its id as the transaction commits, under a lock per workspace held only
 * for the rest of the commit (migrations/0009_task_events_commit_order.ts). The id the insert
 * gives is therefore provisional on PostgreSQL; nothing reads it.
 */
export async function insertTaskEvent(
  db: Kysely<Database>,
  adapter: DialectAdapter,
  e: { ownerId: string; workspaceId: string; taskId: string; type: TaskChangeType },
  now: Date,
): Promise<void> {
  await db
    .insertInto("task_events")
    .values({ owner_id: e.ownerId, workspace_id: e.workspaceId, task_id: e.taskId, type: e.type, created_at: toDbTime(now) })
    .execute();
  // Delivered when the transaction commits, to every replica (this one included).
  await adapter.notifyOnCommit(db, TASK_CHANGES_CHANNEL, e.workspaceId);
}

/** The workspace's changes after the cursor, oldest first. */
export async function listTaskEvents(
  db: Kysely<Database>,
  ownerId: string,
  workspaceId: string,
  afterId: number,
  limit: number,
): Promise<TaskEvent[]> {
  const rows = await db
    .selectFrom("task_events")
    .select(["id", "task_id", "type", "created_at"])
    .where("owner_id", "=", ownerId)
    .where("workspace_id", "=", workspaceId)
    .where("id", ">", afterId as never)
    .orderBy("id")
    .limit(limit)
    .execute();
  return rows.map((r) => ({ id: Number(r.id), taskId: r.task_id, type: r.type as TaskChangeType, createdAt: fromDbTime(r.created_at) }));
}

/**
 * The workspace's newest change id (0 when none): where a watch that starts "now" begins. Per
 * workspace, not of all: another workspace's newer id may have committed while an older one of
 * this workspace has not yet, and starting after it would skip that one.
 */
export async function latestTaskEventId(db: Kysely<Database>, workspaceId: string): Promise<number> {
  const row = await db
    .selectFrom("task_events")
    .select((eb) => eb.fn.max("id").as("id"))
    .where("workspace_id", "=", workspaceId)
    .executeTakeFirst();
  return row?.id === null || row?.id === undefined ? 0 : Number(row.id);
}
