// The worker daemon end to end, with real processes: the server (in process, on a fixed port so
// it can come back on it), `foreman worker` daemons as child processes, a real git remote over
// smart HTTP, and the command agent running a script that edits files, prints, and asks its
// user a question. On both databases.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentType, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { LogStream, SessionService, TtyInputStatus, type LogLine } from "../../gen/foreman/v1/session_pb.js";
import { TaskService, type AgentSession, type Task } from "../../gen/foreman/v1/task_pb.js";
import { createTestDatabase, DIALECTS, type TestDatabase } from "../helpers/databases.js";
import { runCli } from "../helpers/cli-process.js";
import { startDaemon, type DaemonProcess } from "../helpers/daemon-process.js";
import { unit } from "../helpers/dispatch.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { git, startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { until } from "../helpers/until.js";
import { freePort, killAllChildren, tempFolder } from "../helpers/worker-processes.js";

const TOKEN = `e2e-${randomBytes(24).toString("hex")}`;
const LINES = 10_000;

/** The command agent's script: edits and commits, prints LINES lines, asks which colour, writes the answer (left uncommitted). */
const AGENT = `
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
writeFileSync("hello.txt", "hello from the agent\\n");
execFileSync("git", ["add", "hello.txt"]);
execFileSync("git", ["commit", "-q", "-m", "Agent says hello"]);
for (let i = 1; i <= ${LINES}; i++) console.log("line " + i);
const res = await fetch(process.env.FOREMAN_ASK_URL, { method: "POST", body: JSON.stringify({ prompt: "Which colour?", type: "choice", choices: ["red", "blue"] }) });
const answer = await res.text();
writeFileSync("colour.txt", answer + "\\n");
console.log("answer: " + answer);
`;

/**
 * The first attempt prints a line every 50 ms until the marker says to stop (its worker is
 * killed meanwhile, and it dies on its next write to the broken pipe); a later attempt finishes.
 */
const SLOW_AGENT = (marker: string) => `
import { existsSync, writeFileSync } from "node:fs";
if (existsSync(${JSON.stringify(marker)})) {
  writeFileSync("second.txt", "second attempt\\n");
  console.log("second attempt done");
} else {
  writeFileSync(${JSON.stringify(marker)}, process.env.FOREMAN_SESSION_ID);
  for (let i = 1; ; i++) {
    console.log("tick " + i);
    await new Promise((r) => setTimeout(r, 50));
  }
}
`;

/** Prints numbered lines every 20 ms up to the count, then ends. */
const COUNTING_AGENT = (count: number) => `
for (let i = 1; i <= ${count}; i++) {
  console.log("n " + i);
  await new Promise((r) => setTimeout(r, 20));
}
`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether the process runs: neither gone nor a zombie (dead, waiting for whoever inherited it to reap it). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}


