// The task list's rules: creating unit and composite tasks (each with its first queued agent
// run), one state machine for both kinds, review (approve, reject, request changes), retry,
// delete, and the change log WatchTasks follows.
import { newId } from "../store/codec.js";
import * as sessions from "../store/agent-sessions.js";
import * as repos from "../store/repositories.js";
import * as taskEvents from "../store/task-events.js";
import * as store from "../store/tasks.js";
import type { Logger } from "../logger.js";
import {
  AFTER_RUN_STATUSES,
  COMPOSITE_STATUSES,
  RUN_END,
  TRANSITIONS,
  UNIT_STATUSES,
  canMove,
  type CompositeTask,
  type ExecutionState,
  type Task,
  type TaskChangeType,
  type TaskKind,
  type TaskStatus,
  type UnitTask,
} from "../model/tasks.js";
import { DEFAULT_AGENT_TYPE, isAgentType } from "./agents.js";
import { commandsQueued } from "./commands.js";
import type { Core } from "./context.js";
import { failedPrecondition, invalidArgument, notFound } from "./errors.js";
import { branchNameProblem } from "./git-names.js";
import { fetchRepositories } from "./repositories.js";
import * as branchHeads from "../store/task-branches.js";
import { deliverTask } from "./delivery.js";
import { holdNewTaskSecrets, readNewTaskSecrets } from "./secret-vault.js";
import { defaultBranchName, dropTaskBranches, startTaskBranches } from "./task-branches.js";
import { readPage, writePage } from "./pagination.js";
import { Violations, readId } from "./validation.js";
import type { FeedItem } from "./task-feed.js";
import { textProblem, toSingleLine } from "./text.js";
import { waitForWake } from "./wait.js";
import { getWorkspace } from "./workspaces.js";

export type { AgentSession, AgentTask, CompositeTask, ExecutionState, Task, TaskKind, TaskStatus, UnitTask } from "../model/tasks.js";

const TITLE_MAX = 200;
const PROMPT_MAX = 100_000;
const FEEDBACK_MAX = 20_000;
const REASON_MAX = 2_000;
const MODEL_MAX = 100;
const QUERY_MAX = 200;

function defaultTitle(prompt: string): string {
  // A title is single-line text: what the prompt's first line holds that a title may not goes.
  const firstLine = toSingleLine(prompt.split("\n", 1)[0]!).replace(/\s+/g, " ").trim();
  const chars = [...firstLine];
  return chars.length <= 80 ? firstLine : `${chars.slice(0, 79).join("").trimEnd()}…`;
}

interface AgentChoice {
  agentType: string;
  agentModel: string;
}

/** An agent type not given (undefined) is the default one. */
function readAgent(v: Violations, typeField: string, modelField: string, agentType: string | undefined, agentModel: string): AgentChoice {
  const type = agentType ?? DEFAULT_AGENT_TYPE;
  if (!isAgentType(type)) v.add(typeField, `is not a known agent type (${type})`);
  const model = agentModel.trim();
  v.text(modelField, model, { max: MODEL_MAX, singleLine: true });
  return { agentType: type, agentModel: model };
}

/** The caller's repository group with its repositories, for a new task. */
async function taskGroup(core: Core, ownerId: string, rawId: string, v: Violations): Promise<{ group: repos.RepositoryGroup; repositories: repos.Repository[] }> {
  const id = v.id("repository_group_id", rawId);
  v.throwIfAny();
  const found = await repos.getGroupWithRepositories(core.db, ownerId, id);
  if (found === undefined) throw notFound("repository group", id);
  const { group, repositories } = found;
  if (repositories.length === 0) throw failedPrecondition(`repository group ${id} has no repositories`, { repository_group_id: id });
  return { group, repositories };
}

function readPrompt(v: Violations, field: string, raw: string, max: number): string {
  const prompt = raw.trim();
  if (prompt === "") v.add(field, "is required");
  else if ([...prompt].length > max) v.add(field, `must be at most ${max} characters`);
  else {
    const problem = textProblem(prompt, { singleLine: false });
    if (problem !== undefined) v.add(field, problem);
  }
  return prompt;
}

