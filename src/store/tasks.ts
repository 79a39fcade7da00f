// Unit and composite tasks (their runs and sessions are in agent-sessions.ts, the change log
// WatchTasks reads in task-events.ts). Every query is scoped to the owner. Status changes are
// conditional on the status the caller saw, so of two concurrent moves from one status exactly
// one applies.
import { sql, type Kysely, type Selectable } from "kysely";
import type { CompositeTasksTable, Database, UnitTasksTable } from "../db/schema.js";
import {
  TASK_START,
  type AgentTask,
  type CompositeTask,
  type ExecutionState,
  type Task,
  type TaskCommon,
  type TaskKind,
  type TaskStatus,
  type UnitTask,
} from "../model/tasks.js";
import { agentTasksOf } from "./agent-sessions.js";
import { fromDbTime, fromDbTimeOrNull, toDbTime } from "./codec.js";
import { keysetPage, type PageWindow } from "./pages.js";

/** What both task tables hold alike. */
function commonFields(row: Selectable<UnitTasksTable> | Selectable<CompositeTasksTable>, agentTasks: AgentTask[]): TaskCommon {
  return {
    id: row.id,
    ownerId: row.owner_id,
    workspaceId: row.workspace_id,
    repositoryGroupId: row.repository_group_id,
    title: row.title,
    prompt: row.prompt,
    status: row.status as TaskStatus,
    executionState: row.execution_state as ExecutionState,
    baseBranch: row.base_branch,
    statusReason: row.status_reason,
    createdAt: fromDbTime(row.created_at),
    updatedAt: fromDbTime(row.updated_at),
    agentTasks,
  };
}

function toUnit(row: Selectable<UnitTasksTable>, agentTasks: AgentTask[]): UnitTask {
  return {
    kind: "unit",
    ...commonFields(row, agentTasks),
    agentType: row.agent_type,
    agentModel: row.agent_model,
    branchName: row.branch_name,
    baseCommit: row.base_commit,
    endCommit: row.end_commit,
    linkedPrUrl: row.linked_pr_url,
    compositeTaskId: row.composite_task_id,
  };
}

function toComposite(row: Selectable<CompositeTasksTable>, agentTasks: AgentTask[]): CompositeTask {
  return {
    kind: "composite",
    ...commonFields(row, agentTasks),
    executionAgentType: row.execution_agent_type,
    executionAgentModel: row.execution_agent_model,
    planApprovedAt: fromDbTimeOrNull(row.plan_approved_at),
  };
}

/** The agent tasks (with sessions, oldest first) of each task, by task id. */
export interface NewUnitTask {
  id: string;
  ownerId: string;
  workspaceId: string;
  repositoryGroupId: string;
  compositeTaskId: string | null;
  title: string;
  prompt: string;
  agentType: string;
  agentModel: string;
  baseBranch: string;
  branchName: string;
  /** The first repository's base commit; null when the server holds no clone (it contacts no remotes). */
  baseCommit: string | null;
}

