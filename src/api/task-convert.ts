// Tasks to protobuf messages.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  AgentSessionSchema,
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
import { AGENT_TASK_KINDS, AGENT_TYPES, EXECUTION_STATES, SESSION_STATES, TASK_STATUSES } from "./enums.js";

export function sessionToProto(s: core.AgentSession): AgentSession {
  return create(AgentSessionSchema, {
    id: s.id,
    agentTaskId: s.agentTaskId,
    attempt: s.attempt,
    state: SESSION_STATES.value(s.state),
    workerId: s.workerId ?? "",
    agentType: AGENT_TYPES.value(s.agentType),
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
    kind: AGENT_TASK_KINDS.value(a.kind),
    prompt: a.prompt,
    agentType: AGENT_TYPES.value(a.agentType),
    agentModel: a.agentModel,
    sessions: a.sessions.map(sessionToProto),
    createTime: timestampFromDate(a.createdAt),
  });
}

/** `waitingReason`: why its queued run has no worker ("" for none; core/waiting-reasons.ts). */
function common(t: core.Task, waitingReason: string) {
  return {
    id: t.id,
    workspaceId: t.workspaceId,
    repositoryGroupId: t.repositoryGroupId,
    title: t.title,
    prompt: t.prompt,
    status: TASK_STATUSES.value(t.status),
    executionState: EXECUTION_STATES.value(t.executionState),
    baseBranch: t.baseBranch,
    statusReason: t.statusReason ?? "",
    waitingReason,
    createTime: timestampFromDate(t.createdAt),
    updateTime: timestampFromDate(t.updatedAt),
  };
}

export function unitTaskToProto(t: core.UnitTask, waitingReason: string): UnitTask {
  return create(UnitTaskSchema, {
    ...common(t, waitingReason),
    agentType: AGENT_TYPES.value(t.agentType),
    agentModel: t.agentModel,
    branchName: t.branchName,
    baseCommit: t.baseCommit ?? "",
    endCommit: t.endCommit ?? "",
    linkedPrUrl: t.linkedPrUrl ?? "",
    agentTasks: t.agentTasks.map(agentTaskToProto),
    compositeTaskId: t.compositeTaskId ?? "",
  });
}

export function compositeTaskToProto(t: core.CompositeTask, waitingReason: string): CompositeTask {
  // The latest planning run: after RequestChanges, the one that re-plans with the feedback.
  const planning = t.agentTasks[t.agentTasks.length - 1];
  return create(CompositeTaskSchema, {
    ...common(t, waitingReason),
    ...(planning ? { planningAgentTask: agentTaskToProto(planning) } : {}),
    executionAgentType: AGENT_TYPES.value(t.executionAgentType),
    executionAgentModel: t.executionAgentModel,
    ...(t.planApprovedAt ? { planApproveTime: timestampFromDate(t.planApprovedAt) } : {}),
  });
}

export function taskToProto(t: core.Task, waitingReason: string): Task {
  return create(TaskSchema, {
    task:
      t.kind === "unit"
        ? { case: "unitTask", value: unitTaskToProto(t, waitingReason) }
        : { case: "compositeTask", value: compositeTaskToProto(t, waitingReason) },
  });
}