function readTitle(v: Violations, raw: string, prompt: string): string {
  // A title made from the prompt is checked as the prompt; only a given one is checked as such.
  if (raw.trim() === "") return defaultTitle(prompt);
  const title = raw.trim();
  v.text("title", title, { max: TITLE_MAX, singleLine: true });
  return title;
}

function readBranch(v: Violations, field: string, raw: string): string {
  const name = raw.trim();
  if (name !== "") {
    const problem = branchNameProblem(name);
    if (problem !== undefined) v.add(field, problem);
  }
  return name;
}

async function recordChange(core: Core, db: Core["db"], task: { ownerId: string; workspaceId: string; id: string }, type: TaskChangeType, now: Date): Promise<void> {
  await taskEvents.insertTaskEvent(db, core.adapter, { ownerId: task.ownerId, workspaceId: task.workspaceId, taskId: task.id, type }, now);
}

export interface CreateUnitTaskInput {
  repositoryGroupId: string;
  prompt: string;
  title: string;
  /** Not given: the default agent. */
  agentType: string | undefined;
  agentModel: string;
  baseBranch: string;
  branchName: string;
  /** Held from before the task is queued (secret-vault.ts holdNewTaskSecrets); empty: none. */
  secrets: Record<string, string>;
  secretsTtlSeconds: number;
}

export async function createUnitTask(core: Core, log: Logger, ownerId: string, input: CreateUnitTaskInput): Promise<UnitTask> {
  const v = new Violations();
  const prompt = readPrompt(v, "prompt", input.prompt, PROMPT_MAX);
  const title = readTitle(v, input.title, prompt);
  const agent = readAgent(v, "agent_type", "agent_model", input.agentType, input.agentModel);
  const baseBranch = readBranch(v, "base_branch", input.baseBranch);
  const branchName = readBranch(v, "branch_name", input.branchName);
  const secrets = readNewTaskSecrets(v, input.secrets, input.secretsTtlSeconds);
  const { group, repositories } = await taskGroup(core, ownerId, input.repositoryGroupId, v);
  // A task starts from what the remotes have now: the server's clones are fetched first.
  await fetchRepositories(core, repositories);

  const id = newId(core.now().getTime());
  const branch = branchName === "" ? defaultBranchName(title, id) : branchName;
  const bases = await startTaskBranches(core, repositories, branch, baseBranch);
  // The first repository's (the one added first) is the task's own; each run keeps every one.
  const first = [...repositories].sort((a, b) => (a.id < b.id ? -1 : 1))[0]!;
  const now = core.now();
  const made = core.adapter.transaction(core.db, async (trx) => {
    const task = await store.insertUnitTask(
      trx,
      {
        id,
        ownerId,
        workspaceId: group.workspaceId,
        repositoryGroupId: group.id,
        compositeTaskId: null,
        title,
        prompt,
        ...agent,
        // Empty: each repository's own default branch.
        baseBranch,
        branchName: branch,
        baseCommit: bases.get(first.id) ?? null,
      },
      now,
    );
    const run = await sessions.insertAgentTask(
      trx,
      core.adapter,
      {
        id: newId(core.now().getTime()),
        ownerId,
        unitTaskId: id,
        compositeTaskId: null,
        kind: "initial",
        prompt,
        ...agent,
        baseRemotes: repositories.map((r) => ({
          repositoryId: r.id,
          baseBranch: baseBranch || r.defaultBranch,
          branchName: branch,
          baseCommit: bases.get(r.id) ?? null,
        })),
      },
      newId(core.now().getTime()),
      now,
    );
    await branchHeads.insertBranchHeads(
      trx,
      [...bases].map(([repositoryId, baseCommit]) => ({ unitTaskId: id, repositoryId, branchName: branch, baseCommit, headCommit: baseCommit })),
      now,
    );
    await holdNewTaskSecrets(core, trx, { id, ownerId }, secrets, now);
    await recordChange(core, trx, { ownerId, workspaceId: group.workspaceId, id }, "created", now);
    // As stored: what a read after the commit would find, without the read.
    return { ...task, agentTasks: [run] };
  });
  // A task not made leaves no branch behind, so its name can be given again, and no secrets.
  const task = await made.catch(async (error: unknown) => {
    core.taskSecrets.drop(id);
    await dropTaskBranches(core, [...bases.keys()], branch);
    throw error;
  });
  core.taskChanges.notify(group.workspaceId);
  core.dispatch.queued(ownerId, agent.agentType);
  log.info(
    { task_id: id, kind: "unit", workspace_id: group.workspaceId, agent_type: agent.agentType, ...(secrets.values.size > 0 ? { secret_count: secrets.values.size, secrets_ttl_seconds: secrets.ttlSeconds } : {}) },
    "task created",
  );
  return task;
}