/** Inserts the task; returns it as stored, without runs yet (they are inserted after it, for they refer to it). */
export async function insertUnitTask(db: Kysely<Database>, t: NewUnitTask, now: Date): Promise<UnitTask> {
  const row = await db
    .insertInto("unit_tasks")
    .values({
      id: t.id,
      owner_id: t.ownerId,
      workspace_id: t.workspaceId,
      repository_group_id: t.repositoryGroupId,
      composite_task_id: t.compositeTaskId,
      title: t.title,
      prompt: t.prompt,
      status: TASK_START.unit.status,
      execution_state: TASK_START.unit.executionState,
      agent_type: t.agentType,
      agent_model: t.agentModel,
      base_branch: t.baseBranch,
      branch_name: t.branchName,
      base_commit: t.baseCommit,
      search_text: searchText(t.title, t.prompt),
      created_at: toDbTime(now),
      updated_at: toDbTime(now),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toUnit(row, []);
}

export interface NewCompositeTask {
  id: string;
  ownerId: string;
  workspaceId: string;
  repositoryGroupId: string;
  title: string;
  prompt: string;
  executionAgentType: string;
  executionAgentModel: string;
  baseBranch: string;
}

/** Inserts the task; returns it as stored, without runs yet (as insertUnitTask). */
export async function insertCompositeTask(db: Kysely<Database>, t: NewCompositeTask, now: Date): Promise<CompositeTask> {
  const row = await db
    .insertInto("composite_tasks")
    .values({
      id: t.id,
      owner_id: t.ownerId,
      workspace_id: t.workspaceId,
      repository_group_id: t.repositoryGroupId,
      title: t.title,
      prompt: t.prompt,
      status: TASK_START.composite.status,
      execution_state: TASK_START.composite.executionState,
      execution_agent_type: t.executionAgentType,
      execution_agent_model: t.executionAgentModel,
      base_branch: t.baseBranch,
      search_text: searchText(t.title, t.prompt),
      created_at: toDbTime(now),
      updated_at: toDbTime(now),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toComposite(row, []);
}

/** Lower-cased here rather than by the database, so SQLite folds non-ASCII letters as PostgreSQL does. */
function searchText(title: string, prompt: string): string {
  return `${title}\n${prompt}`.toLowerCase();
}

export async function getTask(db: Kysely<Database>, ownerId: string, id: string): Promise<Task | undefined> {
  const unit = await db.selectFrom("unit_tasks").selectAll().where("owner_id", "=", ownerId).where("id", "=", id).executeTakeFirst();
  if (unit !== undefined) return toUnit(unit, (await agentTasksOf(db, "unit", [id])).get(id) ?? []);
  const composite = await db
    .selectFrom("composite_tasks")
    .selectAll()
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .executeTakeFirst();
  if (composite !== undefined) return toComposite(composite, (await agentTasksOf(db, "composite", [id])).get(id) ?? []);
  return undefined;
}

/**
 * The owner's tasks of the given ids, by id; an id that is no task of theirs (deleted, say) is
 * absent. A query per table and the agent tasks' batch, however many ids.
 */
export async function getTasks(db: Kysely<Database>, ownerId: string, ids: string[]): Promise<Map<string, Task>> {
  const wanted = new Set(ids);
  const found: TaskRow[] = [];
  if (wanted.size > 0) {
    const units = await db.selectFrom("unit_tasks").selectAll().where("owner_id", "=", ownerId).where("id", "in", [...wanted]).execute();
    for (const row of units) {
      found.push({ kind: "unit", row });
      wanted.delete(row.id);
    }
  }
  if (wanted.size > 0) {
    const composites = await db
      .selectFrom("composite_tasks")
      .selectAll()
      .where("owner_id", "=", ownerId)
      .where("id", "in", [...wanted])
      .execute();
    for (const row of composites) found.push({ kind: "composite", row });
  }
  return new Map((await withAgentTasks(db, found)).map((task) => [task.id, task]));
}

type TaskRow = { kind: TaskKind; row: Selectable<UnitTasksTable> | Selectable<CompositeTasksTable> };

/** The tasks of these rows, in their order, each with its agent tasks (one batch per kind). */
async function withAgentTasks(db: Kysely<Database>, rows: TaskRow[]): Promise<Task[]> {
  const unitIds = rows.filter((p) => p.kind === "unit").map((p) => p.row.id);
  const compositeIds = rows.filter((p) => p.kind === "composite").map((p) => p.row.id);
  const unitAgents = await agentTasksOf(db, "unit", unitIds);
  const compositeAgents = await agentTasksOf(db, "composite", compositeIds);
  return rows.map((p) =>
    p.kind === "unit"
      ? toUnit(p.row as Selectable<UnitTasksTable>, unitAgents.get(p.row.id) ?? [])
      : toComposite(p.row as Selectable<CompositeTasksTable>, compositeAgents.get(p.row.id) ?? []),
  );
}

export interface TaskFilter {
  ownerId: string;
  workspaceId: string;
  statuses: TaskStatus[];
  kind: TaskKind | undefined;
  repositoryGroupId: string | undefined;
  /** Case-insensitive text in the title or prompt. */
  query: string | undefined;
}

/** Escapes LIKE's wildcards so the text is matched literally (with ESCAPE '\'). */
function likePattern(text: string): string {
  return `%${text.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** Newest first across both kinds: one page. */
export async function listTasks(db: Kysely<Database>, f: TaskFilter, page: PageWindow): Promise<Task[]> {
  const kinds: TaskKind[] = f.kind === undefined ? ["unit", "composite"] : [f.kind];
  const found: TaskRow[] = [];
  for (const kind of kinds) {
    const table = kind === "unit" ? "unit_tasks" : "composite_tasks";
    let query = db
      .selectFrom(table)
      .selectAll()
      .where("owner_id", "=", f.ownerId)
      .where("workspace_id", "=", f.workspaceId);
    if (f.statuses.length > 0) query = query.where("status", "in", f.statuses);
    if (f.repositoryGroupId !== undefined) query = query.where("repository_group_id", "=", f.repositoryGroupId);
    if (f.query !== undefined) query = query.where("search_text", "like", sql<string>`${likePattern(f.query)} escape '\\'`);
    for (const row of await keysetPage(query, page, "desc")) found.push({ kind, row });
  }
  // UUIDv7 ids sort by creation time, so ordering by id is newest first across both tables.
  found.sort((a, b) => (a.row.id < b.row.id ? 1 : a.row.id > b.row.id ? -1 : 0));
  return withAgentTasks(db, found.slice(0, page.fetch));
}

/**
 * Moves a task from `from` to `to` status (and sets its execution state), only if it is still
 * in `from`. Returns false when it was not: another call moved it first, or it is gone.
 */
export async function moveTask(
  db: Kysely<Database>,
  task: { kind: TaskKind; id: string; ownerId: string },
  from: TaskStatus,
  to: { status: TaskStatus; executionState: ExecutionState; reason: string | null; planApproved?: boolean },
  now: Date,
): Promise<boolean> {
  const at = toDbTime(now);
  const set = { status: to.status, execution_state: to.executionState, status_reason: to.reason, updated_at: at };
  const result =
    task.kind === "unit"
      ? await db
          .updateTable("unit_tasks")
          .set((eb) => ({ ...set, version: eb("version", "+", 1) }))
          .where("id", "=", task.id)
          .where("owner_id", "=", task.ownerId)
          .where("status", "=", from)
          .executeTakeFirst()
      : await db
          .updateTable("composite_tasks")
          .set((eb) => ({ ...set, version: eb("version", "+", 1), ...(to.planApproved ? { plan_approved_at: at } : {}) }))
          .where("id", "=", task.id)
          .where("owner_id", "=", task.ownerId)
          .where("status", "=", from)
          .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** What the dispatcher needs of a run's task: where it is and what status it has. */
export interface TaskPlace {
  kind: TaskKind;
  id: string;
  ownerId: string;
  workspaceId: string;
  status: TaskStatus;
  executionState: ExecutionState;
}

export async function getTaskPlace(db: Kysely<Database>, task: { kind: TaskKind; id: string; ownerId: string }): Promise<TaskPlace | undefined> {
  const table = task.kind === "unit" ? "unit_tasks" : "composite_tasks";
  const row = await db
    .selectFrom(table)
    .select(["id", "owner_id", "workspace_id", "status", "execution_state"])
    .where("id", "=", task.id)
    .where("owner_id", "=", task.ownerId)
    .executeTakeFirst();
  return (
    row && {
      kind: task.kind,
      id: row.id,
      ownerId: row.owner_id,
      workspaceId: row.workspace_id,
      status: row.status as TaskStatus,
      executionState: row.execution_state as ExecutionState,
    }
  );
}

const PLACE_COLUMNS = ["id", "owner_id", "workspace_id", "status", "execution_state"] as const;

function toPlace(kind: TaskKind, row: { id: string; owner_id: string; workspace_id: string; status: string; execution_state: string }): TaskPlace {
  return { kind, id: row.id, ownerId: row.owner_id, workspaceId: row.workspace_id, status: row.status as TaskStatus, executionState: row.execution_state as ExecutionState };
}

/**
 * Where a task's run stands now (a claim, a RUNNING report), its status unchanged: the task's
 * place after the change, in the same statement, or undefined when the task is gone.
 */
export async function setRunState(db: Kysely<Database>, task: { kind: TaskKind; id: string; ownerId: string }, state: ExecutionState, now: Date): Promise<TaskPlace | undefined> {
  const table = task.kind === "unit" ? "unit_tasks" : "composite_tasks";
  const row = await db
    .updateTable(table)
    .set((eb) => ({ execution_state: state, updated_at: toDbTime(now), version: eb("version", "+", 1) }))
    .where("id", "=", task.id)
    .where("owner_id", "=", task.ownerId)
    .returning(PLACE_COLUMNS)
    .executeTakeFirst();
  return row && toPlace(task.kind, row);
}

/**
 * A run ended (a worker's report): the task leaves the status its run works in
 * (TASK_START) for `to.status`, or keeps it when undefined, with the run's execution state and
 * reason. Its place after the move, or undefined when it was not in its work status (or is gone).
 */
export async function endRun(
  db: Kysely<Database>,
  task: { kind: TaskKind; id: string; ownerId: string },
  /** endCommit (a unit task's): where its first repository's branch ended; absent, left as it is. */
  to: { status: TaskStatus | undefined; executionState: ExecutionState; reason: string | null; endCommit?: string },
  now: Date,
): Promise<TaskPlace | undefined> {
  const table = task.kind === "unit" ? "unit_tasks" : "composite_tasks";
  const row = await db
    .updateTable(table)
    .set((eb) => ({
      ...(to.status !== undefined ? { status: to.status } : {}),
      ...(to.endCommit !== undefined && task.kind === "unit" ? { end_commit: to.endCommit } : {}),
      execution_state: to.executionState,
      status_reason: to.reason,
      updated_at: toDbTime(now),
      version: eb("version", "+", 1),
    }))
    .where("id", "=", task.id)
    .where("owner_id", "=", task.ownerId)
    .where("status", "=", TASK_START[task.kind].status)
    .returning(PLACE_COLUMNS)
    .executeTakeFirst();
  return row && toPlace(task.kind, row);
}

/** Sets where a task's run stands (a claim, a RUNNING report), its status unchanged. */
export async function setExecutionState(db: Kysely<Database>, task: { kind: TaskKind; id: string; ownerId: string }, state: ExecutionState, now: Date): Promise<void> {
  const table = task.kind === "unit" ? "unit_tasks" : "composite_tasks";
  await db
    .updateTable(table)
    .set((eb) => ({ execution_state: state, updated_at: toDbTime(now), version: eb("version", "+", 1) }))
    .where("id", "=", task.id)
    .where("owner_id", "=", task.ownerId)
    .execute();
}

export async function deleteTask(db: Kysely<Database>, task: { kind: TaskKind; id: string; ownerId: string }): Promise<boolean> {
  const table = task.kind === "unit" ? "unit_tasks" : "composite_tasks";
  const result = await db.deleteFrom(table).where("id", "=", task.id).where("owner_id", "=", task.ownerId).executeTakeFirst();
  return result.numDeletedRows > 0n;
}
