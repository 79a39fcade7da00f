// The local pool, with real processes: `foreman serve` in single-user mode starts its worker
// daemons as children, which run a task with the command agent (the prompt as a shell script)
// against a real git remote; one SIGKILLed comes back under its worker id; the server stopped
// takes its workers with it.
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentType, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { RepositoryService } from "../../gen/foreman/v1/repository_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import { runCli } from "../helpers/cli-process.js";
import { unit } from "../helpers/dispatch.js";
import { startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { freePort, killAllChildren, startServerProcess, tempFolder, type ServerProcess } from "../helpers/worker-processes.js";
import { until } from "../helpers/until.js";


/** The process ids of a process's children (Linux). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

describe("the local pool of foreman serve", () => {
  let remote: GitRemote;
  let server: ServerProcess;

  beforeAll(async () => {
    remote = await startGitRemote();
    const port = await freePort();
    server = await startServerProcess({ FOREMAN_PORT: String(port), FOREMAN_DATA_DIR: tempFolder("foreman-pool-"), FOREMAN_LOCAL_WORKERS: "2", FOREMAN_CONTACT_REMOTES: "true" });
  }, 120_000);

  afterAll(async () => {
    await server?.kill();
    await remote?.close();
    await killAllChildren();
  });

  const registered = () => server.logs.filter((l) => l.msg === "worker registered");

  it("starts two workers that run a task end to end, restarts one that dies, and stops them with the server", { timeout: 240_000 }, async () => {
    await until("two registered workers", () => (registered().length >= 2 ? true : undefined)).catch((e: unknown) => {
      throw new Error(`${String(e)}\n${server.output()}`);
    });
    const workerIds = new Set(registered().map((l) => l.worker_id));
    expect(workerIds.size).toBe(2);
    const pids = await until("two worker processes", () => (childrenOf(server.child.pid!).length === 2 ? childrenOf(server.child.pid!) : undefined));
    // foreman workers list shows them: the pool serves everyone.
    const listed = await runCli(["workers", "list", "--json"], { FOREMAN_URL: server.url });
    expect(listed.code, listed.stderr).toBe(0);
    const { workers } = JSON.parse(listed.stdout) as { workers: { id: string; name: string; status: string; servesEveryUser?: boolean }[] };
    expect(workers.map((w) => w.id).sort()).toEqual([...workerIds].sort());
    expect(workers.map((w) => w.name).sort()).toEqual(["local worker 1", "local worker 2"]);
    expect(workers.every((w) => w.servesEveryUser === true && ["WORKER_STATUS_IDLE", "WORKER_STATUS_BUSY"].includes(w.status))).toBe(true);
    const human = await runCli(["workers", "list"], { FOREMAN_URL: server.url });
    expect(human.stdout.split("\n")[0]).toMatch(/^ID +NAME +STATUS +AGENTS +SESSIONS +SERVES +LAST SEEN +HOST$/);

    const transport = createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" });
    const tasks = createClient(TaskService, transport);
    const { workspace } = await createClient(WorkspaceService, transport).createWorkspace({ name: `pool-${randomBytes(3).toString("hex")}` });
    const url = await remote.createRepository(`pool-${randomBytes(3).toString("hex")}`, { defaultBranch: "main", files: { "README.md": "# pool\n" } });
    const repositories = createClient(RepositoryService, transport);
    const { repository } = await repositories.addRepository({ workspaceId: workspace!.id, remoteUrl: url });
    const { repositoryGroup } = await repositories.createRepositoryGroup({ workspaceId: workspace!.id, name: "pool", repositoryIds: [repository!.id] });
    const { unitTask } = await tasks.createUnitTask({ repositoryGroupId: repositoryGroup!.id, prompt: "echo 'hello from the pool' > hello.txt\necho done", agentType: AgentType.COMMAND });
    const status = await until("in review", async () => {
      const u = unit((await tasks.getTask({ id: unitTask!.id })).task);
      return u.status === TaskStatus.IN_REVIEW || u.status === TaskStatus.FAILED ? u : undefined;
    });
    expect(status.status, status.statusReason).toBe(TaskStatus.IN_REVIEW);
    const diff = await tasks.getTaskDiff({ id: unitTask!.id });
    expect(diff.repositories[0]!.files.map((f) => f.path)).toEqual(["hello.txt"]);
    expect(diff.repositories[0]!.unifiedDiff).toContain("+hello from the pool");

    // One dies: the pool starts it again, and it comes back as the worker it was.
    const before = registered().length;
    process.kill(pids[0]!, "SIGKILL");
    const again = await until("the worker registered again", () => registered().slice(before)[0]);
    expect(again.again).toBe(true);
    expect(workerIds.has(again.worker_id)).toBe(true);
    const now = await until("two worker processes again", () => {
      const c = childrenOf(server.child.pid!);
      return c.length === 2 && !c.includes(pids[0]!) ? c : undefined;
    });

    await server.stop();
    expect(server.child.exitCode).toBe(0);
    for (const pid of now) expect(alive(pid), `worker ${pid} outlived the server`).toBe(false);
  });
});