export interface CreateCompositeTaskInput {
  repositoryGroupId: string;
  prompt: string;
  title: string;
  /** Not given: the default agent. */
  planningAgentType: string | undefined;
  planningAgentModel: string;
  /** Not given: the planner's. */
  executionAgentType: string | undefined;
  executionAgentModel: string;
  baseBranch: string;
}

export async function createCompositeTask(core: Core, log: Logger, ownerId: string, input: CreateCompositeTaskInput): Promise<CompositeTask> {
  const v = new Violations();
  const prompt = readPrompt(v, "prompt", input.prompt, PROMPT_MAX);
  const title = readTitle(v, input.title, prompt);
  const planner = readAgent(v, "planning_agent_type", "planning_agent_model", input.planningAgentType, input.planningAgentModel);
  // The nodes run with the planner's agent unless told otherwise.
  const executor =
    input.executionAgentType === undefined
      ? { agentType: planner.agentType, agentModel: input.executionAgentModel.trim() || planner.agentModel }
      : readAgent(v, "execution_agent_type", "execution_agent_model", input.executionAgentType, input.executionAgentModel);
  v.text("execution_agent_model", executor.agentModel, { max: MODEL_MAX, singleLine: true });
  const baseBranch = readBranch(v, "base_branch", input.baseBranch);
  const { group, repositories } = await taskGroup(core, ownerId, input.repositoryGroupId, v);
  await fetchRepositories(core, repositories);

  const id = newId(core.now().getTime());
  const now = core.now();
  const task = await core.adapter.transaction(core.db, async (trx) => {
    const task = await store.insertCompositeTask(
      trx,
      {
        id,
        ownerId,
        workspaceId: group.workspaceId,
        repositoryGroupId: group.id,
        title,
        prompt,
        executionAgentType: executor.agentType,
        executionAgentModel: executor.agentModel,
        baseBranch,
      },
      now,
    );
    const run = await sessions.insertAgentTask(
      trx,
      core.adapter,
      { id: newId(core.now().getTime()), ownerId, unitTaskId: null, compositeTaskId: id, kind: "planning", prompt, ...planner, baseRemotes: [] },
      newId(core.now().getTime()),
      now,
    );
    await recordChange(core, trx, { ownerId, workspaceId: group.workspaceId, id }, "created", now);
    return { ...task, agentTasks: [run] };
  });
  core.taskChanges.notify(group.workspaceId);
  core.dispatch.queued(ownerId, planner.agentType);
  log.info({ task_id: id, kind: "composite", workspace_id: group.workspaceId, agent_type: planner.agentType }, "task created");
  return task;
}

async function loadTask(core: Core, ownerId: string, id: string): Promise<Task> {
  const task = await store.getTask(core.db, ownerId, id);
  if (task === undefined) throw notFound("task", id);
  return task;
}

export async function getTask(core: Core, ownerId: string, rawId: string): Promise<Task> {
  return loadTask(core, ownerId, readId(rawId));
}

export interface ListTasksInput {
  workspaceId: string;
  statuses: string[];
  /** Not given: both kinds. */
  kind: string | undefined;
  repositoryGroupId: string;
  query: string;
  pageSize: number;
  pageToken: string;
}

