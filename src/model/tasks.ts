// The domain's task types: what a task, an agent task and a session are, their states, the
// state machine, and where tasks and sessions start. A leaf module below core and store: it imports
// nothing, so store/ (which builds these from rows and writes the states named here), core/ and
// api/ can all use it without an arrow running back up.

export type TaskKind = "unit" | "composite";
export type TaskStatus =
  | "in_progress"
  | "in_review"
  | "approved"
  | "pr_open"
  | "done"
  | "rejected"
  | "failed"
  | "cancelled"
  | "planning"
  | "pending_approval";
export type ExecutionState = "idle" | "queued" | "assigned" | "running";
export type AgentTaskKind = "initial" | "request_changes" | "auto_fix" | "planning";
export type SessionState = "queued" | "assigned" | "running" | "succeeded" | "failed" | "cancelled" | "lost";
export type TaskChangeType = "created" | "updated" | "deleted";

export const UNIT_STATUSES: TaskStatus[] = ["in_progress", "in_review", "approved", "pr_open", "done", "rejected", "failed", "cancelled"];
export const COMPOSITE_STATUSES: TaskStatus[] = ["planning", "pending_approval", "in_progress", "done", "rejected", "failed", "cancelled"];

/**
 * The one state machine: for each kind, the statuses a task may move to from each status.
 * Moves into in_progress or planning queue agent work, so only RetryTask, RequestChanges and
 * (for a composite plan) ApproveTask make them; UpdateTaskStatus makes the rest.
 */
export const TRANSITIONS: Record<TaskKind, Partial<Record<TaskStatus, TaskStatus[]>>> = {
  unit: {
    in_progress: ["in_review", "failed", "cancelled"],
    in_review: ["approved", "rejected", "pr_open", "in_progress", "cancelled"],
    approved: ["pr_open", "done", "cancelled"],
    pr_open: ["done", "rejected"],
    failed: ["in_progress"],
    cancelled: ["in_progress"],
    done: [],
    rejected: [],
  },
  composite: {
    planning: ["pending_approval", "failed", "cancelled"],
    pending_approval: ["in_progress", "rejected", "planning", "cancelled"],
    in_progress: ["done", "failed", "cancelled"],
    failed: ["planning", "in_progress"],
    cancelled: ["planning", "in_progress"],
    done: [],
    rejected: [],
  },
};

export function canMove(kind: TaskKind, from: TaskStatus, to: TaskStatus): boolean {
  return TRANSITIONS[kind][from]?.includes(to) ?? false;
}

/** Where a new task starts: its first agent run is queued with it (a composite task's plans). */
export const TASK_START: Record<TaskKind, { status: TaskStatus; executionState: ExecutionState }> = {
  unit: { status: "in_progress", executionState: "queued" },
  composite: { status: "planning", executionState: "queued" },
};

/** A new session (a run's first attempt, or a retry) waits for a worker. */
export const SESSION_START: SessionState = "queued";

/** Sessions in these states hold or wait for a worker; cancelling a task ends them. */
export const ACTIVE_SESSION_STATES: SessionState[] = ["queued", "assigned", "running"];

/**
 * Cancelling a session: an active one ends as cancelled and drops its lease in the same write,
 * so a worker still running it can no longer report for it.
 */
export const SESSION_CANCEL: { from: SessionState[]; to: SessionState; dropsLease: boolean } = {
  from: ACTIVE_SESSION_STATES,
  to: "cancelled",
  dropsLease: true,
};

/** Sessions in these states hold a lease: a worker claimed them and has not ended them. */
export const LEASED_SESSION_STATES: SessionState[] = ["assigned", "running"];

/** A claim (GetTask): a queued session goes to one worker, with a lease; its task's run is then assigned. */
export const SESSION_CLAIM: { from: SessionState; to: SessionState; executionState: ExecutionState } = {
  from: "queued",
  to: "assigned",
  executionState: "assigned",
};

/** What a worker reports about a session it holds (ReportStatus). */
export type ReportedState = "running" | "succeeded" | "failed" | "cancelled";

/**
 * The states each report may follow, whether it ends the session, and the execution state its
 * task's run then has. An end may follow the claim directly: SUCCEEDED (or FAILED, CANCELLED)
 * without RUNNING first is allowed, because a worker may fail before the agent starts (a clone
 * that fails) or finish before its RUNNING report got through, and refusing the end would leave
 * the session held until its lease ran out. RUNNING after an end is refused: the lease ended with
 * the session, and only a repeat of the report that ended it is accepted (idempotence).
 */
