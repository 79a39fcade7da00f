// Dispatch benchmarks (issue 16): how soon a long-polling worker has a task that was just
// created (dispatch-latency), how many claim + completion cycles workers get through
// (dispatch-throughput, beside graphile-worker on the same PostgreSQL), and what 10,000 idle
// workers heartbeating and long-polling cost the server (dispatch-idle). Each runs the real
// server as a child process (bench/server.ts): SQLite by default, and PostgreSQL when one answers
// at FOREMAN_BENCH_DATABASE_URL, in a database of its own dropped at the end.
import { randomBytes, randomUUID } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { setMaxListeners } from "node:events";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import { Logger, makeWorkerUtils, run as runGraphile, type WorkerUtils } from "graphile-worker";
import pg from "pg";
import { SessionState } from "../gen/foreman/v1/common_pb.js";
import { RepositoryService } from "../gen/foreman/v1/repository_pb.js";
import { TaskService } from "../gen/foreman/v1/task_pb.js";
import { WorkerService, WorkerStatus, type Assignment } from "../gen/foreman/v1/worker_pb.js";
import { WorkspaceService } from "../gen/foreman/v1/workspace_pb.js";
import { createBenchDatabase } from "./databases.js";
import { startBenchChild } from "./children.js";
import { trackChild } from "./cleanup.js";
import { freePort, processCpuMicros, startBenchServer, type BenchServer } from "./server.js";

/** The server's configured registration token: its workers serve every user, in every mode. */
const REGISTRATION_TOKEN = randomBytes(24).toString("hex");
/** Node's HTTP/2 client assumes 100 streams per connection until the server says otherwise. */
const WORKERS_PER_CONNECTION = 50;
/** FOREMAN_DB_POOL_SIZE's default: the connections our server's workers share. */
const FOREMAN_POOL_SIZE = 10;
/** Calls in flight while queueing tasks before a throughput drain (not measured). */
const QUEUE_CONCURRENCY = 32;

export interface DispatchOptions {
  durationMs: number;
  warmupMs: number;
  repeats: number;
}

type Dialect = "sqlite" | "postgres";

// ---------------------------------------------------------------------------------------------
// Shared pieces

