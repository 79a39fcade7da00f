// `foreman worker` as a real process: its startup errors say what is wrong (exit 1, or 2 for a
// usage mistake), a restart gets its worker id back, SIGTERM drains (the running session
// finishes, nothing more is claimed) and a second SIGTERM stops now (the run goes back to the
// queue at once).
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentType, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { SessionService, type LogLine } from "../../gen/foreman/v1/session_pb.js";
import { TaskService, type AgentSession } from "../../gen/foreman/v1/task_pb.js";
import { startDaemon, type DaemonProcess } from "../helpers/daemon-process.js";
import { unit } from "../helpers/dispatch.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { freePort, killAllChildren, tempFolder } from "../helpers/worker-processes.js";
import { until } from "../helpers/until.js";

const TOKEN = `life-${randomBytes(24).toString("hex")}`;

describe("foreman worker's startup errors", () => {
  it.each([
    ["no token", [] as string[], {}, 2, /a registration token is required: --token, --token-file, FOREMAN_WORKER_TOKEN/],
    ["an unreachable server", ["--token", "x".repeat(40), "--connect-timeout", "1"], {}, 1, /cannot reach the server at http:\/\/127\.0\.0\.1:9/],
    ["an agent not on PATH", ["--token", "x".repeat(40), "--agents", "codex"], { PATH: "/usr/bin:/bin" }, 1, /no agent available: codex needs codex on PATH/],
    ["an unknown agent", ["--token", "x".repeat(40), "--agents", "gemini"], {}, 2, /unknown agent 'gemini' in --agents/],
    ["a bad concurrency", ["--token", "x".repeat(40), "--concurrency", "0"], {}, 2, /--concurrency must be a whole number from 1 to 64/],
    ["a missing token file", ["--token-file", "/nonexistent/token"], {}, 1, /cannot read the token file \/nonexistent\/token/],
  ])("%s", { timeout: 60_000 }, async (_what, args, env, code, message) => {
    const d = await startDaemon({ server: "http://127.0.0.1:9", token: "", extraArgs: args, env }, { waitForRegistration: false });
    expect(await d.exited()).toBe(code);
    expect(d.output()).toMatch(message);
    // One line a person reads, not a stack trace.
    expect(d.output()).not.toMatch(/\n\s+at /);
  });
});

