// The one enum ⇄ name converter: what UNSPECIFIED and an unknown number read as, and that each
// table names every value its protobuf enum has.
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { AgentType, ExecutionState, SessionState, TaskKind, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { VcsProviderType } from "../../gen/foreman/v1/repository_pb.js";
import { AgentTaskKind, TaskChangeType } from "../../gen/foreman/v1/task_pb.js";
import { TodoItemSource, TodoItemStatus, TodoItemType } from "../../gen/foreman/v1/todo_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { WorkerStatus } from "../../gen/foreman/v1/worker_pb.js";
import * as enums from "../../src/api/enums.js";

describe("EnumNames", () => {
  it("reads UNSPECIFIED as not given, a known value as core's name, an unknown number as its digits", () => {
    expect(enums.TASK_STATUSES.read(TaskStatus.UNSPECIFIED)).toBeUndefined();
    expect(enums.TASK_STATUSES.read(TaskStatus.PENDING_APPROVAL)).toBe("pending_approval");
    expect(enums.TASK_STATUSES.read(99 as TaskStatus)).toBe("99");
  });

  it("reads UNSPECIFIED in a repeated field as a value core refuses", () => {
    expect(enums.AGENT_TYPES.readAll([AgentType.CODEX, AgentType.UNSPECIFIED, 42 as AgentType])).toEqual(["codex", "unspecified", "42"]);
  });

  it("refuses an unknown number itself where core does not check the name", () => {
    expect(enums.VCS_PROVIDERS.readKnown(VcsProviderType.UNSPECIFIED, "vcs_provider_type", "provider")).toBeUndefined();
    expect(enums.VCS_PROVIDERS.readKnown(VcsProviderType.GITLAB, "vcs_provider_type", "provider")).toBe("gitlab");
    let error: unknown;
    try {
      enums.VCS_PROVIDERS.readKnown(99 as VcsProviderType, "vcs_provider_type", "provider");
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
    expect((error as ConnectError).rawMessage).toBe("vcs_provider_type: 99 is not a known provider");
    expect((error as ConnectError).findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field)).toEqual(["vcs_provider_type"]);
  });

  it("writes core's name as its value, and a name the table lacks as UNSPECIFIED or the fallback", () => {
    expect(enums.SESSION_STATES.value("lost")).toBe(SessionState.LOST);
    expect(enums.SESSION_STATES.value("paused")).toBe(SessionState.UNSPECIFIED);
    expect(enums.VCS_PROVIDERS.value("sourcehut", VcsProviderType.GENERIC)).toBe(VcsProviderType.GENERIC);
  });

  it("names in a heartbeat only the statuses a worker may report of itself", () => {
    expect(enums.WORKER_STATUSES.read(WorkerStatus.DRAINING)).toBe("draining");
    expect(enums.WORKER_STATUSES.value("unhealthy" as never)).toBe(WorkerStatus.UNSPECIFIED);
  });

  it.each([
    ["AGENT_TYPES", enums.AGENT_TYPES, AgentType],
    ["TASK_STATUSES", enums.TASK_STATUSES, TaskStatus],
    ["TASK_KINDS", enums.TASK_KINDS, TaskKind],
    ["EXECUTION_STATES", enums.EXECUTION_STATES, ExecutionState],
    ["SESSION_STATES", enums.SESSION_STATES, SessionState],
    ["AGENT_TASK_KINDS", enums.AGENT_TASK_KINDS, AgentTaskKind],
    ["TASK_CHANGE_TYPES", enums.TASK_CHANGE_TYPES, TaskChangeType],
    ["VCS_PROVIDERS", enums.VCS_PROVIDERS, VcsProviderType],
    ["TODO_ITEM_STATUSES", enums.TODO_ITEM_STATUSES, TodoItemStatus],
    ["TODO_ITEM_TYPES", enums.TODO_ITEM_TYPES, TodoItemType],
    ["TODO_ITEM_SOURCES", enums.TODO_ITEM_SOURCES, TodoItemSource],
    ["LISTED_WORKER_STATUSES", enums.LISTED_WORKER_STATUSES, WorkerStatus],
  ] as const)("%s names every value of its enum as the enum spells it", (_name, table, protoEnum) => {
    const values = Object.values(protoEnum).filter((v): v is number => typeof v === "number" && v !== 0);
    for (const value of values) {
      const name = table.read(value as never);
      expect(name).toBe((protoEnum as Record<number, string>)[value]!.toLowerCase());
      expect(table.value(name!)).toBe(value);
    }
  });
});