/** The dialects to measure: SQLite, and PostgreSQL in a fresh database when one answers. */
async function databases(benchmark: string): Promise<{ dialect: Dialect; settings: Record<string, string>; drop(): Promise<void> }[]> {
  const list: { dialect: Dialect; settings: Record<string, string>; drop(): Promise<void> }[] = [
    { dialect: "sqlite", settings: {}, drop: async () => undefined },
  ];
  const db = await createBenchDatabase(benchmark);
  if (db !== undefined) list.push({ dialect: "postgres", settings: { DATABASE_URL: db.url }, drop: db.drop });
  return list;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

/** Every window's samples together, sorted. */
const pooled = (windows: number[][]) => windows.flat().sort((a, b) => a - b);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return NaN;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * How long some runnable task on the machine waited for a CPU so far (Linux's pressure stall
 * information, "some" total), µs; undefined where the kernel does not say. On a shared machine
 * the figures are only as good as this is low.
 */
function cpuStallMicros(): number | undefined {
  try {
    const match = /^some .*total=(\d+)/m.exec(readFileSync("/proc/pressure/cpu", "utf8"));
    return match === null ? undefined : Number(match[1]);
  } catch {
    return undefined;
  }
}

/** Measures the share of wall time some task waited for a CPU, from now until `stop()`. */
export function cpuPressure(): { stop(): number | undefined } {
  const stall = cpuStallMicros();
  const started = performance.now();
  return {
    stop() {
      const now = cpuStallMicros();
      if (stall === undefined || now === undefined) return undefined;
      return (now - stall) / ((performance.now() - started) * 1000);
    },
  };
}

/** The note under each table: how busy the machine was while it was measured. */
export function pressureNote(share: number | undefined): string {
  if (share === undefined) return "machine: no CPU pressure information (/proc/pressure/cpu)";
  return `machine: some task waited for a CPU ${(share * 100).toFixed(0)}% of the time (CPU pressure); near 0% the figures are the server's, near 100% the machine's`;
}

/** Median and range of a figure over repeats. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

function spread(values: number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((row) => row[c]!.length)));
  const line = (row: string[]) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ");
  return [line(header), ...rows.map(line)];
}

const fixed = (s: Spread, digits: number) => `${s.median.toFixed(digits)} [${s.min.toFixed(digits)}–${s.max.toFixed(digits)}]`;

/** One server with a workspace, a repository group to file tasks against, and its workers. */
interface Foreman {
  dialect: Dialect;
  server: BenchServer;
  tasks: Client<typeof TaskService>;
  groupId: string;
  sessions: Http2SessionManager[];
  /** Registers `count` workers (each holding at most one session), their calls over shared HTTP/2 connections. */
  workers(count: number): Promise<Client<typeof WorkerService>[]>;
  /** Files a unit task; returns its id. */
  createTask(prompt: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * What every dispatch server runs with: the registration token, and no contact with the made-up
 * remote its tasks name (a real server fetches a task's repository before queueing it, which
 * these benchmarks leave out: they measure the queue).
 */
const DISPATCH_SETTINGS = { FOREMAN_WORKER_REGISTRATION_TOKEN: REGISTRATION_TOKEN, FOREMAN_CONTACT_REMOTES: "false" };

async function startForeman(dialect: Dialect, settings: Record<string, string>): Promise<Foreman> {
  const server = await startBenchServer({ ...DISPATCH_SETTINGS, ...settings });
  const sessions: Http2SessionManager[] = [];
  const adminSession = new Http2SessionManager(server.url);
  sessions.push(adminSession);
  const admin = createConnectTransport({ baseUrl: server.url, httpVersion: "2", sessionManager: adminSession });
  const workspace = (await createClient(WorkspaceService, admin).createWorkspace({ name: `dispatch bench ${dialect}` })).workspace!;
  const repos = createClient(RepositoryService, admin);
  const repo = (await repos.addRepository({ workspaceId: workspace.id, remoteUrl: "https://github.com/acme/app.git" })).repository!;
  const group = (await repos.createRepositoryGroup({ workspaceId: workspace.id, repositoryIds: [repo.id] })).repositoryGroup!;
  const tasks = createClient(TaskService, admin);
  const anonymous = createClient(WorkerService, admin);
  const heartbeats: NodeJS.Timeout[] = [];
  return {
    dialect,
    server,
    tasks,
    groupId: group.id,
    sessions,
    async workers(count) {
      const registered = await Promise.all(
        Array.from({ length: count }, (_, i) =>
          anonymous.registerWorker({ registrationToken: REGISTRATION_TOKEN, name: `bench worker ${i}`, maxConcurrentSessions: 1 }),
        ),
      );
      return registered.map(({ workerToken, heartbeatIntervalSeconds }, i) => {
        if (i % WORKERS_PER_CONNECTION === 0) sessions.push(new Http2SessionManager(server.url));
        const bearer: Interceptor = (next) => (req) => {
          req.header.set("authorization", `Bearer ${workerToken}`);
          return next(req);
        };
        const transport = createConnectTransport({ baseUrl: server.url, httpVersion: "2", sessionManager: sessions.at(-1)!, interceptors: [bearer] });
        const worker = createClient(WorkerService, transport);
        // Heartbeats as a worker daemon sends them: one that stops is marked unhealthy after three intervals.
        const timer = setInterval(() => void worker.heartbeat({ status: WorkerStatus.IDLE }).catch(() => undefined), heartbeatIntervalSeconds * 1000);
        heartbeats.push(timer);
        return worker;
      });
    },
    async createTask(prompt) {
      const { unitTask } = await tasks.createUnitTask({ repositoryGroupId: group.id, prompt });
      return unitTask!.id;
    },
    async close() {
      for (const timer of heartbeats) clearInterval(timer);
      for (const s of sessions) s.abort();
      await server.stop();
    },
  };
}

/** What a worker does with a session it claimed, without an agent: RUNNING, then SUCCEEDED. */
async function complete(worker: Client<typeof WorkerService>, assignment: Assignment): Promise<void> {
  const lease = assignment.lease!;
  await worker.reportStatus({ sessionId: lease.sessionId, leaseToken: lease.leaseToken, state: SessionState.RUNNING });
  await worker.reportStatus({ sessionId: lease.sessionId, leaseToken: lease.leaseToken, state: SessionState.SUCCEEDED });
}

const aborted = (signal: AbortSignal) => signal.aborted;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// dispatch-latency: created → a long-polling worker has the assignment

export interface LatencyOptions extends DispatchOptions {
  /** Idle workers waiting in GetTask. */
  workers: number;
}

export interface LatencyResult {
  target: string;
  /** Per window: p50, p99, max of CreateUnitTask sent → the assignment received by a worker, ms. */
  p50Ms: Spread;
  p99Ms: Spread;
  maxMs: number;
  /** CreateUnitTask's own round trip (the task is created within it), p50 over all windows. */
  createP50Ms: number;
  /** CreateUnitTask answered → the assignment received (negative: the worker had it first), p50 and p99 over all windows. */
  afterAnswerP50Ms: number;
  afterAnswerP99Ms: number;
  tasks: number;
  errors: number;
}

/** The goal in issue 16. */
export const LATENCY_GOAL_P99_MS = 5;

/** bench/bare-dispatch-server.ts on a free port, once it listens: answering at once, or long-polling (see its header). */
async function startBare(mode: { longPoll: boolean }) {
  const port = await freePort();
  const bare = startBenchChild<{ listening?: boolean }>("bare-dispatch-server.ts", { BARE_DISPATCH_PORT: String(port), ...(mode.longPoll ? { BARE_DISPATCH_LONG_POLL: "1" } : {}) });
  await bare.next((m): m is { listening: true } => m.listening === true);
  return { bare, url: `http://127.0.0.1:${port}` };
}

/** What dispatch-latency times: a server that files tasks and the workers long-polling it. */
interface LatencyServer {
  name: string;
  workers(count: number): Promise<Client<typeof WorkerService>[]>;
  createTask(prompt: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * The peer: bench/bare-dispatch-server.ts in its long-poll mode, which hands each created task to
 * a waiting GetTask from memory: the two RPC legs alone, on this machine, in this run.
 */
async function bareLatencyServer(): Promise<LatencyServer> {
  const { bare, url } = await startBare({ longPoll: true });
  const sessions = [new Http2SessionManager(url)];
  const tasks = createClient(TaskService, createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager: sessions[0]! }));
  return {
    name: "bare connect-node (no database)",
    async workers(count) {
      return Array.from({ length: count }, (_, i) => {
        if (i % WORKERS_PER_CONNECTION === 0) sessions.push(new Http2SessionManager(url));
        return createClient(WorkerService, createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager: sessions.at(-1)! }));
      });
    },
    async createTask(prompt) {
      return (await tasks.createUnitTask({ prompt })).unitTask!.id;
    },
    async close() {
      for (const s of sessions) s.abort();
      bare.child.kill("SIGTERM");
      await bare.exited;
    },
  };
}

export async function runDispatchLatency(options: LatencyOptions): Promise<LatencyResult[]> {
  const dbs = await databases("dispatch-latency");
  const targets: {
    server: LatencyServer;
    controller: AbortController;
    /** Resolves a task's wait: called with the time its assignment arrived, once its run is reported finished. */
    waiting: Map<string, (receivedAt: number) => void>;
    early: Map<string, number>;
    windows: { p50: number; p99: number; max: number; create: number[]; afterAnswer: number[] }[];
    tasks: number;
    errors: number;
  }[] = [];
  try {
    const servers: (() => Promise<LatencyServer>)[] = [
      ...dbs.map((db) => async () => {
        const foreman = await startForeman(db.dialect, db.settings);
        return { name: db.dialect, workers: (n: number) => foreman.workers(n), createTask: (p: string) => foreman.createTask(p), close: () => foreman.close() };
      }),
      bareLatencyServer,
    ];
    for (const start of servers) {
      const server = await start();
      process.stderr.write(`  ${server.name}: started, with ${options.workers} long-polling workers\n`);
      const controller = new AbortController();
      setMaxListeners(options.workers + 10, controller.signal);
      const target = { server, controller, waiting: new Map(), early: new Map(), windows: [], tasks: 0, errors: 0 } as (typeof targets)[number];
      targets.push(target);
      for (const worker of await server.workers(options.workers)) {
        void (async () => {
          while (!aborted(target.controller.signal)) {
            let assignment: Assignment | undefined;
            try {
              ({ assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 300 }, { signal: target.controller.signal }));
            } catch {
              if (aborted(target.controller.signal)) break;
              target.errors++;
              // Not again at once: a refused poll retried in a loop would be all the server does.
              await sleep(100);
              continue;
            }
            if (assignment === undefined) continue;
            const receivedAt = performance.now();
            // Finished before the next task is created, so that each creation finds every worker idle.
            await complete(worker, assignment).catch(() => target.errors++);
            const resolve = target.waiting.get(assignment.taskId);
            if (resolve === undefined) target.early.set(assignment.taskId, receivedAt);
            else resolve(receivedAt);
          }
        })();
      }
    }
    // Round 0 warms up (BENCH_WARMUP_MS; skipped at 0); rounds go round-robin over targets.
    for (let round = options.warmupMs > 0 ? 0 : 1; round <= options.repeats; round++) {
      for (const target of targets) {
        const windowMs = round === 0 ? options.warmupMs : options.durationMs;
        const latencies: number[] = [];
        const creates: number[] = [];
        const afterAnswer: number[] = [];
        const started = performance.now();
        // At least 20 tasks a window, so that its p99 is more than one sample.
        while (performance.now() - started < windowMs || latencies.length < 20) {
          const sent = performance.now();
          let resolveDone!: (receivedAt: number) => void;
          const done = new Promise<number>((resolve) => (resolveDone = resolve));
          const id = await target.server.createTask(`latency ${round} ${latencies.length}`);
          const answered = performance.now();
          creates.push(answered - sent);
          const early = target.early.get(id);
          if (early !== undefined) {
            target.early.delete(id);
            resolveDone(early);
          } else {
            target.waiting.set(id, resolveDone);
          }
          const receivedAt = await done;
          target.waiting.delete(id);
          latencies.push(receivedAt - sent);
          afterAnswer.push(receivedAt - answered);
        }
        latencies.sort((a, b) => a - b);
        const w = { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.at(-1)!, create: creates, afterAnswer };
        process.stderr.write(
          `  ${round === 0 ? "warm-up" : `repeat ${round}/${options.repeats}`} ${target.server.name}: ${latencies.length} tasks, ` +
            `p50 ${w.p50.toFixed(2)} ms, p99 ${w.p99.toFixed(2)} ms, max ${w.max.toFixed(2)} ms\n`,
        );
        if (round > 0) {
          target.windows.push(w);
          target.tasks += latencies.length;
        }
      }
    }
    return targets.map((t) => ({
      target: t.server.name,
      p50Ms: spread(t.windows.map((w) => w.p50)),
      p99Ms: spread(t.windows.map((w) => w.p99)),
      maxMs: Math.max(...t.windows.map((w) => w.max)),
      createP50Ms: percentile(pooled(t.windows.map((w) => w.create)), 50),
      afterAnswerP50Ms: percentile(pooled(t.windows.map((w) => w.afterAnswer)), 50),
      afterAnswerP99Ms: percentile(pooled(t.windows.map((w) => w.afterAnswer)), 99),
      tasks: t.tasks,
      errors: t.errors,
    }));
  } finally {
    for (const t of targets) {
      t.controller.abort();
      await t.server.close();
    }
    for (const db of dbs) await db.drop();
  }
}

