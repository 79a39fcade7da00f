// Issue 18's benchmark: a 5,000-file repository's workspace delivered to a worker and a 100-file
// result taken back, through Foreman (the workspace route: the lease checked, `git http-backend`
// on the server's clone, only the task branch shown), beside the same git operations straight
// from a plain `git http-backend` (test/helpers/git-remote.ts) serving the same repository: the
// peer rows, what git itself costs. Each is measured with isomorphic-git (what the worker daemon
// will use) and with the git command.
//
// The server is the real one, a child process with the defaults (SQLite, single-user) and
// FOREMAN_CONTACT_REMOTES=true. The remote runs in a child process of its own (this file, with
// BENCH_WORKSPACES_ROLE=remote), so that its CPU time is its own, and so does isomorphic-git
// (BENCH_WORKSPACES_ROLE=isomorphic-git): it holds its event loop for seconds, which here would
// stall the worker's heartbeats and the relay. Both servers are reached through a byte-counting
// TCP relay in this process (the same for every row), which reports what crossed the wire each
// way, HTTP included.
//
// Per repeat, per target and client: (Foreman: a new task, claimed) the first run's workspace is
// cloned (the task branch alone) and a copy of it kept at the base commit; 100 files (50 changed,
// 50 added) are committed and pushed; (Foreman: SUCCEEDED reported, RequestChanges, the second
// run claimed) the kept copy fetches only what is new (the 100-file commit) and fast-forwards its
// work tree, and the first workspace, already up to date, fetches again (nothing new); (Foreman:
// SUCCEEDED reported, the worker free again).
import { execFile, execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import { mkdtemp } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { promisify } from "node:util";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as isogit from "isomorphic-git";
import isoHttp from "isomorphic-git/http/node";
import { AgentType, SessionState } from "../gen/foreman/v1/common_pb.js";
import { AuthService } from "../gen/foreman/v1/auth_pb.js";
import { RepositoryService } from "../gen/foreman/v1/repository_pb.js";
import { TaskService } from "../gen/foreman/v1/task_pb.js";
import { WorkerService, WorkerStatus, type Assignment } from "../gen/foreman/v1/worker_pb.js";
import { WorkspaceService } from "../gen/foreman/v1/workspace_pb.js";
import { git, importCommits, startGitRemote, writeFiles } from "../test/helpers/git-remote.js";
import { parentChannel, startBenchChild } from "./children.js";
import { makeTempDir, removeOnInterrupt } from "./cleanup.js";
import { startBenchServer } from "./server.js";

const run = promisify(execFile);

/** Files in the repository (a README besides), in nested folders, 1–8 KiB of text each. */
export const REPOSITORY_FILES = 5000;
/** Files the result changes (half of them) or adds (the other half). */
export const RESULT_FILES = 100;
const REPOSITORY_NAME = "large";
const DEFAULT_BRANCH = "main";

// ---------------------------------------------------------------------------------------------
// The repository's content: deterministic, text that compresses about as source code does.

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "ve", "zo", "pa", "shi", "gu", "de", "fo", "ri", "su", "yo", "ban", "cor", "dil", "mek"];

function word(random: () => number): string {
  let w = "";
  const n = 1 + Math.floor(random() * 3);
  for (let i = 0; i < n; i++) w += SYLLABLES[Math.floor(random() * SYLLABLES.length)]!;
  return w;
}

/** A file of 1–8 KiB that reads like TypeScript. */
export function fileText(seed: number): string {
  const random = prng(seed);
  const target = 1024 + Math.floor(random() * 7 * 1024);
  const lines: string[] = [`// ${word(random)} ${word(random)} ${word(random)} (${seed})`];
  let size = lines[0]!.length + 1;
  while (size < target) {
    const line =
      random() < 0.5
        ? `export function ${word(random)}${word(random)}(${word(random)}: number, ${word(random)}: string): string {\n  return \`${word(random)} \${${seed % 97}} ${word(random)}\`;\n}`
        : `const ${word(random)} = { ${word(random)}: ${Math.floor(random() * 10_000)}, ${word(random)}: "${word(random)} ${word(random)}" };`;
    lines.push(line);
    size += line.length + 1;
  }
  return `${lines.join("\n")}\n`;
}