describe("foreman worker against a server", () => {
  let t: TestServer;
  let c: Caller;
  let remote: GitRemote;
  let scripts: string;
  const daemons: DaemonProcess[] = [];

  beforeAll(async () => {
    remote = await startGitRemote();
    t = await startTestServer("sqlite", { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_WORKER_REGISTRATION_TOKEN: TOKEN, FOREMAN_PORT: String(await freePort()) });
    c = caller(t);
    scripts = tempFolder("foreman-life-");
  }, 120_000);

  afterEach(async () => {
    await Promise.all(daemons.splice(0).map((d) => d.kill()));
  });

  afterAll(async () => {
    await t?.close();
    await remote?.close();
    await killAllChildren();
  });

  const tasks = () => c.client(TaskService);
  const sessionsOf = async (id: string): Promise<AgentSession[]> => unit((await tasks().getTask({ id })).task).agentTasks.flatMap((a) => a.sessions);
  async function logOf(sessionId: string): Promise<LogLine[]> {
    const page = await c.client(SessionService).getLog({ sessionId, maxBatches: 5000 });
    return page.batches.flatMap((b) => b.lines);
  }

  async function daemon(command: string, stateDir?: string): Promise<DaemonProcess> {
    const d = await startDaemon({ server: t.url, token: TOKEN, agents: "command", command, stateDir });
    daemons.push(d);
    return d;
  }

  async function task(prompt: string): Promise<string> {
    const url = await remote.createRepository(`life-${randomBytes(4).toString("hex")}`, { defaultBranch: "main", files: { "README.md": "# life\n" } });
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url);
    const group = await c.group(ws, [repo.id]);
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: group.id, prompt, agentType: AgentType.COMMAND });
    return unitTask!.id;
  }

  /** A command agent that prints "tick N" every 50 ms until the file `stop` appears, then ends. */
  async function tickingAgent(): Promise<{ command: string; release: () => Promise<void> }> {
    const stop = path.join(scripts, `stop-${randomBytes(4).toString("hex")}`);
    const file = path.join(scripts, `tick-${randomBytes(4).toString("hex")}.mjs`);
    await writeFile(file, `import { existsSync } from "node:fs";\nfor (let i = 1; !existsSync(${JSON.stringify(stop)}); i++) {\n  console.log("tick " + i);\n  await new Promise((r) => setTimeout(r, 50));\n}\nconsole.log("released");\n`);
    return { command: `${JSON.stringify(process.execPath)} ${JSON.stringify(file)}`, release: () => writeFile(stop, "") };
  }

  it("gets its worker id back when it restarts with its state folder, and a new one without it", { timeout: 120_000 }, async () => {
    const stateDir = tempFolder("foreman-life-state-");
    const first = await daemon("true", stateDir);
    const firstId = first.logs.find((l) => l.msg === "worker registered")!.worker_id;
    first.signal("SIGTERM");
    expect(await first.exited()).toBe(0);
    const again = await daemon("true", stateDir);
    const line = again.logs.find((l) => l.msg === "worker registered")!;
    expect(line.worker_id).toBe(firstId);
    expect(line.again).toBe(true);
    const other = await daemon("true");
    expect(other.logs.find((l) => l.msg === "worker registered")!.worker_id).not.toBe(firstId);
  });

  it("drains on SIGTERM: the running session finishes and is reported, nothing more is claimed", { timeout: 120_000 }, async () => {
    const agent = await tickingAgent();
    const d = await daemon(agent.command);
    const id = await task("Tick until released");
    const session = await until("the run's output", async () => {
      const s = (await sessionsOf(id))[0];
      return s !== undefined && (await logOf(s.id)).some((l) => l.text === "tick 3") ? s : undefined;
    });
    d.signal("SIGTERM");
    await d.waitForLog((l) => typeof l.msg === "string" && l.msg.startsWith("draining"), "draining");
    const next = await task("Queued while draining");
    await agent.release();
    expect(await d.exited()).toBe(0);
    expect((await sessionsOf(id)).find((s) => s.id === session.id)!.state).toBe(SessionState.SUCCEEDED);
    expect(unit((await tasks().getTask({ id })).task).status).toBe(TaskStatus.IN_REVIEW);
    // The task filed while it drained was never claimed.
    expect((await sessionsOf(next)).map((s) => s.state)).toEqual([SessionState.QUEUED]);
    await tasks().updateTaskStatus({ id: next, status: TaskStatus.CANCELLED });
  });

  it("stops now on a second SIGTERM: the agent ends and its run is requeued at once as the next attempt", { timeout: 120_000 }, async () => {
    const agent = await tickingAgent();
    const d = await daemon(agent.command);
    const id = await task("Tick until stopped");
    await until("the run's output", async () => {
      const s = (await sessionsOf(id))[0];
      return s !== undefined && (await logOf(s.id)).some((l) => l.text === "tick 3") ? s : undefined;
    });
    d.signal("SIGTERM");
    await d.waitForLog((l) => typeof l.msg === "string" && l.msg.startsWith("draining"), "draining");
    d.signal("SIGTERM");
    expect(await d.exited()).toBe(0);
    const sessions = await sessionsOf(id);
    expect(sessions.map((s) => [s.attempt, s.state])).toEqual([
      [1, SessionState.LOST],
      [2, SessionState.QUEUED],
    ]);
    expect(sessions[0]!.errorMessage).toMatch(/its worker unregistered/);
    await agent.release();
    await tasks().updateTaskStatus({ id, status: TaskStatus.CANCELLED });
  });
});