export function formatDispatchLatency(results: LatencyResult[], options: LatencyOptions): string {
  const rows = results.map((r) => [
    r.target,
    fixed(r.p50Ms, 2),
    fixed(r.p99Ms, 2),
    r.maxMs.toFixed(2),
    `${r.p99Ms.median <= LATENCY_GOAL_P99_MS ? "met" : "missed"} (p99 ≤ ${LATENCY_GOAL_P99_MS} ms)`,
    r.createP50Ms.toFixed(2),
    `${r.afterAnswerP50Ms.toFixed(2)} / ${r.afterAnswerP99Ms.toFixed(2)}`,
    String(r.tasks),
    String(r.errors),
  ]);
  return [
    `dispatch latency: CreateUnitTask sent → a worker long-polling in GetTask has the assignment; ${options.workers} idle workers, ` +
      `tasks one at a time, ${options.repeats} windows of ${options.durationMs} ms per target; median [range] over windows; ` +
      `bare connect-node: the same two calls, the task handed to a waiting poll from memory`,
    ...table(["target", "p50 ms", "p99 ms", "max ms", "goal", "create p50 ms", "after answer p50 / p99 ms", "tasks", "errors"], rows),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// dispatch-throughput: claim + completion, ours beside graphile-worker

export interface ThroughputOptions extends DispatchOptions {
  concurrencies: number[];
  /** Jobs per drain; undefined: enough for a window of about durationMs at the warm-up's rate. */
  jobs: number | undefined;
}

export interface ThroughputResult {
  target: string;
  workers: number;
  jobsPerSecond: Spread;
  /** The server's CPU per job (our server only; graphile-worker's is PostgreSQL's). */
  serverCpuMicrosPerJob: number | undefined;
  /** This process's CPU per job: our workers' RPC clients, or graphile-worker itself. */
  clientCpuMicrosPerJob: number;
  jobs: number;
  errors: number;
}

interface Drainer {
  name: string;
  /** Queues `jobs` jobs, then measures how long `workers` workers take to claim and complete them all. */
  drain(jobs: number, workers: number): Promise<{ ms: number; cpuMicros: number | undefined; clientCpuMicros: number; errors: number }>;
  close(): Promise<void>;
}

async function foremanDrainer(foreman: Foreman, maxWorkers: number): Promise<Drainer> {
  const workers = await foreman.workers(maxWorkers);
  return rpcDrainer(`foreman ${foreman.dialect}`, workers, {
    async queue(jobs) {
      let next = 0;
      await Promise.all(
        Array.from({ length: QUEUE_CONCURRENCY }, async () => {
          while (next < jobs) await foreman.createTask(`job ${next++}`);
        }),
      );
    },
    cpuMicros: () => foreman.server.cpuMicros(),
    close: () => foreman.close(),
  });
}

/**
 * The same worker loop against bench/bare-dispatch-server.ts, which answers every GetTask with
 * an assignment and keeps nothing: what three calls per job cost with no server behind them.
 */
async function bareDrainer(maxWorkers: number): Promise<Drainer> {
  const { bare, url } = await startBare({ longPoll: false });
  const sessions: Http2SessionManager[] = [];
  const workers = Array.from({ length: maxWorkers }, (_, i) => {
    if (i % WORKERS_PER_CONNECTION === 0) sessions.push(new Http2SessionManager(url));
    return createClient(WorkerService, createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager: sessions.at(-1)! }));
  });
  return rpcDrainer("bare connect-node (no database)", workers, {
    queue: async () => undefined,
    cpuMicros: () => processCpuMicros(bare.pid),
    async close() {
      for (const s of sessions) s.abort();
      bare.child.kill("SIGTERM");
      await bare.exited;
    },
  });
}

