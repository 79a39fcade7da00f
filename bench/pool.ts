// Issue 19's benchmark: the local worker pool that `foreman serve` starts (FOREMAN_LOCAL_WORKERS,
// 2 by default in single-user mode), running the command agent (the prompt as a shell script,
// `sh -s`) on tasks whose prompt is `echo hi`, against a local git repository (a folder remote,
// which single-user mode allows; FOREMAN_CONTACT_REMOTES stays at its default, true, so each task
// gets its branch and the worker clones it through the server's workspace route).
//
// Tasks go one at a time, each created once the one before has ended, so that the pool is idle
// (one worker at least long-polling) when it is created. Per task:
//   - latency: CreateUnitTask answered → the first log line at a reader of SessionService.
//     StreamLog on the task's session (opened at once on the session id the answer holds, in this
//     process over HTTP/2, as `foreman logs -f` reads it; the CLI itself is not run, its start
//     under tsx, some 1 s, would be most of the figure), and → the agent's own line ("hi");
//   - the session's wall time as the server records it (start_time, when RUNNING is reported,
//     to end_time, when SUCCEEDED is) less the agent's own run time (`sh -s` given `echo hi`,
//     spawned from node as the worker does, timed by the peer row below): what the worker adds
//     (the clone of the task branch, git add/status/rev-parse after the agent, the log's flush,
//     the reports);
//   - CPU: the worker daemons' own (user + sys of the pool's processes, the server's children,
//     from /proc/<pid>/stat), the git and sh processes they ran (their reaped children's), and
//     the server's (its own and its reaped children's, git http-backend among them), each over a
//     repeat's tasks, per session; idle heartbeats and polls between tasks included.
// On SQLite and, when one answers at FOREMAN_BENCH_DATABASE_URL, PostgreSQL (a database of its
// own, dropped at the end). The peer row, "sh + plain git", does by hand what the worker does
// with the same repository: `git clone --single-branch` over file://, rev-parse, `sh -s` given
// `echo hi`, git add -A, status, rev-parse (no push: nothing changed, so the worker pushes
// nothing either); its "first line" is sh's "hi" on its stdout, its CPU that of its git and sh.
//
// One full run here (`BENCH_ONLY=pool npm run bench`, 5 repeats of 50 tasks per target, on a
// 2-core machine other work kept busy: load average 11, some task waiting for a CPU 95% of the
// time, so these are the machine's figures more than Foreman's). With 50 tasks a repeat, p99 is
// the slowest task, as max is. Latency, ms (median [range] over repeats):
//   target                 first line p50                  p99                  min                  max             "hi" p50          create p50  tasks  errors
//   sh + plain git    134.7 [120.7–149.9]  420.0 [328.6–503.3]     59.9 [44.1–68.9]  420.0 [328.6–503.3]  136.2 [121.0–150.8]                   –    250       0
//   foreman sqlite    242.3 [235.1–244.8]  456.9 [368.8–692.1]  203.9 [191.0–212.7]  456.9 [368.8–692.1]  349.9 [328.7–363.8]   89.9 [75.5–105.4]    250       0
//   foreman postgres  312.1 [300.4–322.0]  590.4 [453.2–960.7]  217.5 [200.1–233.1]  590.4 [453.2–960.7]  520.2 [410.3–602.3]  122.6 [84.0–144.8]    250       0
// Per session, ms: wall time (session start → end as the server records it; the peer: its whole
// round), the agent's own, the rest; CPU per session:
//   target                   session wall  agent        overhead wall        worker CPU      git + sh CPU           server CPU
//   sh + plain git    206.8 [172.8–234.2]   14.4  192.4 [158.4–219.8]                 –  43.4 [40.2–46.4]                    –
//   foreman sqlite    358.0 [326.5–368.5]   14.4  343.6 [312.1–354.1]  53.2 [48.2–55.2]  56.6 [51.2–68.2]    99.6 [91.2–117.8]
//   foreman postgres  487.5 [375.5–558.5]   14.4  473.1 [361.1–544.1]  59.2 [57.2–70.0]  85.0 [79.6–89.0]  132.8 [128.8–149.0]
// So an idle pool shows a task's first log line (the worker's "runs attempt 1 with command") some
// 240 ms (SQLite) to 310 ms (PostgreSQL) after CreateUnitTask answers, and a session of a trivial
// agent costs some 340–470 ms of wall time beyond the agent's own (plain git doing the same clone
// and checks by hand: some 190 ms), and some 55–60 ms of the worker daemon's own CPU, 55–85 ms of
// its git's and sh's, and 100–130 ms of the server's (its clone route's git http-backend included).
import { execFile, execFileSync, spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import { AgentType, SessionState } from "../gen/foreman/v1/common_pb.js";
import { LogStream, SessionService } from "../gen/foreman/v1/session_pb.js";
import { RepositoryService } from "../gen/foreman/v1/repository_pb.js";
import { TaskService, type UnitTask } from "../gen/foreman/v1/task_pb.js";
import { WorkspaceService } from "../gen/foreman/v1/workspace_pb.js";
import { git } from "../test/helpers/git-remote.js";
import { interrupted, makeTempDir } from "./cleanup.js";
import { createBenchDatabase } from "./databases.js";
import { startBenchServer, type BenchServer } from "./server.js";

const run = promisify(execFile);

/** The prompt of every task: the command agent runs it as a shell script. */
const PROMPT = "echo hi\n";
const AGENT_LINE = "hi";
/** Workers in the pool: the default in single-user mode, stated so that the figure says it. */
export const POOL_WORKERS = 2;
/** Tasks in the discarded round (the workers registered and warm, tsx's caches filled). */
const WARMUP_TASKS = 4;
/** The longest one task may take before the bench gives up on it. */
const TASK_TIMEOUT_MS = 60_000;

export interface PoolOptions {
  /** Tasks per repeat. */
  tasks: number;
  repeats: number;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export interface PoolResult {
  target: string;
  /** Per repeat: p50, p99, min, max of CreateUnitTask answered → the first log line at the reader, ms. */
  firstLine: { p50: Spread; p99: Spread; min: Spread; max: Spread };
  /** Per repeat: p50 of answered → the agent's "hi" at the reader, ms. */
  agentLineP50: Spread;
  /** Per repeat: p50 of CreateUnitTask's own round trip, ms (the peer: none). */
  createP50?: Spread;
  /** Per repeat: the median session wall time, start → end as the server records it (the peer: its whole round), ms. */
  sessionMs: Spread;
  /** The agent's own run time (`sh -s` with `echo hi`), the median of the peer's, ms. */
  agentMs: Spread;
  /** Per repeat: the median of session wall time less the agent's own, ms. */
  overheadMs: Spread;
  /** Per repeat: CPU per session, ms: the worker daemons' node processes, their git and sh, the server. */
  workerCpuMs?: Spread;
  childrenCpuMs: Spread;
  serverCpuMs?: Spread;
  tasks: number;
  errors: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return NaN;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

function spread(values: number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

// ---------------------------------------------------------------------------------------------
// CPU from /proc

// utime, stime, cutime and cstime are in clock ticks (almost always 100 per second).
let ticksPerSecond: number | undefined;
function ticks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** A process's CPU, µs: its own (utime + stime) and its reaped children's (cutime + cstime). */
function cpu(pid: number | "self"): { own: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
  const us = (n: number) => (n * 1e6) / ticks();
  return { own: us(f[11]! + f[12]!), children: us(f[13]! + f[14]!) };
}

/** The server's children that are `foreman worker` daemons (the pool), by their command line. */
function poolPids(serverPid: number): number[] {
  const pids = new Set<number>();
  for (const thread of readdirSync(`/proc/${serverPid}/task`)) {
    let list = "";
    try {
      list = readFileSync(`/proc/${serverPid}/task/${thread}/children`, "utf8");
    } catch {
      continue;
    }
    for (const pid of list.trim().split(/\s+/).filter((p) => p !== "").map(Number)) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes("worker")) pids.add(pid);
      } catch {
        // Gone meanwhile.
      }
    }
  }
  return [...pids].sort((a, b) => a - b);
}

/** The pool's and the server's CPU so far, µs. */
function poolCpu(server: BenchServer, pids: number[]): { worker: number; children: number; server: number } {
  let worker = 0;
  let children = 0;
  for (const pid of pids) {
    const c = cpu(pid);
    worker += c.own;
    children += c.children;
  }
  const s = cpu(server.pid);
  return { worker, children, server: s.own + s.children };
}

// ---------------------------------------------------------------------------------------------
// The repository and the agent

/** A git repository in a folder: one commit on main. */
async function makeRepository(root: string): Promise<string> {
  const dir = path.join(root, "repository");
  await git(["init", "-q", "-b", "main", dir]);
  await git(["-C", dir, "commit", "-q", "--allow-empty", "-m", "The start"]);
  await writeFile(path.join(dir, "README.md"), "# The pool bench's repository\n");
  await git(["-C", dir, "add", "README.md"]);
  await git(["-C", dir, "commit", "-q", "-m", "A README"]);
  return dir;
}

/** `sh -s` given the prompt, as the command agent runs it: ms to its exit, and when its first stdout line came. */
function runAgent(cwd: string): Promise<{ ms: number; firstLineAt: number | undefined; line: string }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let firstLineAt: number | undefined;
    let out = "";
    const child = spawn("sh", ["-s"], { cwd, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/" }, stdio: ["pipe", "pipe", "ignore"] });
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      out += chunk;
      if (firstLineAt === undefined && out.includes("\n")) firstLineAt = performance.now();
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) reject(new Error(`sh -s exited with code ${code}`));
      else resolve({ ms: performance.now() - started, firstLineAt, line: out.split("\n")[0]! });
    });
    child.stdin.end(PROMPT);
  });
}

