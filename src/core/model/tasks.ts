// The domain's task types: what a task, an agent task and a session are, and their states.
// A leaf module that core owns: it imports nothing, so store/ (which builds these from rows),
// core/ and api/ can all use it without an arrow running back up.

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

/** Sessions in these states hold or wait for a worker; cancelling a task ends them. */
export const ACTIVE_SESSION_STATES: SessionState[] = ["queued", "assigned", "running"];

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