export async function listTasks(core: Core, ownerId: string, input: ListTasksInput): Promise<{ items: Task[]; nextPageToken: string }> {
  const v = new Violations();
  const workspaceId = v.id("workspace_id", input.workspaceId);
  const statuses = [...new Set(input.statuses)];
  for (const status of statuses) {
    if (!UNIT_STATUSES.includes(status as TaskStatus) && !COMPOSITE_STATUSES.includes(status as TaskStatus)) {
      v.add("statuses", `holds an unknown status (${status})`);
    }
  }
  let kind: TaskKind | undefined;
  if (input.kind === "unit" || input.kind === "composite") kind = input.kind;
  else if (input.kind !== undefined) v.add("kind", `is not a known task kind (${input.kind})`);
  const groupId = v.optionalId("repository_group_id", input.repositoryGroupId);
  const query = input.query.trim();
  v.text("query", query, { max: QUERY_MAX, singleLine: true });
  const scope = JSON.stringify(["tasks", workspaceId, [...statuses].sort(), kind ?? "", groupId ?? "", query.toLowerCase()]);
  const page = readPage(v, input.pageSize, input.pageToken, scope);
  v.throwIfAny();
  await getWorkspace(core, ownerId, workspaceId, "workspace_id");
  const tasks = await store.listTasks(
    core.db,
    {
      ownerId,
      workspaceId,
      statuses: statuses as TaskStatus[],
      kind,
      repositoryGroupId: groupId,
      query: query === "" ? undefined : query,
    },
    page,
  );
  return writePage(page, tasks);
}

/** What a status change does besides changing the status. */
interface Plan {
  to: TaskStatus;
  executionState: ExecutionState;
  /** End the runs that are queued or running (every move out of agent work does). */
  cancelRuns: boolean;
  /** Queue agent work in the same transaction. */
  queue?: (trx: Core["db"], task: Task, now: Date) => Promise<void>;
  /** Why, kept with the status (a reviewer's reason to reject). */
  reason?: string;
  /** A composite task's plan is approved by this move. */
  planApproved?: boolean;
}

function illegal(task: Task, operation: string, allowed: string): Error {
  return failedPrecondition(`task ${task.id} is ${task.status}; ${operation} needs a task that is ${allowed}`, {
    current_status: task.status,
  });
}

class MovedMeanwhile extends Error {}

/**
 * Applies a plan to a task atomically: the status moves only if it is still what the plan was
 * made from, so of two concurrent calls exactly one wins and the other is told the new status.
 */
async function transition(core: Core, log: Logger, ownerId: string, rawId: string, operation: string, plan: (task: Task) => Plan): Promise<Task> {
  const id = readId(rawId);
  const task = await loadTask(core, ownerId, id);
  const p = plan(task);
  const now = core.now();
  let cancelled: sessions.CancelledSession[] = [];
  const moved = await core.db
    .transaction()
    .execute(async (trx) => {
      const to = { status: p.to, executionState: p.executionState, reason: p.reason || null, planApproved: p.planApproved };
      // The sessions first, then the task: the order a claim and a report lock them in
      // (core/dispatch.ts), so that neither waits for the other in a cycle. A task that moved
      // meanwhile undoes the cancel with the rest.
      if (p.cancelRuns) cancelled = await sessions.cancelActiveSessions(trx, core.adapter, task.agentTasks.map((a) => a.id), `task ${p.to}`, now);
      if (!(await store.moveTask(trx, task, task.status, to, now))) throw new MovedMeanwhile();
      await p.queue?.(trx, task, now);
      await recordChange(core, trx, task, "updated", now);
      return true;
    })
    .catch((error: unknown) => {
      if (error instanceof MovedMeanwhile) return false;
      throw error;
    });
  if (!moved) {
    // Someone else moved it first; answer as if this call had come second.
    const current = await loadTask(core, ownerId, id);
    throw failedPrecondition(`task ${id} is ${current.status} now (it changed during ${operation}); reload it and try again`, {
      current_status: current.status,
    });
  }
  core.taskChanges.notify(task.workspaceId);
  runsCancelled(core, cancelled);
  // Both queueing moves (a retry, a new run with feedback) run the latest run's agent.
  if (p.queue !== undefined) core.dispatch.queued(task.ownerId, task.agentTasks[task.agentTasks.length - 1]!.agentType);
  log.info({ task_id: id, operation, from: task.status, to: p.to }, "task status changed");
  return loadTask(core, ownerId, id);
}

