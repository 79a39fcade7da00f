// Agent tasks (a task's runs) and their sessions (one per attempt): what a task's runs are read
// as, a run's insertion with its first queued session, a next attempt, and cancelling what is
// active. The claim, lease renewal, requeue and report transitions of the dispatch issue belong
// here, each a named function with its SQL.
import type { Kysely, Selectable } from "kysely";
import type { AgentSessionsTable, AgentTasksTable, Database } from "../db/schema.js";
import { SESSION_CANCEL, SESSION_START, type AgentSession, type AgentTask, type AgentTaskKind, type SessionState, type TaskKind } from "../model/tasks.js";
import { fromDbTime, fromDbTimeOrNull, toDbTime } from "./codec.js";

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
  for (const row of rows) {
    byTask.get((kind === "unit" ? row.unit_task_id : row.composite_task_id)!)?.push({
      id: row.id,
      kind: row.kind as AgentTaskKind,
      prompt: row.prompt,
      agentType: row.agent_type,
      agentModel: row.agent_model,
      createdAt: fromDbTime(row.created_at),
      sessions: sessions.get(row.id) ?? [],
    });
  }
  return byTask;
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
  /** For a unit task's run: the repositories it works on, each with its branches. */
  baseRemotes: { repositoryId: string; baseBranch: string; branchName: string }[];
}

/** Inserts an agent task and its first queued session; run it in a transaction. */
export async function insertAgentTask(db: Kysely<Database>, a: NewAgentTask, sessionId: string, now: Date): Promise<void> {
  const at = toDbTime(now);
  await db
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
    .execute();
  if (a.baseRemotes.length > 0) {
    await db
      .insertInto("agent_task_base_remotes")
      .values(
        a.baseRemotes.map((r) => ({ agent_task_id: a.id, repository_id: r.repositoryId, base_branch: r.baseBranch, branch_name: r.branchName })),
      )
      .execute();
  }
  await insertSession(db, { id: sessionId, ownerId: a.ownerId, agentTaskId: a.id, attempt: 1, agentType: a.agentType, agentModel: a.agentModel }, now);
}

export async function insertSession(
  db: Kysely<Database>,
  s: { id: string; ownerId: string; agentTaskId: string; attempt: number; agentType: string; agentModel: string },
  now: Date,
): Promise<void> {
  await db
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
    .execute();
}

/** The base remotes of an agent task, to copy onto the next run of the same unit task. */
export async function baseRemotesOf(db: Kysely<Database>, agentTaskId: string): Promise<NewAgentTask["baseRemotes"]> {
  const rows = await db
    .selectFrom("agent_task_base_remotes")
    .select(["repository_id", "base_branch", "branch_name"])
    .where("agent_task_id", "=", agentTaskId)
    .orderBy("repository_id")
    .execute();
  return rows.map((r) => ({ repositoryId: r.repository_id, baseBranch: r.base_branch, branchName: r.branch_name }));
}

/** Cancels the agent tasks' active sessions as SESSION_CANCEL says; returns how many. */
export async function cancelActiveSessions(db: Kysely<Database>, agentTaskIds: string[], reason: string, now: Date): Promise<number> {
  if (agentTaskIds.length === 0) return 0;
  const result = await db
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
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}
