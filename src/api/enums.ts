// Protobuf enums and the lower-case names core keeps for them ("in_progress" for
// TASK_STATUS_IN_PROGRESS), each from one table, so a name core gains without an enum value
// fails the typecheck.
//
// What a request's enum field means to core:
//  - UNSPECIFIED (0) is "not given" and reads as undefined; core decides what that is for the
//    field (a default, any, or "is required").
//  - A number the table lacks reads as its digits ("99"), a name core does not know: core
//    refuses it as a violation naming the field, together with the request's other violations.
//  - In a repeated field every element was given, so there UNSPECIFIED is refused like an
//    unknown number: it reads as "unspecified".
import { AgentType, ExecutionState, SessionState, TaskKind, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { VcsProviderType } from "../../gen/foreman/v1/repository_pb.js";
import { WorkerStatus } from "../../gen/foreman/v1/worker_pb.js";
import { AgentTaskKind, TaskChangeType } from "../../gen/foreman/v1/task_pb.js";
import { TodoItemSource, TodoItemStatus, TodoItemType } from "../../gen/foreman/v1/todo_pb.js";
import type { AgentTypeName } from "../core/agents.js";
import { invalidArgument } from "../core/errors.js";
import type * as tasks from "../model/tasks.js";
import type * as repos from "../core/repositories.js";
import type * as todoItems from "../core/todo-items.js";

export class EnumNames<N extends string, E extends number> {
  private readonly names = new Map<number, N>();

  constructor(private readonly values: Record<N, E>) {
    for (const name of Object.keys(values) as N[]) this.names.set(values[name], name);
  }

  /** A singular field: undefined when not given, else core's name (an unknown number as its digits). */
  read(value: E): string | undefined {
    return value === 0 ? undefined : (this.names.get(value) ?? String(value));
  }

  /** A repeated field: each element's name, UNSPECIFIED as "unspecified" and an unknown number as its digits. */
  readAll(values: readonly E[]): string[] {
    return values.map((value) => (value === 0 ? "unspecified" : (this.names.get(value) ?? String(value))));
  }

  /**
   * A singular field core does not check: an unknown number is refused here, before anything
   * else of the request, as an InvalidArgument naming the field.
   */
  readKnown(value: E, field: string, what: string): N | undefined {
    if (value === 0) return undefined;
    const name = this.names.get(value);
    if (name === undefined) throw invalidArgument([{ field, description: `${value} is not a known ${what}` }]);
    return name;
  }

  /** Core's name as the enum value; `fallback` (UNSPECIFIED unless given) for a name the table lacks. */
  value(name: string, fallback = 0 as E): E {
    return (this.values as Record<string, E>)[name] ?? fallback;
  }
}

export const AGENT_TYPES = new EnumNames<AgentTypeName, AgentType>({
  claude_code: AgentType.CLAUDE_CODE,
  codex: AgentType.CODEX,
  gemini_cli: AgentType.GEMINI_CLI,
  opencode: AgentType.OPENCODE,
  aider: AgentType.AIDER,
  amp: AgentType.AMP,
  command: AgentType.COMMAND,
});

export const TASK_STATUSES = new EnumNames<tasks.TaskStatus, TaskStatus>({
  in_progress: TaskStatus.IN_PROGRESS,
  in_review: TaskStatus.IN_REVIEW,
  approved: TaskStatus.APPROVED,
  pr_open: TaskStatus.PR_OPEN,
  done: TaskStatus.DONE,
  rejected: TaskStatus.REJECTED,
  failed: TaskStatus.FAILED,
  cancelled: TaskStatus.CANCELLED,
  planning: TaskStatus.PLANNING,
  pending_approval: TaskStatus.PENDING_APPROVAL,
});

export const TASK_KINDS = new EnumNames<tasks.TaskKind, TaskKind>({ unit: TaskKind.UNIT, composite: TaskKind.COMPOSITE });

export const EXECUTION_STATES = new EnumNames<tasks.ExecutionState, ExecutionState>({
  idle: ExecutionState.IDLE,
  queued: ExecutionState.QUEUED,
  assigned: ExecutionState.ASSIGNED,
  running: ExecutionState.RUNNING,
});

export const SESSION_STATES = new EnumNames<tasks.SessionState, SessionState>({
  queued: SessionState.QUEUED,
  assigned: SessionState.ASSIGNED,
  running: SessionState.RUNNING,
  succeeded: SessionState.SUCCEEDED,
  failed: SessionState.FAILED,
  cancelled: SessionState.CANCELLED,
  lost: SessionState.LOST,
});

export const AGENT_TASK_KINDS = new EnumNames<tasks.AgentTaskKind, AgentTaskKind>({
  initial: AgentTaskKind.INITIAL,
  request_changes: AgentTaskKind.REQUEST_CHANGES,
  auto_fix: AgentTaskKind.AUTO_FIX,
  planning: AgentTaskKind.PLANNING,
});

export const TASK_CHANGE_TYPES = new EnumNames<tasks.TaskChangeType, TaskChangeType>({
  created: TaskChangeType.CREATED,
  updated: TaskChangeType.UPDATED,
  deleted: TaskChangeType.DELETED,
});

export const VCS_PROVIDERS = new EnumNames<repos.ProviderName, VcsProviderType>({
  github: VcsProviderType.GITHUB,
  gitlab: VcsProviderType.GITLAB,
  bitbucket: VcsProviderType.BITBUCKET,
  generic: VcsProviderType.GENERIC,
});

export const TODO_ITEM_STATUSES = new EnumNames<todoItems.TodoItemStatus, TodoItemStatus>({
  pending: TodoItemStatus.PENDING,
  in_progress: TodoItemStatus.IN_PROGRESS,
  done: TodoItemStatus.DONE,
  dismissed: TodoItemStatus.DISMISSED,
});

export const TODO_ITEM_TYPES = new EnumNames<todoItems.TodoItemType, TodoItemType>({
  issue_triage: TodoItemType.ISSUE_TRIAGE,
  pr_review: TodoItemType.PR_REVIEW,
});

export const TODO_ITEM_SOURCES = new EnumNames<todoItems.TodoItemSource, TodoItemSource>({
  auto: TodoItemSource.AUTO,
  manual: TodoItemSource.MANUAL,
});

/**
 * What a worker says it is doing in a heartbeat: UNHEALTHY and UNREGISTERED are the server's
 * to say (LISTED_WORKER_STATUSES), so this table lacks them and a heartbeat sending them is refused.
 */
export const WORKER_STATUSES = new EnumNames<"idle" | "busy" | "draining", WorkerStatus>({
  idle: WorkerStatus.IDLE,
  busy: WorkerStatus.BUSY,
  draining: WorkerStatus.DRAINING,
});

/** A worker's status as ListWorkers shows it: the stored one, active split by whether it holds work. */
export const LISTED_WORKER_STATUSES = new EnumNames<"idle" | "busy" | "draining" | "unhealthy" | "unregistered", WorkerStatus>({
  idle: WorkerStatus.IDLE,
  busy: WorkerStatus.BUSY,
  draining: WorkerStatus.DRAINING,
  unhealthy: WorkerStatus.UNHEALTHY,
  unregistered: WorkerStatus.UNREGISTERED,
});