/** `count` workers claim and complete `jobs` queued jobs over RPC, one at a time each. */
function rpcDrainer(
  name: string,
  workers: Client<typeof WorkerService>[],
  target: { queue(jobs: number): Promise<void>; cpuMicros(): number; close(): Promise<void> },
): Drainer {
  return {
    name,
    async drain(jobs, count) {
      await target.queue(jobs);
      const controller = new AbortController();
      // Every worker's poll listens to it.
      setMaxListeners(count + 10, controller.signal);
      let claimed = 0;
      let completed = 0;
      let errors = 0;
      let allDone!: () => void;
      const done = new Promise<void>((resolve) => (allDone = resolve));
      const cpuBefore = target.cpuMicros();
      const clientBefore = process.cpuUsage();
      const started = performance.now();
      for (const worker of workers.slice(0, count)) {
        void (async () => {
          while (claimed < jobs && !controller.signal.aborted) {
            let assignment: Assignment | undefined;
            try {
              // A short wait: a poll that finds the rest claimed by others ends soon after the last.
              ({ assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 1 }, { signal: controller.signal }));
            } catch {
              if (controller.signal.aborted) break;
              errors++;
              await sleep(100);
              continue;
            }
            if (assignment === undefined || claimed >= jobs) continue;
            claimed++;
            // A job counts as drained once reported, whether or not the report was accepted.
            await complete(worker, assignment).catch(() => errors++);
            if (++completed === jobs) allDone();
          }
        })();
      }
      await done;
      const ms = performance.now() - started;
      const cpuMicros = target.cpuMicros() - cpuBefore;
      const client = process.cpuUsage(clientBefore);
      controller.abort();
      return { ms, cpuMicros, clientCpuMicros: client.user + client.system, errors };
    },
    close: () => target.close(),
  };
}