/** The path of file i: 10 top folders of 10 folders of 50 files. */
export function filePath(i: number): string {
  return `src/part${Math.floor(i / 500)}/mod${Math.floor(i / 50) % 10}/file${i % 50}.ts`;
}

/** The repository's history after its README: the files in two commits, then 500 of them changed. */
export function repositoryCommits(files = REPOSITORY_FILES): { message: string; files: Record<string, string> }[] {
  const half = Math.floor(files / 2);
  const range = (from: number, to: number, seed: (i: number) => number) => Object.fromEntries(Array.from({ length: to - from }, (_, k) => [filePath(from + k), fileText(seed(from + k))]));
  return [
    { message: "The first half", files: range(0, half, (i) => i) },
    { message: "The second half", files: range(half, files, (i) => i) },
    { message: "Rework a tenth", files: range(0, Math.min(files, 500), (i) => 1_000_000 + i * 10) },
  ];
}

/** A result of RESULT_FILES files: half of them the repository's changed, half new; `round` makes each result its own. */
export function resultFiles(round: string, count = RESULT_FILES): Record<string, string> {
  const files: Record<string, string> = {};
  let seed = 0;
  for (const ch of round) seed = (Math.imul(seed, 31) + ch.charCodeAt(0)) >>> 0;
  for (let k = 0; k < count; k++) {
    const file = k % 2 === 0 ? filePath((k * 37) % REPOSITORY_FILES) : `src/added/${round}/new${k}.ts`;
    files[file] = fileText(seed + k);
  }
  return files;
}

// ---------------------------------------------------------------------------------------------
// The remote's process: a plain git http-backend serving the repository.

interface RemoteReady {
  url: string;
  root: string;
  gitDir: string;
  base: string;
  packBytes: number;
  treeBytes: number;
}

async function serveRemote(): Promise<void> {
  const remote = await startGitRemote();
  const removeRoot = () => fs.rmSync(remote.root, { recursive: true, force: true });
  process.once("exit", removeRoot);
  process.once("SIGTERM", () => process.exit(0));
  const send = parentChannel<never>(() => undefined);
  const url = await remote.createRepository(REPOSITORY_NAME, { defaultBranch: DEFAULT_BRANCH, files: { "README.md": "# A large repository\n" } });
  const gitDir = remote.gitDir(REPOSITORY_NAME);
  const commits = repositoryCommits();
  const ids = await importCommits(gitDir, DEFAULT_BRANCH, commits);
  // One pack, as a repository that has been gc'd is: what a server serves most often.
  await git(["repack", "-a", "-d", "-q"], { cwd: gitDir });
  const packs = fs.readdirSync(path.join(gitDir, "objects", "pack")).filter((f) => f.endsWith(".pack"));
  const packBytes = packs.reduce((sum, f) => sum + fs.statSync(path.join(gitDir, "objects", "pack", f)).size, 0);
  const sizes = await git(["ls-tree", "-r", "-l", ids.at(-1)!], { cwd: gitDir });
  const treeBytes = sizes.split("\n").reduce((sum, line) => sum + Number(line.split(/\s+/)[3]), 0);
  const ready: RemoteReady = { url, root: remote.root, gitDir, base: ids.at(-1)!, packBytes, treeBytes };
  send(ready);
}