describe.each(DIALECTS)("the worker daemon end to end on %s", (dialect) => {
  let database: TestDatabase;
  let t: TestServer;
  let port: number;
  let c: Caller;
  let remote: GitRemote;
  let scripts: string;
  const daemons: DaemonProcess[] = [];

  const env = {
    FOREMAN_CONTACT_REMOTES: "true",
    FOREMAN_WORKER_REGISTRATION_TOKEN: TOKEN,
    FOREMAN_HEARTBEAT_SECONDS: "1",
    FOREMAN_HEALTH_CHECK_SECONDS: "1",
  };

  const start = async () => {
    t = await startTestServer(dialect, { ...env, FOREMAN_PORT: String(port) }, database);
    c = caller(t);
  };

  beforeAll(async () => {
    remote = await startGitRemote();
    database = await createTestDatabase(dialect);
    port = await freePort();
    await start();
    scripts = tempFolder("foreman-e2e-agents-");
  }, 120_000);

  // Each test's workers go with it: another test's agent script must not claim the next task.
  afterEach(async () => {
    await Promise.all(daemons.splice(0).map((d) => d.kill()));
  });

  afterAll(async () => {
    await t?.server.close();
    await database?.drop();
    await remote?.close();
    await killAllChildren();
  });

  const tasks = () => c.client(TaskService);
  const sessions = () => c.client(SessionService);

  async function daemon(command: string, name: string, env: Record<string, string> = {}): Promise<DaemonProcess> {
    const d = await startDaemon({ server: t.url, token: TOKEN, agents: "command", command, name, concurrency: 1, env });
    daemons.push(d);
    return d;
  }

  async function script(name: string, source: string): Promise<string> {
    const file = path.join(scripts, name);
    await writeFile(file, source);
    return `${JSON.stringify(process.execPath)} ${JSON.stringify(file)}`;
  }

  async function project() {
    const name = `e2e-${randomBytes(4).toString("hex")}`;
    const url = await remote.createRepository(name, { defaultBranch: "main", files: { "README.md": "# e2e\n" } });
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url);
    const group = await c.group(ws, [repo.id]);
    return { name, url, repo, group };
  }

  const getTask = async (id: string): Promise<Task> => (await tasks().getTask({ id })).task!;
  /** The task's sessions, every run's, oldest first. */
  const sessionsOf = async (id: string): Promise<AgentSession[]> => unit(await getTask(id)).agentTasks.flatMap((a) => a.sessions);
  const statusOf = async (id: string) => unit(await getTask(id)).status;

  async function logOf(sessionId: string): Promise<LogLine[]> {
    const lines: LogLine[] = [];
    for (let after = 0; ; ) {
      const page = await sessions().getLog({ sessionId, afterSequence: after, maxBatches: 500 });
      for (const b of page.batches) lines.push(...b.lines);
      if (page.batches.length === 0) return lines;
      after = page.batches.at(-1)!.sequence;
    }
  }

  it("runs a task: edits, 10,000 lines, a question answered, in review with its diff, approved and pushed", { timeout: 240_000 }, async () => {
    const p = await project();
    // A HOME with no git identity: the agent's own commit is the worker's too.
    const home = { HOME: tempFolder("foreman-e2e-home-") };
    const workers = [await daemon(await script("agent.mjs", AGENT), "e2e one", home), await daemon(await script("agent2.mjs", AGENT), "e2e two", home)];
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Say hello and pick a colour", agentType: AgentType.COMMAND });
    const id = unitTask!.id;

    const question = await until("the agent's question", async () => {
      const { requests } = await sessions().listTtyInputRequests({ taskId: id });
      return requests.find((r) => r.status === TtyInputStatus.PENDING);
    });
    expect(question.prompt).toBe("Which colour?");
    expect(question.options).toEqual(["red", "blue"]);
    await sessions().submitTtyInput({ requestId: question.id, response: "blue" });

    const status = await until("in review", async () => {
      const s = await statusOf(id);
      return s === TaskStatus.IN_REVIEW || s === TaskStatus.FAILED ? s : undefined;
    });
    expect(status, unit(await getTask(id)).statusReason).toBe(TaskStatus.IN_REVIEW);

    const session = (await sessionsOf(id))[0]!;
    expect(session.state).toBe(SessionState.SUCCEEDED);
    const lines = await logOf(session.id);
    const stdout = lines.filter((l) => l.stream === LogStream.STDOUT).map((l) => l.text);
    expect(stdout).toEqual([...Array.from({ length: LINES }, (_, i) => `line ${i + 1}`), "answer: blue"]);
    const system = lines.filter((l) => l.stream === LogStream.SYSTEM).map((l) => l.text);
    expect(system.some((l) => /runs attempt 1 with command/.test(l))).toBe(true);
    expect(system.some((l) => /^pushed /.test(l))).toBe(true);

    const diff = await tasks().getTaskDiff({ id });
    const files = diff.repositories.flatMap((r) => r.files.map((f) => f.path)).sort();
    expect(files).toEqual(["colour.txt", "hello.txt"]);
    expect(diff.repositories[0]!.unifiedDiff).toContain("+blue");

    await tasks().approveTask({ id });
    const branch = unit(await getTask(id)).branchName;
    const pushed = await git(["--git-dir", remote.gitDir(p.name), "show", `refs/heads/${branch}:hello.txt`]);
    expect(pushed).toBe("hello from the agent");
    // The agent's own commit, then the worker's of what it left, named after the prompt.
    const log = await git(["--git-dir", remote.gitDir(p.name), "log", "--format=%s|%an", `main..refs/heads/${branch}`]);
    expect(log.split("\n")).toEqual(["Say hello and pick a colour|Foreman worker", "Agent says hello|Foreman worker"]);
    for (const w of workers) expect(w.output()).not.toContain(TOKEN);
  });

  it("a task made by foreman task create --secrets: its agent has them in its environment, and its log shows them masked", { timeout: 120_000 }, async () => {
    const p = await project();
    const secret = `sk-${randomBytes(16).toString("hex")}`;
    // The worker waits before the task exists: it claims the run the moment it is queued.
    const worker = await daemon(await script("secret.mjs", 'console.log("key " + process.env.API_KEY);\nconsole.log("length " + (process.env.API_KEY ?? "").length);\n'), "e2e secrets");
    const created = await runCli(["task", "create", "--group", p.group.id, "--agent", "command", "--secrets", "API_KEY", "--json", "Use the key"], { FOREMAN_URL: t.url, API_KEY: secret });
    expect(created.code, created.stderr).toBe(0);
    const id = (JSON.parse(created.stdout) as { id: string }).id;
    const status = await until("in review", async () => {
      const s = await statusOf(id);
      return s === TaskStatus.IN_REVIEW || s === TaskStatus.FAILED ? s : undefined;
    });
    expect(status, unit(await getTask(id)).statusReason).toBe(TaskStatus.IN_REVIEW);
    const lines = await logOf((await sessionsOf(id))[0]!.id);
    const stdout = lines.filter((l) => l.stream === LogStream.STDOUT).map((l) => l.text);
    expect(stdout).toEqual(["key ***", `length ${secret.length}`]);
    expect(lines.map((l) => l.text + l.payloadJson).join("\n")).not.toContain(secret);
    expect(worker.output()).not.toContain(secret);
    expect(created.stdout + created.stderr).not.toContain(secret);
  });

  it("a worker SIGKILLed mid-task: the other finishes the next attempt, and the log shows both", { timeout: 240_000 }, async () => {
    const p = await project();
    const marker = path.join(scripts, `marker-${randomBytes(4).toString("hex")}`);
    const command = await script("slow.mjs", SLOW_AGENT(marker));
    const first = await daemon(command, "e2e first");
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Survive a dead worker", agentType: AgentType.COMMAND });
    const id = unitTask!.id;
    // The first attempt runs on the only worker there is, and has printed.
    const firstSession = await until("the first attempt's output", async () => {
      const s = (await sessionsOf(id))[0];
      return s !== undefined && (await logOf(s.id)).some((l) => l.text === "tick 3") ? s : undefined;
    });
    await first.kill();
    await daemon(command, "e2e second");
    const status = await until("in review after the second attempt", async () => {
      const s = await statusOf(id);
      return s === TaskStatus.IN_REVIEW || s === TaskStatus.FAILED ? s : undefined;
    });
    expect(status, unit(await getTask(id)).statusReason).toBe(TaskStatus.IN_REVIEW);
    const all = (await sessionsOf(id));
    expect(all.map((s) => [s.attempt, s.state]).sort()).toEqual([
      [1, SessionState.LOST],
      [2, SessionState.SUCCEEDED],
    ]);
    expect((await logOf(firstSession.id)).some((l) => l.text === "tick 3")).toBe(true);
    const second = all.find((s) => s.attempt === 2)!;
    expect((await logOf(second.id)).map((l) => l.text)).toContain("second attempt done");
    expect(await readFile(marker, "utf8")).toBe(firstSession.id);
  });

  it("a stop mid-run ends the agent's process group and the session as cancelled", { timeout: 120_000 }, async () => {
    const p = await project();
    const pidFile = path.join(scripts, `pid-${randomBytes(4).toString("hex")}`);
    const source = `import { writeFileSync } from "node:fs";\nwriteFileSync(${JSON.stringify(pidFile)}, String(process.pid));\n${COUNTING_AGENT(100_000)}`;
    await daemon(await script("count-stop.mjs", source), "e2e stop");
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Count for ever", agentType: AgentType.COMMAND });
    const id = unitTask!.id;
    const session = await until("output", async () => {
      const s = (await sessionsOf(id))[0];
      return s !== undefined && (await logOf(s.id)).some((l) => l.text === "n 5") ? s : undefined;
    });
    const pid = Number(await readFile(pidFile, "utf8"));
    const alive = () => running(pid);
    expect(alive()).toBe(true);
    const stoppedAt = Date.now();
    await sessions().stopSession({ sessionId: session.id, reason: "enough" });
    await until("the agent's end", async () => (alive() ? undefined : true));
    process.stdout.write(`stop: the agent ended ${Date.now() - stoppedAt} ms after StopSession answered\n`);
    const s = (await sessionsOf(id)).find((x) => x.id === session.id)!;
    expect(s.state).toBe(SessionState.CANCELLED);
    expect(unit(await getTask(id)).status).not.toBe(TaskStatus.IN_REVIEW);
  });

  it("a worker SIGKILLed with a silent agent: the agent outlives it, and the worker started again on its state folder ends it first", { timeout: 120_000 }, async () => {
    const p = await project();
    const pidFile = path.join(scripts, `pid-${randomBytes(4).toString("hex")}`);
    // Prints nothing, so no broken pipe ends it when its worker dies; ignores SIGTERM, so the SIGKILL after the grace does.
    const source = `import { writeFileSync } from "node:fs";\nprocess.on("SIGTERM", () => {});\nwriteFileSync(${JSON.stringify(pidFile)}, String(process.pid));\nsetInterval(() => {}, 1000);\n`;
    const command = await script("silent.mjs", source);
    const first = await daemon(command, "e2e silent");
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Say nothing", agentType: AgentType.COMMAND });
    const pid = Number(await until("the agent's pid", async () => (await readFile(pidFile, "utf8").catch(() => "")) || undefined));
    // The command runs under sh -c, whose process group it is in (field 5 of /proc/<pid>/stat).
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const group = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
    try {
      await first.kill();
      await sleep(500);
      expect(running(pid), "the agent outlives its worker's SIGKILL").toBe(true);
      const again = await startDaemon({ server: t.url, token: TOKEN, agents: "command", command, name: "e2e silent", concurrency: 1, stateDir: first.stateDir });
      daemons.push(again);
      const ending = await again.waitForLog((l) => l.msg === "ending an agent the previous worker process left running", "the orphan's end");
      expect(ending.pid).toBe(group);
      expect(ending.session_id).toBe((await sessionsOf(unitTask!.id))[0]!.id);
      await until("the agent's end", async () => (running(pid) ? undefined : true));
      await again.waitForLog((l) => l.msg === "ended the agents the previous worker process left running" && l.agents === 1, "the count");
    } finally {
      try {
        process.kill(-group, "SIGKILL");
      } catch {
        // Ended, as it should be.
      }
    }
  });

  it("the server restarted mid-task: the worker carries on, and no line is lost", { timeout: 240_000 }, async () => {
    const p = await project();
    const count = 400;
    await daemon(await script("count.mjs", COUNTING_AGENT(count)), "e2e restart");
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Count through a restart", agentType: AgentType.COMMAND });
    const id = unitTask!.id;
    await until("output", async () => {
      const s = (await sessionsOf(id))[0];
      return s !== undefined && (await logOf(s.id)).some((l) => l.text === "n 10") ? s : undefined;
    });
    await t.server.close();
    await sleep(1500);
    await start();
    const status = await until("in review", async () => {
      const s = await statusOf(id);
      return s === TaskStatus.IN_REVIEW || s === TaskStatus.FAILED ? s : undefined;
    });
    expect(status, unit(await getTask(id)).statusReason).toBe(TaskStatus.IN_REVIEW);
    // With 1 s heartbeats a lease lasts 3 s: on a loaded machine the outage can outlast it, and
    // then the new server rightly requeues the run (LOST) and a later attempt finishes it.
    const session = await sessionsOf(id);
    expect(session.at(-1)!.state).toBe(SessionState.SUCCEEDED);
    expect(session.slice(0, -1).every((s) => s.state === SessionState.LOST)).toBe(true);
    const numbered = (await logOf(session.at(-1)!.id)).filter((l) => l.stream === LogStream.STDOUT).map((l) => l.text);
    expect(numbered).toEqual(Array.from({ length: count }, (_, i) => `n ${i + 1}`));
  });
});
