// One shared check for single-line text, through the real server over HTTP on both databases:
// names, titles, host names and versions refuse line and paragraph separators, C1 controls and
// bidi controls (which could garble a list or a log line, or disguise one name as another), while
// multi-line text (descriptions, prompts) keeps its line breaks.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { expectInvalid } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** Characters single-line text refuses beyond C0 controls, each with a label. */
const HOSTILE: [string, string][] = [
  ["U+2028 line separator", "\u2028"],
  ["U+2029 paragraph separator", "\u2029"],
  ["U+0085 next line", "\u0085"],
  ["U+0080 C1 control", "\u0080"],
  ["U+009B C1 control (CSI)", "\u009b"],
  ["U+202E right-to-left override", "\u202e"],
  ["U+202A left-to-right embedding", "\u202a"],
  ["U+2066 left-to-right isolate", "\u2066"],
  ["U+2069 pop directional isolate", "\u2069"],
  ["U+200F right-to-left mark", "\u200f"],
  ["U+061C Arabic letter mark", "\u061c"],
];

describe.each(DIALECTS)("single-line text on %s", (dialect) => {
  let t: TestServer;

  let local: Caller;

  beforeAll(async () => {
    t = await startTestServer(dialect);
    local = caller(t);
  });

  afterAll(async () => {
    await t?.close();
  });

  it.each(HOSTILE)("refuses %s in a workspace, repository group and task title, and a worker's name, hostname and version", async (_label, c) => {
    const { id: ws } = await local.workspace();
    const before = (await t.workspaces.listWorkspaces({ pageSize: 1000 })).workspaces.length;
    await expectInvalid(t.workspaces.createWorkspace({ name: `bad${c}name` }), "name");
    await expectInvalid(t.workspaces.updateWorkspace({ id: ws, name: `bad${c}name` }), "name");
    expect((await t.workspaces.listWorkspaces({ pageSize: 1000 })).workspaces).toHaveLength(before);

    const repository = await local.repository(ws);
    await expectInvalid(t.repositories.createRepositoryGroup({ workspaceId: ws, name: `bad${c}group`, repositoryIds: [repository.id] }), "name");

    const tasks = t.client(TaskService);
    const { id: groupId } = await local.group(ws, [repository.id]);
    await expectInvalid(tasks.createUnitTask({ repositoryGroupId: groupId, prompt: "Fix it", title: `bad${c}title` }), "title");
    await expectInvalid(tasks.createCompositeTask({ repositoryGroupId: groupId, prompt: "Plan it", title: `bad${c}title` }), "title");
    expect((await tasks.listTasks({ workspaceId: ws })).tasks).toEqual([]);

    const { secret } = await local.registrationToken();
    const workers = t.client(WorkerService);
    await expectInvalid(workers.registerWorker({ registrationToken: secret, name: `bad${c}worker` }), "name");
    await expectInvalid(workers.registerWorker({ registrationToken: secret, name: "w", hostname: `host${c}.example` }), "hostname");
    await expectInvalid(workers.registerWorker({ registrationToken: secret, name: "w", version: `1.0${c}-beta` }), "version");
  });

  it("gives a task made from a prompt with such characters a clean default title", async () => {
    const { group } = await local.groupOfOne();
    const groupId = group.id;
    const { unitTask } = await t.client(TaskService).createUnitTask({ repositoryGroupId: groupId, prompt: "Fix\u2028the\u202e title\u200f now\nsecond line" });
    expect(unitTask?.title).toBe("Fix the title now");
  });

  it("keeps line breaks and bidi marks in multi-line text, and refuses C1 controls there too", async () => {
    const description = "first line\nשורה שנייה \u200f\u2028third";
    const { workspace: ws } = await t.workspaces.createWorkspace({ name: `multi-${randomUUID()}`, description });
    expect(ws?.description).toBe(description);
    await expectInvalid(t.workspaces.createWorkspace({ name: "fine", description: "bad\u0085text" }), "description");
  });
});
