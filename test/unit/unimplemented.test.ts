// src/api/unimplemented.ts: a method of the contract this server does not serve answers
// Unimplemented, ErrorInfo NOT_IMPLEMENTED, naming the method and its capability. Every method
// is served today (GetTaskDiff was the last), so this is checked here rather than over HTTP.
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { unimplementedMethods } from "../../src/api/unimplemented.js";

describe("unimplemented methods", () => {
  it("answers each method of a service with Unimplemented naming it and its capability", () => {
    const impl = unimplementedMethods(TaskService, "task diffs");
    expect(Object.keys(impl).sort()).toEqual(TaskService.methods.map((m) => m.localName).sort());
    let error: unknown;
    try {
      impl.getTaskDiff!();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConnectError);
    const e = error as ConnectError;
    expect(e.code).toBe(Code.Unimplemented);
    expect(e.rawMessage).toBe("TaskService.GetTaskDiff (task diffs) is not implemented on this server yet");
    const [info] = e.findDetails(ErrorInfoSchema);
    expect(info?.reason).toBe("NOT_IMPLEMENTED");
    expect(info?.domain).toBe("foreman.dev");
    expect(info?.metadata.capability).toBe("TaskService.GetTaskDiff (task diffs)");
  });
});
