// Tasks to protobuf messages, and protobuf enums to the lower-case names core keeps.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AgentType, ExecutionState, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import {
  AgentSessionSchema,
  AgentTaskKind,
  AgentTaskSchema,
  CompositeTaskSchema,
  TaskSchema,
  UnitTaskSchema,
  type AgentSession,
  type AgentTask,
  type CompositeTask,
  type Task,
  type UnitTask,
} from "../../gen/foreman/v1/task_pb.js";
import type * as core from "../core/tasks.js";

type ProtoEnum = Record<string, string | number>;

/** An enum value as core's name for it ("IN_PROGRESS" → "in_progress"); an unknown number stays a number. */
export function enumName(e: ProtoEnum, value: number): string {
  const name = e[value];
  return typeof name === "string" ? name.toLowerCase() : String(value);
}

/** Core's name back to the enum value; UNSPECIFIED (0) when it has none. */
export function enumValue(e: ProtoEnum, name: string): number {
  const value = e[name.toUpperCase()];
  return typeof value === "number" ? value : 0;
}

function sessionToProto(s: core.AgentSession): AgentSession {
  return create(AgentSessionSchema, {
    id: s.id,
    agentTaskId: s.agentTaskId,
    attempt: s.attempt,
    state: enumValue(SessionState, s.state),
    workerId: s.workerId ?? "",
    agentType: enumValue(AgentType, s.agentType),
    agentModel: s.agentModel,
    createTime: timestampFromDate(s.createdAt),
    ...(s.startedAt ? { startTime: timestampFromDate(s.startedAt) } : {}),
    ...(s.endedAt ? { endTime: timestampFromDate(s.endedAt) } : {}),
    ...(s.exitCode !== null ? { exitCode: s.exitCode } : {}),
    errorMessage: s.errorMessage ?? "",
    lastLogSequence: s.lastLogSequence,
  });
}

function agentTaskToProto(a: core.AgentTask): AgentTask {
  return create(AgentTaskSchema, {
    id: a.id,
    kind: enumValue(AgentTaskKind, a.kind),
    prompt: a.prompt,
    agentType: enumValue(AgentType, a.agentType),
    agentModel: a.agentModel,
    sessions: a.sessions.map(sessionToProto),
    createTime: timestampFromDate(a.createdAt),
  });
}

function common(t: core.Task) {
  return {
    id: t.id,
    workspaceId: t.workspaceId,
    repositoryGroupId: t.repositoryGroupId,
    title: t.title,
    prompt: t.prompt,
    status: enumValue(TaskStatus, t.status),
    executionState: enumValue(ExecutionState, t.executionState),
    baseBranch: t.baseBranch,
    statusReason: t.statusReason ?? "",
    createTime: timestampFromDate(t.createdAt),
    updateTime: timestampFromDate(t.updatedAt),
  };
}

export function unitTaskToProto(t: core.UnitTask): UnitTask {
  return create(UnitTaskSchema, {
    ...common(t),
    agentType: enumValue(AgentType, t.agentType),
    agentModel: t.agentModel,
    branchName: t.branchName,
    baseCommit: t.baseCommit ?? "",
    endCommit: t.endCommit ?? "",
    linkedPrUrl: t.linkedPrUrl ?? "",
    agentTasks: t.agentTasks.map(agentTaskToProto),
    compositeTaskId: t.compositeTaskId ?? "",
  });
}

export function compositeTaskToProto(t: core.CompositeTask): CompositeTask {
  // The latest planning run: after RequestChanges, the one that re-plans with the feedback.
  const planning = t.agentTasks[t.agentTasks.length - 1];
  return create(CompositeTaskSchema, {
    ...common(t),
    ...(planning ? { planningAgentTask: agentTaskToProto(planning) } : {}),
    executionAgentType: enumValue(AgentType, t.executionAgentType),
    executionAgentModel: t.executionAgentModel,
    ...(t.planApprovedAt ? { planApproveTime: timestampFromDate(t.planApprovedAt) } : {}),
  });
}

export function taskToProto(t: core.Task): Task {
  return create(TaskSchema, {
    task: t.kind === "unit" ? { case: "unitTask", value: unitTaskToProto(t) } : { case: "compositeTask", value: compositeTaskToProto(t) },
  });
}