async function graphileDrainer(url: string): Promise<Drainer> {
  const quiet = new Logger(() => () => undefined);
  const utils: WorkerUtils = await makeWorkerUtils({ connectionString: url, logger: quiet });
  await utils.migrate();
  // Reads whether the queue is empty, on a connection of its own (not one the workers wait for).
  const watcher = new pg.Client({ connectionString: url });
  await watcher.connect();
  return {
    name: "graphile-worker",
    async drain(jobs, count) {
      await utils.addJobs(Array.from({ length: jobs }, (_, i) => ({ identifier: "noop", payload: { i } })));
      // As many connections for its workers as our server has for its (FOREMAN_DB_POOL_SIZE's
      // default, 10), plus the one it holds for LISTEN: the same database capacity, and a
      // shared PostgreSQL's max_connections (often 100) is not used up by one benchmark.
      const pool = new pg.Pool({ connectionString: url, max: Math.min(count, FOREMAN_POOL_SIZE) + 1 });
      // Errors of idle connections are graphile-worker's to handle; these listeners keep them from being unhandled.
      pool.on("error", () => undefined);
      pool.on("connect", (client) => client.on("error", () => undefined));
      let completed = 0;
      let allDone!: () => void;
      const done = new Promise<void>((resolve) => (allDone = resolve));
      const clientBefore = process.cpuUsage();
      const started = performance.now();
      // Its defaults: one get_job per job and one complete_job per job (no local queue, no batching).
      const runner = await runGraphile({
        pgPool: pool,
        concurrency: count,
        noHandleSignals: true,
        logger: quiet,
        taskList: {
          noop: async () => {
            if (++completed === jobs) allDone();
          },
        },
      });
      await done;
      // A job's completion is written after its task returns (not awaited by the worker): the
      // drain ends when the queue is empty.
      while (Number((await watcher.query<{ n: string }>("SELECT count(*) AS n FROM graphile_worker._private_jobs")).rows[0]!.n) > 0) {
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      const ms = performance.now() - started;
      const client = process.cpuUsage(clientBefore);
      await runner.stop();
      await pool.end();
      return { ms, cpuMicros: undefined, clientCpuMicros: client.user + client.system, errors: 0 };
    },
    async close() {
      await watcher.end();
      await utils.release();
    },
  };
}

export async function runDispatchThroughput(options: ThroughputOptions): Promise<ThroughputResult[]> {
  const dbs = await databases("dispatch-throughput");
  const drainers: Drainer[] = [];
  let graphileDb: { url: string; drop(): Promise<void> } | undefined;
  const maxWorkers = Math.max(...options.concurrencies);
  try {
    for (const db of dbs) {
      process.stderr.write(`  ${db.dialect}: starting the server and registering ${maxWorkers} workers\n`);
      drainers.push(await foremanDrainer(await startForeman(db.dialect, db.settings), maxWorkers));
    }
    if (dbs.some((db) => db.dialect === "postgres")) {
      graphileDb = await createBenchDatabase("dispatch-throughput");
      if (graphileDb !== undefined) drainers.push(await graphileDrainer(graphileDb.url));
    }
    drainers.push(await bareDrainer(maxWorkers));
    const results: ThroughputResult[] = [];
    for (const workers of options.concurrencies) {
      const rates = new Map<Drainer, { rates: number[]; cpu: number[]; client: number[]; jobs: number; errors: number }>(
        drainers.map((d) => [d, { rates: [], cpu: [], client: [], jobs: 0, errors: 0 }]),
      );
      const jobsFor = new Map<Drainer, number>();
      // Round 0 warms up and sizes the later drains (unless BENCH_DISPATCH_JOBS fixes them);
      // rounds go round-robin over the targets.
      for (let round = 0; round <= options.repeats; round++) {
        for (const d of drainers) {
          const jobs = options.jobs ?? jobsFor.get(d) ?? Math.max(100, workers * 4);
          const r = await d.drain(jobs, workers);
          const rate = (jobs * 1000) / r.ms;
          process.stderr.write(
            `  ${round === 0 ? "warm-up" : `repeat ${round}/${options.repeats}`} ${d.name}, ${workers} workers: ${jobs} jobs in ${r.ms.toFixed(0)} ms, ${rate.toFixed(0)} jobs/s\n`,
          );
          const m = rates.get(d)!;
          m.errors += r.errors;
          if (round === 0) {
            jobsFor.set(d, Math.min(100_000, Math.max(100, Math.round((rate * options.durationMs) / 1000))));
            continue;
          }
          m.rates.push(rate);
          if (r.cpuMicros !== undefined) m.cpu.push(r.cpuMicros / jobs);
          m.client.push(r.clientCpuMicros / jobs);
          m.jobs += jobs;
        }
      }
      for (const d of drainers) {
        const m = rates.get(d)!;
        results.push({
          target: d.name,
          workers,
          jobsPerSecond: spread(m.rates),
          serverCpuMicrosPerJob: m.cpu.length > 0 ? median(m.cpu) : undefined,
          clientCpuMicrosPerJob: median(m.client),
          jobs: m.jobs,
          errors: m.errors,
        });
      }
    }
    return results;
  } finally {
    for (const d of drainers) await d.close();
    await graphileDb?.drop();
    for (const db of dbs) await db.drop();
  }
}

export function formatDispatchThroughput(results: ThroughputResult[], options: ThroughputOptions): string {
  const rows = results.map((r) => [
    r.target,
    String(r.workers),
    fixed(r.jobsPerSecond, 0),
    r.serverCpuMicrosPerJob === undefined ? "-" : String(Math.round(r.serverCpuMicrosPerJob)),
    String(Math.round(r.clientCpuMicrosPerJob)),
    String(r.jobs),
    String(r.errors),
  ]);
  const lines = [
    `dispatch throughput: pre-queued jobs drained by N workers, each claiming one at a time (ours: GetTask, ReportStatus RUNNING, ` +
      `ReportStatus SUCCEEDED over Connect/h2c; graphile-worker: get_job, complete_job; bare connect-node: the same three calls, ` +
      `answered from memory); ${options.repeats} drains per row after a warm-up; median [range]`,
    ...table(["target", "workers", "jobs/s", "server µs/job", "client µs/job", "jobs", "errors"], rows),
  ];
  const top = Math.max(...options.concurrencies);
  const ours = results.find((r) => r.target === "foreman postgres" && r.workers === top);
  const theirs = results.find((r) => r.target === "graphile-worker" && r.workers === top);
  if (ours !== undefined && theirs !== undefined) {
    const ratio = ours.jobsPerSecond.median / theirs.jobsPerSecond.median;
    lines.push(`goal (issue 16): at least graphile-worker's jobs/s with ${top} workers: ${ratio >= 1 ? "met" : "missed"} (ours ${ratio.toFixed(2)}× theirs)`);
  }
  const bare = results.find((r) => r.target.startsWith("bare connect-node") && r.workers === top);
  if (bare !== undefined && theirs !== undefined) {
    lines.push(
      `three calls a job, answered from memory by a bare connect-node server, reach ${(bare.jobsPerSecond.median / theirs.jobsPerSecond.median).toFixed(2)}× graphile-worker's jobs/s` +
        (ours !== undefined ? `; ours reaches ${(ours.jobsPerSecond.median / bare.jobsPerSecond.median).toFixed(2)}× the bare server's` : ""),
    );
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// dispatch-idle: thousands of simulated workers, heartbeating and long-polling

export interface IdleOptions extends DispatchOptions {
  workers: number;
  /** One measured window, ms. */
  windowMs: number;
  /** Processes the simulated workers run in. */
  processes: number;
}

export interface IdleResult {
  target: string;
  workers: number;
  /** How many of them registered (a refused registration is tried 5 times). */
  registered: number;
  registrationMs: number;
  /** Server CPU over each window, % of one core. */
  serverCpuPercent: Spread;
  /** The simulated workers' processes' CPU together, % of one core (median over windows). */
  clientCpuPercent: number;
  /** Server RSS, MB: the median of each window's mean, and the highest sample. */
  rssMb: number;
  peakRssMb: number;
  /** Calls started per second, and what the workers' intervals make them at full rate. */
  heartbeatsPerSecond: number;
  pollsPerSecond: number;
  expectedCallsPerSecond: number;
  /** Server CPU per heartbeat or poll answered, µs, and the % of one core that makes at full rate. */
  serverCpuMicrosPerCall: number;
  projectedCpuPercent: number;
  errors: number;
}

const IDLE_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), "dispatch-workers.ts");

interface WorkerStats {
  registered: number;
  ready: boolean;
  /** Calls started. */
  heartbeats: number;
  polls: number;
  /** Heartbeats and polls answered. */
  answered: number;
  errors: number;
  /** What RegisterWorker gave: the interval and the longest wait the workers keep to. */
  heartbeatSeconds: number;
  maxPollSeconds: number;
}

/** One process of simulated workers, and its latest stats line. */
function startWorkerProcess(url: string, count: number, connections: number): { child: ChildProcess; stats: () => WorkerStats; exited: Promise<void> } {
  const child = spawn(process.execPath, ["--import", "tsx", IDLE_SCRIPT], {
    env: { ...process.env, BENCH_WORKERS_URL: url, BENCH_WORKERS_COUNT: String(count), BENCH_WORKERS_CONNECTIONS: String(connections), BENCH_WORKERS_TOKEN: REGISTRATION_TOKEN },
    stdio: ["ignore", "pipe", "inherit"],
  });
  trackChild(child);
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => {
      process.off("exit", killOnExit);
      resolve();
    }),
  );
  let latest: WorkerStats = { registered: 0, ready: false, heartbeats: 0, polls: 0, answered: 0, errors: 0, heartbeatSeconds: 0, maxPollSeconds: 0 };
  readline.createInterface({ input: child.stdout! }).on("line", (line) => {
    try {
      latest = JSON.parse(line) as WorkerStats;
    } catch {
      // Not a stats line.
    }
  });
  return { child, stats: () => latest, exited };
}