if (process.env.BENCH_WORKSPACES_ROLE === "remote") {
  serveRemote().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/** A TCP relay in front of `target` counting the bytes each way. */
interface Relay {
  url: string;
  down: number;
  up: number;
  close(): Promise<void>;
}

async function relay(target: string): Promise<Relay> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const counts = { down: 0, up: 0 };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    client.on("data", (chunk: Buffer) => (counts.up += chunk.length));
    upstream.on("data", (chunk: Buffer) => (counts.down += chunk.length));
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    get down() {
      return counts.down;
    },
    get up() {
      return counts.up;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

let ticks: number | undefined;
/** A process's CPU time so far, µs: its own, and that of its children it has waited for (git http-backend and what it runs). */
function cpuOf(pid: number): { own: number; children: number } {
  ticks ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
  // utime, stime, cutime, cstime: fields 14–17.
  return { own: ((fields[11]! + fields[12]!) * 1e6) / ticks, children: ((fields[13]! + fields[14]!) * 1e6) / ticks };
}

type Step = "first run: fetch the workspace" | "result: push 100 files" | "second run: fetch what is new" | "second run: nothing new";
type ClientName = "isomorphic-git" | "git";
type TargetName = "foreman" | "git http-backend";

const STEPS: Step[] = ["first run: fetch the workspace", "result: push 100 files", "second run: fetch what is new", "second run: nothing new"];

interface Sample {
  ms: number;
  /** The transfer alone, when the step also updates the work tree (fetch, then fast-forward). */
  transferMs?: number;
  down: number;
  up: number;
  serverCpuUs: number;
  gitCpuUs: number;
  /** isomorphic-git: the longest its event loop went without a turn, ms. */
  stallMs?: number;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export interface WorkspaceRow {
  step: Step;
  client: ClientName;
  target: TargetName;
  ms: Spread;
  transferMs: Spread | undefined;
  downBytes: number;
  upBytes: number;
  /** The serving process's own CPU (Foreman's node; the remote's node relaying CGI output), ms per operation. */
  serverCpuMs: Spread;
  /** The CPU of the git processes it ran for the operation (git http-backend, upload-pack or receive-pack, pack-objects …), ms. */
  gitCpuMs: Spread;
  /** isomorphic-git: the longest its event loop stalled, ms (the worst repeat). */
  maxStallMs: number | undefined;
  samples: number;
}

export interface WorkspacesResult {
  repeats: number;
  files: number;
  treeBytes: number;
  packBytes: number;
  resultFiles: number;
  rows: WorkspaceRow[];
  errors: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const spread = (values: number[]): Spread => ({ median: median(values), min: Math.min(...values), max: Math.max(...values) });

/** What the git command, or isomorphic-git, does to a workspace. */
interface GitClient {
  name: ClientName;
  clone(url: string, branch: string, dir: string, token: string | undefined): Promise<void>;
  commit(dir: string, files: Record<string, string>, message: string): Promise<string>;
  push(url: string, branch: string, dir: string, token: string | undefined): Promise<void>;
  /** Fetches the branch and fast-forwards the work tree to it; resolves with the time the fetch alone took. */
  update(url: string, branch: string, dir: string, token: string | undefined): Promise<number>;
  head(dir: string): Promise<string>;
  /** The longest the client's event loop stalled during its last operation, ms (isomorphic-git only). */
  lastStallMs?(): number | undefined;
}

const bearerEnv = (token: string | undefined): Record<string, string> =>
  token === undefined ? {} : { GIT_CONFIG_COUNT: "1", GIT_CONFIG_KEY_0: "http.extraHeader", GIT_CONFIG_VALUE_0: `Authorization: Bearer ${token}` };

const gitCommand: GitClient = {
  name: "git",
  async clone(url, branch, dir, token) {
    await git(["clone", "--quiet", "--single-branch", "--branch", branch, url, dir], { env: bearerEnv(token) });
  },
  async commit(dir, files, message) {
    await writeFiles(dir, files);
    await git(["-C", dir, "add", "-A"]);
    await git(["-C", dir, "commit", "--quiet", "-m", message]);
    return git(["-C", dir, "rev-parse", "HEAD"]);
  },
  async push(url, branch, dir, token) {
    await git(["-C", dir, "push", "--quiet", url, `HEAD:refs/heads/${branch}`], { env: bearerEnv(token) });
  },
  async update(url, branch, dir, token) {
    const started = performance.now();
    await git(["-C", dir, "fetch", "--quiet", "--no-tags", url, branch], { env: bearerEnv(token) });
    const fetched = performance.now() - started;
    await git(["-C", dir, "merge", "--quiet", "--ff-only", "FETCH_HEAD"]);
    return fetched;
  },
  head: (dir) => git(["-C", dir, "rev-parse", "HEAD"]),
};

const onAuthOf = (token: string | undefined) => (token === undefined ? undefined : () => ({ username: "worker", password: token }));
const AUTHOR = { name: "Bench Worker", email: "worker@example.com" };

/** isomorphic-git's side, run in a process of its own (isomorphicGitProcess): it holds its event loop for seconds at a time. */
const isomorphicGitOps: Omit<GitClient, "name"> = {
  async clone(url, branch, dir, token) {
    await isogit.clone({ fs, http: isoHttp, dir, url, ref: branch, singleBranch: true, noTags: true, onAuth: onAuthOf(token) });
  },
  async commit(dir, files, message) {
    await writeFiles(dir, files);
    await isogit.add({ fs, dir, filepath: Object.keys(files) });
    return isogit.commit({ fs, dir, message, author: AUTHOR });
  },
  async push(url, branch, dir, token) {
    const result = await isogit.push({ fs, http: isoHttp, dir, url, ref: branch, remoteRef: branch, onAuth: onAuthOf(token) });
    if (!result.ok) throw new Error(`isomorphic-git push refused: ${JSON.stringify(result.refs)}`);
  },
  async update(url, branch, dir, token) {
    const started = performance.now();
    const { fetchHead } = await isogit.fetch({ fs, http: isoHttp, dir, url, ref: branch, singleBranch: true, tags: false, onAuth: onAuthOf(token) });
    const fetched = performance.now() - started;
    if (fetchHead === null) throw new Error(`isomorphic-git fetched no ${branch}`);
    await isogit.merge({ fs, dir, ours: branch, theirs: fetchHead, fastForwardOnly: true, author: AUTHOR });
    await isogit.checkout({ fs, dir, ref: branch });
    return fetched;
  },
  head: (dir) => isogit.resolveRef({ fs, dir, ref: "HEAD" }),
};

interface IsoRequest {
  id: number;
  op: "clone" | "commit" | "push" | "update" | "head";
  url: string;
  branch: string;
  dir: string;
  token: string | undefined;
  files: Record<string, string>;
  message: string;
}

type IsoReply = { id: number; ok: true; value: string | number | null; stallMs: number } | { id: number; ok: false; error: string };

/**
 * The isomorphic-git client's process (BENCH_WORKSPACES_ROLE=isomorphic-git): it inflates,
 * hashes and checks out in JavaScript, holding its event loop for seconds at a time, which in
 * this process would stall the worker's heartbeats (the lease would be lost mid-clone) and the
 * relay. One request at a time, as JSON lines.
 */
function serveIsomorphicGit(): void {
  const handle = async (q: IsoRequest): Promise<string | number | null> => {
    switch (q.op) {
      case "clone":
        await isomorphicGitOps.clone(q.url, q.branch, q.dir, q.token);
        return null;
      case "commit":
        return isomorphicGitOps.commit(q.dir, q.files, q.message);
      case "push":
        await isomorphicGitOps.push(q.url, q.branch, q.dir, q.token);
        return null;
      case "update":
        return isomorphicGitOps.update(q.url, q.branch, q.dir, q.token);
      case "head":
        return isomorphicGitOps.head(q.dir);
    }
  };
  const send = parentChannel<IsoRequest>((q) => {
    // The longest the event loop went without a turn during the request: what a heartbeat timer
    // in the same process would have waited.
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    handle(q).then(
      (value) => {
        delay.disable();
        send({ id: q.id, ok: true, value, stallMs: delay.max / 1e6 } satisfies IsoReply);
      },
      (error: unknown) => send({ id: q.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies IsoReply),
    );
  });
}

if (process.env.BENCH_WORKSPACES_ROLE === "isomorphic-git") serveIsomorphicGit();

/** The isomorphic-git client, in its process. */
function isomorphicGitProcess(): GitClient & { stop(): Promise<void> } {
  const child = startBenchChild<IsoReply>("workspaces.ts", { BENCH_WORKSPACES_ROLE: "isomorphic-git" });
  let last = 0;
  let stallMs: number | undefined;
  async function call(op: IsoRequest["op"], args: Partial<Omit<IsoRequest, "id" | "op">>): Promise<string | number | null> {
    const id = ++last;
    const reply = child.next((m): m is IsoReply => m.id === id);
    child.send({ id, op, url: "", branch: "", dir: "", token: undefined, files: {}, message: "", ...args });
    const r = await reply;
    if (!r.ok) throw new Error(`isomorphic-git ${op}: ${r.error}`);
    stallMs = r.stallMs;
    return r.value;
  }
  return {
    name: "isomorphic-git",
    async clone(url, branch, dir, token) {
      await call("clone", { url, branch, dir, token });
    },
    commit: async (dir, files, message) => String(await call("commit", { dir, files, message })),
    async push(url, branch, dir, token) {
      await call("push", { url, branch, dir, token });
    },
    update: async (url, branch, dir, token) => Number(await call("update", { url, branch, dir, token })),
    head: async (dir) => String(await call("head", { dir })),
    lastStallMs: () => stallMs,
    stop: () => child.stop(),
  };
}

const bearer =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };

/** One run a target gives a worker: where to fetch and push, as whom, and what to do when it ends. */
interface Run {
  url: string;
  branch: string;
  token: string | undefined;
}

/** Where the workspaces come from: Foreman's task runs, or the remote's branches. */
interface Target {
  name: TargetName;
  pid: number;
  relay: Relay;
  /** The first run of a new task (a new branch at the base commit on the remote). */
  firstRun(label: string): Promise<Run>;
  /** The run that pushed `head` ends; the second run on the same branch begins. */
  secondRun(run: Run, head: string): Promise<Run>;
  /** The second run ends. */
  finish(run: Run, head: string): Promise<void>;
}

async function foremanTarget(serverUrl: string, pid: number, remoteUrl: string): Promise<Target & { close(): Promise<void> }> {
  const transport = createConnectTransport({ baseUrl: serverUrl, httpVersion: "1.1" });
  const workspace = (await createClient(WorkspaceService, transport).createWorkspace({ name: "workspaces bench" })).workspace!;
  const repositories = createClient(RepositoryService, transport);
  const repository = (await repositories.addRepository({ workspaceId: workspace.id, remoteUrl })).repository!;
  const group = (await repositories.createRepositoryGroup({ workspaceId: workspace.id, repositoryIds: [repository.id] })).repositoryGroup!;
  const tasks = createClient(TaskService, transport);
  const { secret } = await createClient(AuthService, transport).createWorkerRegistrationToken({ name: "workspaces bench", ttlSeconds: 0 });
  const { workerToken, heartbeatIntervalSeconds } = await createClient(WorkerService, transport).registerWorker({
    registrationToken: secret,
    name: "workspaces bench worker",
    agentTypes: [AgentType.CLAUDE_CODE],
    maxConcurrentSessions: 1,
  });
  const worker: Client<typeof WorkerService> = createClient(WorkerService, createConnectTransport({ baseUrl: serverUrl, httpVersion: "1.1", interceptors: [bearer(workerToken)] }));
  const sessionOf = new Map<string, string>();
  // The held lease is renewed as a worker daemon renews it: an isomorphic-git clone may outlast one.
  let held: { sessionId: string; leaseToken: string } | undefined;
  const timer = setInterval(() => {
    void worker.heartbeat({ status: held === undefined ? WorkerStatus.IDLE : WorkerStatus.BUSY, leases: held === undefined ? [] : [held] }).catch(() => undefined);
  }, heartbeatIntervalSeconds * 1000);
  const relayed = await relay(serverUrl);
  const taskOf = new Map<string, string>();

  async function claim(): Promise<Run> {
    for (let i = 0; i < 20; i++) {
      const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 10 });
      if (assignment === undefined) continue;
      const a: Assignment = assignment;
      const lease = a.lease!;
      held = { sessionId: lease.sessionId, leaseToken: lease.leaseToken };
      await worker.reportStatus({ sessionId: lease.sessionId, leaseToken: lease.leaseToken, state: SessionState.RUNNING });
      const r = a.repositories[0]!;
      const run = { url: new URL(r.cloneUrl, relayed.url).toString(), branch: r.branchName, token: lease.leaseToken };
      sessionOf.set(lease.leaseToken, lease.sessionId);
      taskOf.set(lease.leaseToken, a.taskId);
      return run;
    }
    throw new Error("the worker got no assignment");
  }

  async function succeed(run: Run, head: string): Promise<string> {
    const sessionId = sessionOf.get(run.token!)!;
    await worker.reportStatus({ sessionId, leaseToken: run.token!, state: SessionState.SUCCEEDED, errorMessage: "", headCommit: head });
    held = undefined;
    const taskId = taskOf.get(run.token!)!;
    const { task } = await tasks.getTask({ id: taskId });
    const end = task?.task.case === "unitTask" ? task.task.value.endCommit : undefined;
    if (end !== head) throw new Error(`task ${taskId} ended at ${end}, not at the pushed ${head}`);
    return taskId;
  }

  return {
    name: "foreman",
    pid,
    relay: relayed,
    async firstRun(label) {
      await tasks.createUnitTask({ repositoryGroupId: group.id, prompt: `Workspace bench ${label}` });
      return claim();
    },
    async secondRun(run, head) {
      const taskId = await succeed(run, head);
      await tasks.requestChanges({ id: taskId, feedback: "Once more" });
      const next = await claim();
      if (next.branch !== run.branch) throw new Error(`the second run is on ${next.branch}, not ${run.branch}`);
      return next;
    },
    async finish(run, head) {
      await succeed(run, head);
    },
    async close() {
      clearInterval(timer);
      await relayed.close();
    },
  };
}

async function remoteTarget(remote: RemoteReady, pid: number): Promise<Target & { close(): Promise<void> }> {
  const relayed = await relay(remote.url);
  const url = new URL(new URL(remote.url).pathname, relayed.url).toString();
  return {
    name: "git http-backend",
    pid,
    relay: relayed,
    async firstRun(label) {
      const branch = `bench/${label}`;
      await git(["update-ref", `refs/heads/${branch}`, remote.base], { cwd: remote.gitDir });
      return { url, branch, token: undefined };
    },
    async secondRun(run) {
      return run;
    },
    async finish(run) {
      await git(["update-ref", "-d", `refs/heads/${run.branch}`], { cwd: remote.gitDir });
    },
    close: () => relayed.close(),
  };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 50));

/** Runs `op` once and measures it: time, bytes through the relay, and the target's CPU (read after its git processes have been waited for). */
async function measure(target: Target, client: GitClient, op: () => Promise<number | void>): Promise<Sample> {
  await settle();
  const cpu = cpuOf(target.pid);
  const down = target.relay.down;
  const up = target.relay.up;
  const started = performance.now();
  const transfer = await op();
  const ms = performance.now() - started;
  await settle();
  const after = cpuOf(target.pid);
  return {
    ms,
    ...(typeof transfer === "number" ? { transferMs: transfer } : {}),
    down: target.relay.down - down,
    up: target.relay.up - up,
    serverCpuUs: after.own - cpu.own,
    gitCpuUs: after.children - cpu.children,
    ...(client.lastStallMs === undefined ? {} : { stallMs: client.lastStallMs() }),
  };
}

/** One repeat of the whole cycle for one target and client: a sample per step. */
async function cycle(target: Target, client: GitClient, label: string, tmp: string, files: number, aside: Record<string, number>): Promise<Sample[]> {
  const dir = await mkdtemp(path.join(tmp, `${client.name}-`));
  const work = path.join(dir, "work");
  const kept = path.join(dir, "kept");
  /** Times what is not measured, for the progress line: where a cycle's time goes besides. */
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      return await f();
    } finally {
      aside[name] = (aside[name] ?? 0) + performance.now() - started;
    }
  };
  try {
    const first = await timed("claim", () => target.firstRun(label));
    const clone = await measure(target, client, () => client.clone(first.url, first.branch, work, first.token));
    const listed = (await git(["-C", work, "ls-files"])).split("\n").length;
    if (listed !== files + 1) throw new Error(`${client.name} from ${target.name}: the workspace has ${listed} files, not ${files + 1}`);
    // The copy a worker would still hold at the base commit when the second run begins.
    await timed("copy", () => run("cp", ["-a", work, kept]));
    const head = await timed("commit", () => client.commit(work, resultFiles(label), `Result ${label}`));
    const push = await measure(target, client, () => client.push(first.url, first.branch, work, first.token));
    const second = await timed("claim", () => target.secondRun(first, head));
    const fetchNew = await measure(target, client, () => client.update(second.url, second.branch, kept, second.token));
    if ((await client.head(kept)) !== head) throw new Error(`${client.name} from ${target.name}: the second run's fetch did not bring ${head}`);
    const nothingNew = await measure(target, client, () => client.update(second.url, second.branch, work, second.token));
    await timed("claim", () => target.finish(second, head));
    return [clone, push, fetchNew, nothingNew];
  } finally {
    await timed("remove", () => run("rm", ["-rf", dir]));
  }
}