// ---------------------------------------------------------------------------------------------
// Foreman with its local pool

interface TaskSample {
  createMs: number;
  firstLineMs: number;
  agentLineMs: number;
  sessionMs: number;
}

interface Round {
  samples: TaskSample[];
  cpu: { worker: number; children: number; server: number };
  errors: number;
}

interface Target {
  name: string;
  round(tasks: number): Promise<Round>;
  close(): Promise<void>;
}

async function foremanTarget(name: string, repository: string, settings: Record<string, string>): Promise<Target> {
  const server = await startBenchServer({ FOREMAN_LOCAL_WORKERS: String(POOL_WORKERS), ...settings });
  const h2 = new Http2SessionManager(server.url);
  const transport = createConnectTransport({ baseUrl: server.url, httpVersion: "2", sessionManager: h2 });
  const tasks = createClient(TaskService, transport);
  const sessions: Client<typeof SessionService> = createClient(SessionService, transport);
  let group: string;
  try {
    const workspace = (await createClient(WorkspaceService, transport).createWorkspace({ name: `pool bench ${name}` })).workspace!;
    const repos = createClient(RepositoryService, transport);
    const repo = (await repos.addRepository({ workspaceId: workspace.id, remoteUrl: repository })).repository!;
    group = (await repos.createRepositoryGroup({ workspaceId: workspace.id, repositoryIds: [repo.id] })).repositoryGroup!.id;
  } catch (error) {
    h2.abort();
    await server.stop();
    throw error;
  }

  const unitTask = async (id: string): Promise<UnitTask> => {
    const { task } = await tasks.getTask({ id });
    if (task?.task.case !== "unitTask") throw new Error(`task ${id} is not a unit task`);
    return task.task.value;
  };

  /** One task, created, followed and read back. */
  const one = async (): Promise<TaskSample> => {
    const sent = performance.now();
    const created = (await tasks.createUnitTask({ repositoryGroupId: group, prompt: PROMPT, agentType: AgentType.COMMAND })).unitTask!;
    const answered = performance.now();
    let sessionId = created.agentTasks[0]?.sessions[0]?.id;
    while (sessionId === undefined) {
      // Not in the answer: read the task until its first session exists.
      sessionId = (await unitTask(created.id)).agentTasks[0]?.sessions[0]?.id;
      if (sessionId === undefined) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TASK_TIMEOUT_MS);
    let firstLineAt: number | undefined;
    let agentLineAt: number | undefined;
    let state: SessionState | undefined;
    let why = "";
    try {
      for await (const message of sessions.streamLog({ sessionId, afterSequence: 0 }, { signal: controller.signal })) {
        if (message.event.case === "batch") {
          const now = performance.now();
          if (message.event.value.lines.length > 0) firstLineAt ??= now;
          if (message.event.value.lines.some((l) => l.stream === LogStream.STDOUT && l.text === AGENT_LINE)) agentLineAt ??= now;
        } else if (message.event.case === "ended") {
          state = message.event.value.state;
          why = message.event.value.errorMessage;
          break;
        }
      }
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
    if (state !== SessionState.SUCCEEDED) throw new Error(`task ${created.id}'s session ended ${state === undefined ? "unseen" : SessionState[state]}${why ? `: ${why}` : ""}`);
    if (firstLineAt === undefined || agentLineAt === undefined) throw new Error(`task ${created.id}'s log had no "${AGENT_LINE}" line`);
    const session = (await unitTask(created.id)).agentTasks[0]!.sessions[0]!;
    if (session.startTime === undefined || session.endTime === undefined) throw new Error(`session ${sessionId} has no start or end time`);
    return {
      createMs: answered - sent,
      firstLineMs: firstLineAt - answered,
      agentLineMs: agentLineAt - answered,
      sessionMs: timestampMs(session.endTime) - timestampMs(session.startTime),
    };
  };

  return {
    name,
    async round(count) {
      const pids = poolPids(server.pid);
      if (pids.length !== POOL_WORKERS) process.stderr.write(`  ${name}: ${pids.length} worker processes under the server (expected ${POOL_WORKERS})\n`);
      const before = poolCpu(server, pids);
      const samples: TaskSample[] = [];
      let errors = 0;
      // After Ctrl-C the server is being stopped under the tasks: no more of them, and no noise.
      for (let i = 0; i < count && interrupted() === undefined; i++) {
        try {
          samples.push(await one());
        } catch (error) {
          errors++;
          if (interrupted() === undefined) process.stderr.write(`  ${name}: ${error instanceof Error ? error.message : String(error)}\n`);
        }
      }
      const after = poolCpu(server, pids);
      const again = poolPids(server.pid);
      if (again.join() !== pids.join()) {
        process.stderr.write(`  ${name}: the pool's processes changed during the repeat (${pids.join(", ")} → ${again.join(", ")}): a worker restarted\n`);
        errors++;
      }
      return { samples, cpu: { worker: after.worker - before.worker, children: after.children - before.children, server: after.server - before.server }, errors };
    },
    async close() {
      h2.abort();
      await server.stop();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The peer: the same round trip by hand

function peerTarget(repository: string, root: string): Target & { agentMs: number[] } {
  const agentMs: number[] = [];
  let n = 0;
  const gitEnv = { ...process.env, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", GIT_TERMINAL_PROMPT: "0", LC_ALL: "C" };
  const g = (args: string[], cwd?: string) => run("git", args, { cwd, env: gitEnv });
  const one = async (): Promise<TaskSample> => {
    const dir = path.join(root, `peer-${n++}`);
    const started = performance.now();
    await g(["clone", "-q", "--no-tags", "--single-branch", "--branch", "main", `file://${repository}`, dir]);
    const startCommit = (await g(["rev-parse", "HEAD"], dir)).stdout.trim();
    const agent = await runAgent(dir);
    if (agent.line !== AGENT_LINE || agent.firstLineAt === undefined) throw new Error(`sh printed "${agent.line}", not "${AGENT_LINE}"`);
    await g(["add", "-A"], dir);
    const staged = (await g(["status", "--porcelain", "--untracked-files=no"], dir)).stdout;
    if (staged.trim() !== "") throw new Error("the agent changed the workspace");
    const head = (await g(["rev-parse", "HEAD"], dir)).stdout.trim();
    if (head !== startCommit) throw new Error("HEAD moved");
    const ended = performance.now();
    agentMs.push(agent.ms);
    return { createMs: 0, firstLineMs: agent.firstLineAt - started, agentLineMs: agent.firstLineAt - started, sessionMs: ended - started };
  };
  return {
    name: "sh + plain git",
    agentMs,
    async round(count) {
      const before = cpu("self").children;
      const samples: TaskSample[] = [];
      let errors = 0;
      for (let i = 0; i < count && interrupted() === undefined; i++) {
        try {
          samples.push(await one());
        } catch (error) {
          errors++;
          if (interrupted() === undefined) process.stderr.write(`  peer: ${error instanceof Error ? error.message : String(error)}\n`);
        }
      }
      return { samples, cpu: { worker: 0, children: cpu("self").children - before, server: 0 }, errors };
    },
    close: async () => undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// The run

export async function runPool(options: PoolOptions): Promise<PoolResult[]> {
  const folder = makeTempDir("foreman-bench-pool-");
  const dbs: { name: string; settings: Record<string, string>; drop(): Promise<void> }[] = [{ name: "foreman sqlite", settings: {}, drop: async () => undefined }];
  try {
    const repository = await makeRepository(folder.path);
    const db = await createBenchDatabase("pool");
    if (db !== undefined) dbs.push({ name: "foreman postgres", settings: { DATABASE_URL: db.url }, drop: db.drop });
    const peer = peerTarget(repository, folder.path);
    const measured: { target: Target; rounds: Round[] }[] = [];
    // The peer first: its agent runs are the agent's own time the other rows subtract.
    const targets: (() => Promise<Target>)[] = [async () => peer, ...dbs.map((d) => () => foremanTarget(d.name, repository, d.settings))];
    for (const start of targets) {
      const target = await start();
      try {
        process.stderr.write(`  ${target.name}: ${WARMUP_TASKS} warm-up tasks, then ${options.repeats} × ${options.tasks}\n`);
        const warm = await target.round(WARMUP_TASKS);
        if (warm.errors > 0) process.stderr.write(`  ${target.name}: ${warm.errors} warm-up tasks failed\n`);
        const rounds: Round[] = [];
        for (let r = 1; r <= options.repeats; r++) {
          const round = await target.round(options.tasks);
          const first = round.samples.map((s) => s.firstLineMs).sort((a, b) => a - b);
          process.stderr.write(
            `  repeat ${r}/${options.repeats} ${target.name}: ${round.samples.length} tasks, first line p50 ${percentile(first, 50).toFixed(1)} ms, ` +
              `p99 ${percentile(first, 99).toFixed(1)} ms, session p50 ${median(round.samples.map((s) => s.sessionMs)).toFixed(1)} ms${round.errors > 0 ? `, ${round.errors} errors` : ""}\n`,
          );
          rounds.push(round);
        }
        measured.push({ target, rounds });
      } finally {
        await target.close();
      }
    }
    const agent = median(peer.agentMs);
    const agentSpread = spread(peer.agentMs.length > 0 ? peer.agentMs : [NaN]);
    return measured.map(({ target, rounds }) => {
      const per = (f: (r: Round) => number) => spread(rounds.map(f));
      const sorted = (r: Round) => r.samples.map((s) => s.firstLineMs).sort((a, b) => a - b);
      const tasksOf = (r: Round) => Math.max(1, r.samples.length);
      const isPeer = target === peer;
      return {
        target: target.name,
        firstLine: {
          p50: per((r) => percentile(sorted(r), 50)),
          p99: per((r) => percentile(sorted(r), 99)),
          min: per((r) => sorted(r)[0] ?? NaN),
          max: per((r) => sorted(r).at(-1) ?? NaN),
        },
        agentLineP50: per((r) => median(r.samples.map((s) => s.agentLineMs))),
        createP50: isPeer ? undefined : per((r) => median(r.samples.map((s) => s.createMs))),
        sessionMs: per((r) => median(r.samples.map((s) => s.sessionMs))),
        agentMs: agentSpread,
        overheadMs: per((r) => median(r.samples.map((s) => s.sessionMs)) - agent),
        workerCpuMs: isPeer ? undefined : per((r) => r.cpu.worker / 1000 / tasksOf(r)),
        childrenCpuMs: per((r) => r.cpu.children / 1000 / tasksOf(r)),
        serverCpuMs: isPeer ? undefined : per((r) => r.cpu.server / 1000 / tasksOf(r)),
        tasks: rounds.reduce((sum, r) => sum + r.samples.length, 0),
        errors: rounds.reduce((sum, r) => sum + r.errors, 0),
      };
    });
  } finally {
    for (const db of dbs) await db.drop();
    folder.remove();
  }
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((row) => row[c]!.length)));
  const line = (row: string[]) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ");
  return [line(header), ...rows.map(line)];
}

const fixed = (s: Spread | undefined, digits = 1) => (s === undefined ? "–" : `${s.median.toFixed(digits)} [${s.min.toFixed(digits)}–${s.max.toFixed(digits)}]`);

export function formatPool(results: PoolResult[], options: PoolOptions): string {
  const latency = results.map((r) => [r.target, fixed(r.firstLine.p50), fixed(r.firstLine.p99), fixed(r.firstLine.min), fixed(r.firstLine.max), fixed(r.agentLineP50), fixed(r.createP50), String(r.tasks), String(r.errors)]);
  const overhead = results.map((r) => [
    r.target,
    fixed(r.sessionMs),
    r.agentMs.median.toFixed(1),
    fixed(r.overheadMs),
    fixed(r.workerCpuMs),
    fixed(r.childrenCpuMs),
    fixed(r.serverCpuMs),
  ]);
  return [
    `pool: tasks whose prompt is \`echo hi\` (the command agent, sh -s) against a local git repository, one at a time, ${POOL_WORKERS} local workers ` +
      `(foreman serve's pool), ${options.repeats} repeats of ${options.tasks} tasks per target; median [range] over repeats`,
    `latency, ms: CreateUnitTask answered → the first log line at a StreamLog reader of the task's session (sh + plain git: the clone started → sh's "hi"), and → the agent's "hi"`,
    ...table(["target", "first line p50", "p99", "min", "max", '"hi" p50', "create p50", "tasks", "errors"], latency),
    ``,
    `per session, ms: wall time start → end as the server records it (RUNNING → SUCCEEDED reported; sh + plain git: clone → rev-parse after sh), ` +
      `the agent's own (sh -s with echo hi, median of the peer's), the rest (the worker's overhead); CPU: the worker daemons' node processes, the git and sh they ran, the server (its git http-backend included)`,
    ...table(["target", "session wall", "agent", "overhead wall", "worker CPU", "git + sh CPU", "server CPU"], overhead),
  ].join("\n");
}