export const SESSION_REPORT: Record<ReportedState, { from: SessionState[]; to: SessionState; ends: boolean; executionState: ExecutionState }> = {
  running: { from: ["assigned"], to: "running", ends: false, executionState: "running" },
  succeeded: { from: LEASED_SESSION_STATES, to: "succeeded", ends: true, executionState: "idle" },
  failed: { from: LEASED_SESSION_STATES, to: "failed", ends: true, executionState: "idle" },
  cancelled: { from: LEASED_SESSION_STATES, to: "cancelled", ends: true, executionState: "idle" },
};

/**
 * Where a task goes when its run ends, by kind and how the run ended; undefined keeps the
 * status (a cancelled run leaves the task in its work status with nothing running, for the
 * user to move on). A composite task's succeeded planning run waits for the plan's approval;
 * reading the plan it hands back is a later issue's.
 */
export const RUN_END: Record<TaskKind, Record<"succeeded" | "failed" | "cancelled", TaskStatus | undefined>> = {
  unit: { succeeded: "in_review", failed: "failed", cancelled: undefined },
  composite: { succeeded: "pending_approval", failed: "failed", cancelled: undefined },
};

/**
 * Statuses that say a run finished: UpdateTaskStatus may not move a task into them while its
 * run is queued, assigned or running (a finished run moves it there itself).
 */
export const AFTER_RUN_STATUSES: TaskStatus[] = ["in_review", "pending_approval", "approved"];

/**
 * Losing a session: its lease expired or its worker went away. It ends as lost and drops its
 * lease in the same write that queues the next attempt, so the worker that held it can no
 * longer report for it (fencing).
 */
export const SESSION_LOSE: { from: SessionState[]; to: SessionState } = { from: LEASED_SESSION_STATES, to: "lost" };

/**
 * After a lost session: while the run has attempts left (FOREMAN_MAX_ATTEMPTS), its next attempt
 * is queued and the task's run is queued again; the last attempt lost fails the task as a
 * failed run does (RUN_END), with the reason recorded.
 */
export const RUN_REQUEUE: { executionState: ExecutionState } = { executionState: "queued" };
/**
 * Returning a session its worker had not started (a draining or unregistering worker's): it
 * is queued again as the same attempt, its lease revoked and its worker cleared, and its
 * task's run is queued again. It counts as no attempt: the agent never ran.
 */
export const SESSION_RETURN: { from: SessionState; to: SessionState; executionState: ExecutionState } = {
  from: "assigned",
  to: "queued",
  executionState: "queued",
};
export const RUN_LOST_FOR_GOOD: { executionState: ExecutionState; end: "failed" } = { executionState: "idle", end: "failed" };

export interface AgentSession {
  id: string;
  agentTaskId: string;
  attempt: number;
  state: SessionState;
  workerId: string | null;
  agentType: string;
  agentModel: string;
  createdAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
  exitCode: number | null;
  errorMessage: string | null;
  lastLogSequence: number;
}

export interface AgentTask {
  id: string;
  kind: AgentTaskKind;
  prompt: string;
  agentType: string;
  agentModel: string;
  createdAt: Date;
  sessions: AgentSession[];
}

export interface TaskCommon {
  id: string;
  ownerId: string;
  workspaceId: string;
  repositoryGroupId: string;
  title: string;
  prompt: string;
  status: TaskStatus;
  executionState: ExecutionState;
  baseBranch: string;
  /** Why the task reached its status, e.g. a reviewer's reason to reject it. */
  statusReason: string | null;
  createdAt: Date;
  updatedAt: Date;
  /** Oldest first: the unit task's runs, or the composite task's planning runs. */
  agentTasks: AgentTask[];
}

export interface UnitTask extends TaskCommon {
  kind: "unit";
  agentType: string;
  agentModel: string;
  branchName: string;
  baseCommit: string | null;
  endCommit: string | null;
  linkedPrUrl: string | null;
  compositeTaskId: string | null;
}

export interface CompositeTask extends TaskCommon {
  kind: "composite";
  executionAgentType: string;
  executionAgentModel: string;
  /** Set once the plan was approved: a retry then resumes execution instead of planning. */
  planApprovedAt: Date | null;
}

export type Task = UnitTask | CompositeTask;