/** After runs were cancelled: their workers hear of it (a stop command) and have a slot free again, and their logs' readers end. */
function runsCancelled(core: Core, cancelled: sessions.CancelledSession[]): void {
  commandsQueued(core, cancelled.map((s) => s.workerId));
  for (const s of cancelled) {
    if (s.workerId !== null) core.dispatch.freed(s.workerId);
    // Readers of its log end their streams.
    core.logs.notify(s.id);
  }
}

/** A new session of the task's latest agent task: the next attempt. */
function queueRetry(core: Core): Plan["queue"] {
  return async (trx, task, now) => {
    const latest = task.agentTasks[task.agentTasks.length - 1]!;
    const attempt = Math.max(0, ...latest.sessions.map((s) => s.attempt)) + 1;
    await sessions.insertSession(
      trx,
      core.adapter,
      { id: newId(now.getTime()), ownerId: task.ownerId, agentTaskId: latest.id, attempt, agentType: latest.agentType, agentModel: latest.agentModel },
      now,
    );
  };
}

/** A new agent task (the next run) whose prompt is the last run's plus the feedback. */
function queueFeedback(core: Core, feedback: string): Plan["queue"] {
  return async (trx, task, now) => {
    const latest = task.agentTasks[task.agentTasks.length - 1]!;
    const unit = task.kind === "unit";
    await sessions.insertAgentTask(
      trx,
      core.adapter,
      {
        id: newId(now.getTime()),
        ownerId: task.ownerId,
        unitTaskId: unit ? task.id : null,
        compositeTaskId: unit ? null : task.id,
        kind: unit ? "request_changes" : "planning",
        prompt: `${latest.prompt}\n\n---\nReviewer feedback:\n${feedback}`,
        agentType: latest.agentType,
        agentModel: latest.agentModel,
        // The same branches: the next run continues the last one's work.
        baseRemotes: unit ? await sessions.baseRemotesOf(trx, latest.id) : [],
      },
      newId(now.getTime()),
      now,
    );
  };
}

export async function updateTaskStatus(core: Core, log: Logger, ownerId: string, input: { id: string; status: string | undefined }): Promise<Task> {
  const to = input.status as TaskStatus;
  if (!UNIT_STATUSES.includes(to) && !COMPOSITE_STATUSES.includes(to)) {
    const v = new Violations();
    v.add("status", input.status === undefined ? "is required" : `is not a known status (${input.status})`);
    v.throwIfAny();
  }
  return transition(core, log, ownerId, input.id, "UpdateTaskStatus", (task) => {
    if (task.status === to) throw failedPrecondition(`task ${task.id} is already ${to}`, { current_status: task.status });
    if (!canMove(task.kind, task.status, to)) {
      const next = TRANSITIONS[task.kind][task.status] ?? [];
      throw failedPrecondition(
        `task ${task.id} is ${task.status}; a ${task.kind} task cannot move from ${task.status} to ${to}` +
          (next.length > 0 ? ` (it can move to ${next.join(", ")})` : " (it is final)"),
        { current_status: task.status },
      );
    }
    if (to === "in_progress" || to === "planning") {
      const rpc = task.status === "failed" || task.status === "cancelled" ? "RetryTask" : task.status === "pending_approval" && to === "in_progress" ? "ApproveTask" : "RequestChanges";
      throw failedPrecondition(`moving task ${task.id} from ${task.status} to ${to} starts agent work: use ${rpc}`, { current_status: task.status });
    }
    if (AFTER_RUN_STATUSES.includes(to) && task.executionState !== "idle") {
      // Reached only by a run that finished: a succeeded run moves the task there itself.
      throw failedPrecondition(
        `task ${task.id} is ${task.status} and its agent run is ${task.executionState}; ${to} means a run finished, so wait for ` +
          `the worker to report it (a succeeded run moves the task to ${RUN_END[task.kind].succeeded} itself), or move the task ` +
          "to cancelled, which ends the run",
        { current_status: task.status, execution_state: task.executionState },
      );
    }
    return { to, executionState: "idle", cancelRuns: true };
  });
}