export async function runWorkspaces(options: { repeats: number }): Promise<WorkspacesResult> {
  const tmp = makeTempDir("foreman-bench-workspaces-");
  const remoteChild = startBenchChild<RemoteReady>("workspaces.ts", { BENCH_WORKSPACES_ROLE: "remote" });
  let removeRemoteRoot: (() => Promise<void>) | undefined;
  let server: Awaited<ReturnType<typeof startBenchServer>> | undefined;
  const closers: (() => Promise<void>)[] = [];
  try {
    process.stderr.write(`  making a ${REPOSITORY_FILES}-file repository on a git http-backend remote\n`);
    const remote = await remoteChild.next((m): m is RemoteReady => typeof m === "object" && m !== null && "url" in m);
    removeRemoteRoot = removeOnInterrupt(() => fs.rmSync(remote.root, { recursive: true, force: true }));
    process.stderr.write(`  remote ready at ${remote.url} (pid ${remoteChild.pid}): ${REPOSITORY_FILES + 1} files, ${(remote.treeBytes / 2 ** 20).toFixed(1)} MiB, packed ${(remote.packBytes / 2 ** 20).toFixed(1)} MiB\n`);
    server = await startBenchServer({ FOREMAN_CONTACT_REMOTES: "true" });
    const foreman = await foremanTarget(server.url, server.pid, remote.url);
    closers.push(() => foreman.close());
    const peer = await remoteTarget(remote, remoteChild.pid);
    closers.push(() => peer.close());
    const targets: Target[] = [foreman, peer];
    const isomorphicGit = isomorphicGitProcess();
    closers.push(() => isomorphicGit.stop());
    const clients = [isomorphicGit, gitCommand];
    const samples = new Map<string, Sample[][]>();
    const key = (t: Target, c: GitClient) => `${t.name}|${c.name}`;
    for (let r = 0; r < options.repeats; r++) {
      for (const client of clients) {
        // Alternate which target goes first, so that a drift in the machine's load falls on both.
        const order = r % 2 === 0 ? targets : [...targets].reverse();
        for (const target of order) {
          const label = `r${r}-${client.name === "git" ? "git" : "iso"}-${target.name === "foreman" ? "f" : "p"}-${randomUUID().slice(0, 6)}`;
          const started = performance.now();
          const aside: Record<string, number> = {};
          const got = await cycle(target, client, label, tmp.path, REPOSITORY_FILES, aside);
          const besides = Object.entries(aside)
            .map(([name, ms]) => `${name} ${(ms / 1000).toFixed(1)}`)
            .join(", ");
          process.stderr.write(
            `  repeat ${r + 1}/${options.repeats}: ${client.name} ↔ ${target.name}: ${got.map((s) => s.ms.toFixed(0)).join(" / ")} ms (cycle ${((performance.now() - started) / 1000).toFixed(1)} s; besides, s: ${besides})\n`,
          );
          const list = samples.get(key(target, client)) ?? [];
          list.push(got);
          samples.set(key(target, client), list);
        }
      }
    }
    const rows: WorkspaceRow[] = [];
    STEPS.forEach((step, s) => {
      for (const client of clients) {
        for (const target of targets) {
          const got = (samples.get(key(target, client)) ?? []).map((cycleSamples) => cycleSamples[s]!);
          const transfers = got.flatMap((x) => (x.transferMs === undefined ? [] : [x.transferMs]));
          rows.push({
            step,
            client: client.name,
            target: target.name,
            ms: spread(got.map((x) => x.ms)),
            transferMs: transfers.length === 0 ? undefined : spread(transfers),
            downBytes: median(got.map((x) => x.down)),
            upBytes: median(got.map((x) => x.up)),
            serverCpuMs: spread(got.map((x) => x.serverCpuUs / 1000)),
            gitCpuMs: spread(got.map((x) => x.gitCpuUs / 1000)),
            maxStallMs: got.some((x) => x.stallMs !== undefined) ? Math.max(...got.map((x) => x.stallMs ?? 0)) : undefined,
            samples: got.length,
          });
        }
      }
    });
    return { repeats: options.repeats, files: REPOSITORY_FILES, treeBytes: remote.treeBytes, packBytes: remote.packBytes, resultFiles: RESULT_FILES, rows, errors: 0 };
  } finally {
    for (const close of closers) await close();
    await server?.stop();
    await remoteChild.stop();
    await removeRemoteRoot?.();
    tmp.remove();
  }
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((row) => row[c]!.length)));
  const line = (row: string[]) => row.map((cell, c) => (c < 3 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ");
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)];
}