function rssMb(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match === null ? NaN : Number(match[1]) / 1024;
}

/** A server that dispatch-idle's workers register with, heartbeat and long-poll. */
interface IdleServer {
  name: string;
  url: string;
  pid: number;
  cpuMicros(): number;
  stop(): Promise<void>;
}

/** The peer: bench/bare-dispatch-server.ts in its long-poll mode, which keeps nothing and answers from memory. */
async function bareIdleServer(): Promise<IdleServer> {
  const { bare, url } = await startBare({ longPoll: true });
  return {
    name: "bare connect-node (no database)",
    url,
    pid: bare.pid,
    cpuMicros: () => processCpuMicros(bare.pid),
    async stop() {
      bare.child.kill("SIGTERM");
      await bare.exited;
    },
  };
}

export async function runDispatchIdle(options: IdleOptions): Promise<IdleResult[]> {
  const dbs = await databases("dispatch-idle");
  const results: IdleResult[] = [];
  const starts: (() => Promise<IdleServer>)[] = [
    ...dbs.map((db) => async (): Promise<IdleServer> => {
      const s = await startBenchServer({ ...DISPATCH_SETTINGS, ...db.settings });
      return { name: db.dialect, url: s.url, pid: s.pid, cpuMicros: () => s.cpuMicros(), stop: () => s.stop() };
    }),
    bareIdleServer,
  ];
  try {
    // One server at a time: the simulated workers of two would share the machine's cores.
    for (const start of starts) {
      const server = await start();
      process.stderr.write(`  ${server.name}: started; starting ${options.workers} simulated workers in ${options.processes} processes\n`);
      const perProcess = Math.ceil(options.workers / options.processes);
      const procs: ReturnType<typeof startWorkerProcess>[] = [];
      try {
        const registering = performance.now();
        let left = options.workers;
        while (left > 0) {
          const count = Math.min(perProcess, left);
          left -= count;
          procs.push(startWorkerProcess(server.url, count, Math.max(1, Math.ceil(count / WORKERS_PER_CONNECTION))));
        }
        let lastNote = performance.now();
        while (!procs.every((p) => p.stats().ready)) {
          if (procs.some((p) => p.child.exitCode !== null)) throw new Error("a simulated workers' process exited before its workers were registered");
          if (performance.now() - lastNote > 5000) {
            lastNote = performance.now();
            process.stderr.write(`  registered ${procs.reduce((n, p) => n + p.stats().registered, 0)} of ${options.workers}\n`);
          }
          await sleep(50);
        }
        const registrationMs = performance.now() - registering;
        const registered = procs.reduce((n, p) => n + p.stats().registered, 0);
        // Measured with those that did register; the table says how many.
        if (registered < options.workers) process.stderr.write(`  only ${registered} of ${options.workers} simulated workers could register\n`);
        process.stderr.write(
          `  ${options.workers} workers registered in ${(registrationMs / 1000).toFixed(1)} s (processes ${procs.map((p) => p.child.pid).join(", ")}); ` +
            `warming up ${options.warmupMs} ms\n`,
        );
        await sleep(options.warmupMs);
        const windows: { cpu: number; client: number; rss: number; peak: number; heartbeats: number; polls: number; perCall: number }[] = [];
        let peak = 0;
        for (let round = 1; round <= options.repeats; round++) {
          const statsBefore = procs.map((p) => p.stats());
          const clientBefore = procs.reduce((n, p) => n + processCpuMicros(p.child.pid!), 0);
          const cpuBefore = server.cpuMicros();
          const started = performance.now();
          const samples: number[] = [];
          while (performance.now() - started < options.windowMs) {
            samples.push(rssMb(server.pid));
            await sleep(Math.min(1000, options.windowMs / 5));
          }
          const elapsed = performance.now() - started;
          const cpu = ((server.cpuMicros() - cpuBefore) / (elapsed * 1000)) * 100;
          const client = ((procs.reduce((n, p) => n + processCpuMicros(p.child.pid!), 0) - clientBefore) / (elapsed * 1000)) * 100;
          samples.push(rssMb(server.pid));
          const statsAfter = procs.map((p) => p.stats());
          const delta = (key: "heartbeats" | "polls" | "answered") => statsAfter.reduce((n, s, i) => n + s[key] - statsBefore[i]![key], 0);
          const w = {
            cpu,
            client,
            rss: samples.reduce((a, b) => a + b, 0) / samples.length,
            peak: Math.max(...samples),
            heartbeats: (delta("heartbeats") * 1000) / elapsed,
            polls: (delta("polls") * 1000) / elapsed,
            perCall: (cpu * elapsed * 10) / Math.max(1, delta("answered")),
          };
          peak = Math.max(peak, w.peak);
          windows.push(w);
          process.stderr.write(
            `  repeat ${round}/${options.repeats} ${server.name}: server ${cpu.toFixed(1)}% of a core, RSS ${w.rss.toFixed(0)} MB, ` +
              `${w.heartbeats.toFixed(0)} heartbeats/s, ${w.polls.toFixed(0)} polls/s; workers' processes ${client.toFixed(0)}%\n`,
          );
        }
        const given = procs[0]!.stats();
        const expectedCallsPerSecond = registered / given.heartbeatSeconds + registered / given.maxPollSeconds;
        const perCall = median(windows.map((w) => w.perCall));
        results.push({
          target: server.name,
          registered,
          expectedCallsPerSecond,
          serverCpuMicrosPerCall: perCall,
          projectedCpuPercent: (perCall * expectedCallsPerSecond) / 1e4,
          workers: options.workers,
          registrationMs,
          serverCpuPercent: spread(windows.map((w) => w.cpu)),
          clientCpuPercent: median(windows.map((w) => w.client)),
          rssMb: median(windows.map((w) => w.rss)),
          peakRssMb: peak,
          heartbeatsPerSecond: median(windows.map((w) => w.heartbeats)),
          pollsPerSecond: median(windows.map((w) => w.polls)),
          errors: procs.reduce((n, p) => n + p.stats().errors, 0),
        });
      } finally {
        for (const p of procs) p.child.kill("SIGTERM");
        await Promise.all(procs.map((p) => p.exited));
        await server.stop();
      }
    }
    return results;
  } finally {
    for (const db of dbs) await db.drop();
  }
}