export async function approveTask(core: Core, log: Logger, ownerId: string, rawId: string): Promise<Task> {
  // A unit task in review delivers its work upstream first, outside any transaction
  // (core/delivery.ts): a failure throws, and the task stays in review.
  const current = await loadTask(core, ownerId, readId(rawId));
  if (current.kind === "unit" && current.status === "in_review") await deliverTask(core, log, current);
  return transition(core, log, ownerId, rawId, "ApproveTask", (task) => {
    if (task.kind === "unit") {
      if (task.status !== "in_review") throw illegal(task, "ApproveTask", "in_review");
      return { to: "approved", executionState: "idle", cancelRuns: true };
    }
    if (task.status !== "pending_approval") throw illegal(task, "ApproveTask", "pending_approval");
    // The plan's nodes start as unit tasks when plan execution comes (a later issue).
    return { to: "in_progress", executionState: "idle", cancelRuns: true, planApproved: true };
  });
}

export async function rejectTask(core: Core, log: Logger, ownerId: string, input: { id: string; reason: string }): Promise<Task> {
  const reason = input.reason.trim();
  const v = new Violations();
  v.text("reason", reason, { max: REASON_MAX });
  v.throwIfAny();
  return transition(core, log, ownerId, input.id, "RejectTask", (t) => {
    const from = t.kind === "unit" ? "in_review" : "pending_approval";
    if (t.status !== from) throw illegal(t, "RejectTask", from);
    return { to: "rejected", executionState: "idle", cancelRuns: true, reason };
  });
}

export async function requestChanges(core: Core, log: Logger, ownerId: string, input: { id: string; feedback: string }): Promise<Task> {
  const v = new Violations();
  const feedback = readPrompt(v, "feedback", input.feedback, FEEDBACK_MAX);
  v.throwIfAny();
  return transition(core, log, ownerId, input.id, "RequestChanges", (task) => {
    if (task.kind === "unit") {
      if (task.status !== "in_review") throw illegal(task, "RequestChanges", "in_review");
      return { to: "in_progress", executionState: "queued", cancelRuns: true, queue: queueFeedback(core, feedback) };
    }
    if (task.status !== "pending_approval") throw illegal(task, "RequestChanges", "pending_approval");
    return { to: "planning", executionState: "queued", cancelRuns: true, queue: queueFeedback(core, feedback) };
  });
}

export async function retryTask(core: Core, log: Logger, ownerId: string, rawId: string): Promise<Task> {
  return transition(core, log, ownerId, rawId, "RetryTask", (task) => {
    if (task.status !== "failed" && task.status !== "cancelled") throw illegal(task, "RetryTask", "failed or cancelled");
    if (task.kind === "unit") return { to: "in_progress", executionState: "queued", cancelRuns: true, queue: queueRetry(core) };
    // A composite task whose plan was never approved plans again; one that was executing goes
    // back to execution, whose scheduler (a later issue) restarts the failed nodes.
    return task.planApprovedAt !== null
      ? { to: "in_progress", executionState: "idle", cancelRuns: true }
      : { to: "planning", executionState: "queued", cancelRuns: true, queue: queueRetry(core) };
  });
}

/** Cancels what runs for the task, then deletes it with its runs. */
export async function deleteTask(core: Core, log: Logger, ownerId: string, rawId: string): Promise<void> {
  const id = readId(rawId);
  const task = await loadTask(core, ownerId, id);
  // Its branches in the server's clones go with it (upstream is untouched), which frees their name.
  const latest = task.agentTasks[task.agentTasks.length - 1];
  const branches = task.kind === "unit" && latest !== undefined ? await sessions.remotesOf(core.db, latest.id) : [];
  const now = core.now();
  const deleted = await core.adapter.transaction(core.db, async (trx) => {
    const cancelled = await sessions.cancelActiveSessions(trx, core.adapter, task.agentTasks.map((a) => a.id), "task deleted", now);
    if (!(await store.deleteTask(trx, task))) return undefined;
    await recordChange(core, trx, task, "deleted", now);
    return cancelled;
  });
  if (deleted === undefined) throw notFound("task", id);
  core.taskChanges.notify(task.workspaceId);
  runsCancelled(core, deleted);
  for (const b of branches) await dropTaskBranches(core, [b.repositoryId], b.branchName);
  log.info({ task_id: id, cancelled_sessions: deleted.length }, "task deleted");
}