const ms = (s: Spread) => `${s.median.toFixed(0)} [${s.min.toFixed(0)}–${s.max.toFixed(0)}]`;
const kib = (bytes: number) => (bytes >= 1024 * 1024 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`);

export function formatWorkspaces(result: WorkspacesResult): string {
  return [
    `workspaces: a ${result.files}-file repository (${(result.treeBytes / 2 ** 20).toFixed(1)} MiB of text, packed ${(result.packBytes / 2 ** 20).toFixed(1)} MiB) delivered to a worker and a ${result.resultFiles}-file result taken back, through Foreman's workspace route beside a plain git http-backend; median [min–max] of ${result.repeats} repeats`,
    ...table(
      ["step", "client", "served by", "ms", "of which fetch ms", "bytes down", "bytes up", "server CPU ms", "git CPU ms", "client stall ms"],
      result.rows.map((r) => [
        r.step,
        r.client,
        r.target,
        ms(r.ms),
        r.transferMs === undefined ? "—" : ms(r.transferMs),
        kib(r.downBytes),
        kib(r.upBytes),
        ms(r.serverCpuMs),
        ms(r.gitCpuMs),
        r.maxStallMs === undefined ? "—" : r.maxStallMs.toFixed(0),
      ]),
    ),
    "first run: clone of the task branch alone, work tree checked out (git clone --single-branch --branch; isogit.clone singleBranch, noTags);",
    "result: push of one commit changing 50 files and adding 50 (made before the clock starts); second run: after SUCCEEDED and RequestChanges,",
    "the second run's fetch into a copy of the workspace kept at the base commit (what is new is the result's commit), then a fast-forward of the",
    "work tree; nothing new: the same into the workspace that pushed. server CPU: the serving process itself (Foreman's node; the remote's node",
    "relaying CGI output); git CPU: the git processes it ran (git http-backend, upload-pack/receive-pack, pack-objects, index-pack). Bytes: on the",
    "wire, HTTP included, through the same counting relay for every row. client stall: isomorphic-git (in a process of its own) went this long",
    "at most without an event-loop turn (worst repeat): a heartbeat timer beside it would have waited as long (a lease lasts 3 heartbeats, 30 s).",
  ].join("\n");
}