/**
 * The goal (issue 16): under one core. Judged on the CPU the full rate takes: a starved server
 * answers fewer calls than its workers make, and then uses less CPU than they would cost.
 */
export function idleGoalMet(r: IdleResult): boolean {
  return Math.max(r.serverCpuPercent.median, r.projectedCpuPercent) < 100;
}

export function formatDispatchIdle(results: IdleResult[], options: IdleOptions): string {
  const rows = results.map((r) => [
    r.target,
    r.registered === r.workers ? String(r.workers) : `${r.registered} of ${r.workers}`,
    `${(r.registrationMs / 1000).toFixed(1)} s`,
    fixed(r.serverCpuPercent, 1),
    `${idleGoalMet(r) ? "met" : "missed"} (< 100%)`,
    r.rssMb.toFixed(0),
    r.peakRssMb.toFixed(0),
    `${r.heartbeatsPerSecond.toFixed(0)} + ${r.pollsPerSecond.toFixed(0)} of ${r.expectedCallsPerSecond.toFixed(0)}`,
    String(Math.round(r.serverCpuMicrosPerCall)),
    r.projectedCpuPercent.toFixed(0),
    r.clientCpuPercent.toFixed(0),
    String(r.errors),
  ]);
  return [
    `dispatch idle: simulated workers in ${options.processes} processes of their own, over HTTP/2 (${WORKERS_PER_CONNECTION} workers a connection), ` +
      `each heartbeating at the interval RegisterWorker gives and long-polling GetTask for the longest wait it gives; ` +
      `${options.repeats} windows of ${(options.windowMs / 1000).toFixed(1)} s; median [range]. Full rate: the calls the workers' intervals make; ` +
      `% at full rate: server µs per answered call × full rate (what a server that kept up would use); ` +
      `bare connect-node: a server that answers the same calls from memory and keeps nothing`,
    ...table(
      ["target", "workers", "registration", "server % of a core", "goal", "RSS MB", "peak RSS MB", "heartbeats + polls/s of full rate", "server µs/call", "% at full rate", "workers' procs %", "errors"],
      rows,
    ),
  ].join("\n");
}