function watchCursorProblem(cursor: string): string | undefined {
  return /^\d{1,15}$/.test(cursor) ? undefined : "is not a cursor this server issued";
}

/**
 * Refuses a cursor past the workspace's newest change: no stream of this workspace sent it (it
 * may come from another database, or be made up), and following from it would wait silently,
 * then skip every change up to it. InvalidArgument rather than OutOfRange: OutOfRange says the
 * same request may succeed once the state moves on, but that later success would be the skip;
 * the client must start again instead ("" for now, "0" for every change). A cursor equal to the
 * newest is valid: it waits for the next change. The newest can only grow, so a cursor a stream
 * sent, read on any replica, always passes.
 */
async function checkCursorIssued(core: Core, workspaceId: string, cursor: number): Promise<void> {
  const newest = await taskEvents.latestTaskEventId(core.db, workspaceId);
  if (cursor > newest) {
    throw invalidArgument([
      {
        field: "cursor",
        description: `is past this workspace's newest change (${newest}), so no stream of it sent that cursor; start again with "" (from now) or "0" (every change)`,
      },
    ]);
  }
}

/**
 * A change (its id is the cursor to resume after), or a keep-alive. A change from the shared
 * feed is the same object for every stream, so the API can encode it once for all of them.
 */
export type WatchItem = { change: FeedItem } | { keepAlive: true };

/**
 * Follows a workspace's task changes from the cursor (or from now), then live, from the
 * workspace's shared feed (see task-feed.ts); a cursor older than the feed's buffer catches up
 * from the database first. Joins the feed before reading, so a change read between a read and
 * the wait still wakes it.
 */
export async function* watchTasks(
  core: Core,
  ownerId: string,
  input: { workspaceId: string; cursor: string },
  signal: AbortSignal,
): AsyncGenerator<WatchItem> {
  const v = new Violations();
  const workspaceId = v.id("workspace_id", input.workspaceId);
  const cursor = input.cursor.trim();
  if (cursor !== "") {
    const problem = watchCursorProblem(cursor);
    if (problem !== undefined) v.add("cursor", problem);
  }
  v.throwIfAny();
  await getWorkspace(core, ownerId, workspaceId, "workspace_id");
  const start = cursor === "" ? undefined : Number(cursor);
  if (start !== undefined) await checkCursorIssued(core, workspaceId, start);

  let wake: (() => void) | undefined;
  let pending = false;
  const { feed, leave } = await core.taskFeeds.join(ownerId, workspaceId, () => {
    pending = true;
    wake?.();
  });
  try {
    let after = start ?? (await taskEvents.latestTaskEventId(core.db, workspaceId));
    // Keep-alives are paced by real timers, so they are timed by the monotonic clock, not core.now().
    // Never sent yet: with nothing to replay, the first message is a keep-alive, at once, so a
    // client can tell a live stream (its response headers come with it) from a stuck one.
    let lastSent = -Infinity;
    while (!signal.aborted) {
      pending = false;
      const items = await feed.itemsAfter(after);
      for (const item of items) {
        yield { change: item };
        after = item.id;
        lastSent = performance.now();
      }
      if (items.length > 0 || pending) continue;
      const keepAliveIn = core.streams.keepAliveMs - (performance.now() - lastSent);
      if (keepAliveIn <= 0) {
        yield { keepAlive: true };
        lastSent = performance.now();
        continue;
      }
      // No poll of its own: the feed polls, once for all its streams, and wakes them.
      await waitForWake(signal, keepAliveIn, (w) => (wake = w));
    }
  } finally {
    leave();
  }
}
