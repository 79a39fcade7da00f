// Log benchmarks (issue 17) and the stop-command latency (issue 16). log-ingest: lines/s through
// AppendLogs in 50-line batches, one writer and several (each its own session). log-fanout: N
// StreamLog readers of one session while a worker appends, beside a bare connect-node server
// (bench/bare-log-server.ts) streaming the same messages to the same readers. command-latency:
// StopSession by the user → the stop_session command on the worker's open ReceiveCommands stream,
// on SQLite and on PostgreSQL with the stream on a second replica (the NOTIFY path). The
// servers run in processes of their own (bench/server.ts), and so do the fan-out's readers
// (bench/log-readers.ts, BENCH_LOG_READER_PROCESSES of them), whose decoding would otherwise
// be what is measured; the writers and workers run in this process.
import { randomBytes, randomUUID } from "node:crypto";
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import readline from "node:readline";
import { create } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import { SessionState } from "../gen/foreman/v1/common_pb.js";
import { RepositoryService } from "../gen/foreman/v1/repository_pb.js";
import { LogBatchSchema, LogStream, SessionService, type LogBatch } from "../gen/foreman/v1/session_pb.js";
import { TaskService } from "../gen/foreman/v1/task_pb.js";
import { WorkerService, WorkerStatus } from "../gen/foreman/v1/worker_pb.js";
import { WorkspaceService } from "../gen/foreman/v1/workspace_pb.js";
import { createBenchDatabase } from "./databases.js";
import { machineClockMs, startBenchChild } from "./children.js";
import { trackChild } from "./cleanup.js";
import { cpuPressure } from "./dispatch.js";
import { freePort, processCpuMicros, startBenchServer, type BenchServer, type BenchServerOptions } from "./server.js";

const REGISTRATION_TOKEN = randomBytes(24).toString("hex");
export const LINES_PER_BATCH = 50;
/**
 * Batches the fan-out writer may be ahead of the slowest reader: bounded, so latency is delivery
 * and at most this many batches queued before it, not a growing queue. With the writer as fast
 * as the readers take, the latency is about this many times one batch's fan-out to all readers.
 */
export const FANOUT_IN_FLIGHT = 2;
/** Big enough that no window reaches the per-session cut-off (default 100 MiB). */
const LOG_CAP = String(64 * 1024 * 1024 * 1024);

export const FANOUT_GOALS = { bareShareAt1000: 0.8, p99MsAt10: 20, p99MsAt1000: 200, rssMbAt1000: 300 };
export const COMMAND_GOAL_MS = 1000;

export interface LogOptions {
  durationMs: number;
  warmupMs: number;
  repeats: number;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return NaN;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const spread = (values: number[]): Spread => ({ median: median(values), min: Math.min(...values), max: Math.max(...values) });

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((row) => row[c]!.length)));
  const line = (row: string[]) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

const fixed = (s: Spread, digits: number) => `${s.median.toFixed(digits)} [${s.min.toFixed(digits)}–${s.max.toFixed(digits)}]`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The process's resident memory now, MB. */
export function rssMb(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match === null ? NaN : Number(match[1]) / 1024;
}

/** The most the process has been resident since it started (VmHWM), MB. */
export function peakRssMb(pid: number): number {
  const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match === null ? NaN : Number(match[1]) / 1024;
}

/** The machine's 1-minute load average, for the note under each table. */
export function loadNote(): string {
  const [one, five] = readFileSync("/proc/loadavg", "utf8").split(" ");
  return `machine: load average ${one} (1 min), ${five} (5 min)`;
}

function h2(url: string, sessions: Http2SessionManager[], interceptors: Interceptor[] = []): Transport {
  const session = new Http2SessionManager(url);
  sessions.push(session);
  return createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager: session, interceptors });
}

const bearer =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };

/** A worker holding a running session of its own, its lease renewed by heartbeats. */
interface HeldSession {
  worker: Client<typeof WorkerService>;
  sessionId: string;
  leaseToken: string;
}

/** A server with a workspace and a repository group, the user's clients, and workers it registers. */
interface Foreman {
  server: BenchServer;
  tasks: Client<typeof TaskService>;
  sessionsApi: Client<typeof SessionService>;
  groupId: string;
  /** Registers a worker (its calls on `workerUrl`, default this server) and returns its client. */
  worker(workerUrl?: string): Promise<Client<typeof WorkerService>>;
  /** A new task claimed by `worker` and reported RUNNING. */
  claim(worker: Client<typeof WorkerService>, prompt: string): Promise<HeldSession>;
  close(): Promise<void>;
}

async function startForeman(settings: Record<string, string>, server?: BenchServer, serverOptions: BenchServerOptions = {}): Promise<Foreman> {
  // The repository's remote is made up: not checked, cloned or fetched.
  const serverSettings = { FOREMAN_WORKER_REGISTRATION_TOKEN: REGISTRATION_TOKEN, FOREMAN_MAX_LOG_BYTES_PER_SESSION: LOG_CAP, FOREMAN_CONTACT_REMOTES: "false", ...settings };
  server ??= await startBenchServer(serverSettings, serverOptions);
  const sessions: Http2SessionManager[] = [];
  const admin = h2(server.url, sessions);
  const workspace = (await createClient(WorkspaceService, admin).createWorkspace({ name: "log bench" })).workspace!;
  const repos = createClient(RepositoryService, admin);
  const repo = (await repos.addRepository({ workspaceId: workspace.id, remoteUrl: "https://github.com/acme/app.git" })).repository!;
  const group = (await repos.createRepositoryGroup({ workspaceId: workspace.id, repositoryIds: [repo.id] })).repositoryGroup!;
  const tasks = createClient(TaskService, admin);
  const timers: NodeJS.Timeout[] = [];
  const held = new Map<Client<typeof WorkerService>, HeldSession[]>();
  const foreman: Foreman = {
    server,
    tasks,
    sessionsApi: createClient(SessionService, admin),
    groupId: group.id,
    async worker(workerUrl = server.url) {
      const anonymous = createClient(WorkerService, h2(workerUrl, sessions));
      const { workerToken, heartbeatIntervalSeconds } = await anonymous.registerWorker({
        registrationToken: REGISTRATION_TOKEN,
        name: `log bench worker ${randomUUID()}`,
        maxConcurrentSessions: 1,
      });
      const worker = createClient(WorkerService, h2(workerUrl, sessions, [bearer(workerToken)]));
      held.set(worker, []);
      // Heartbeats as a worker daemon sends them, renewing its lease: a window may outlast one.
      timers.push(
        setInterval(() => {
          const leases = held.get(worker)!.map((s) => ({ sessionId: s.sessionId, leaseToken: s.leaseToken }));
          void worker.heartbeat({ status: leases.length > 0 ? WorkerStatus.BUSY : WorkerStatus.IDLE, leases }).catch(() => undefined);
        }, heartbeatIntervalSeconds * 1000),
      );
      return worker;
    },
    async claim(worker, prompt) {
      await tasks.createUnitTask({ repositoryGroupId: group.id, prompt });
      for (;;) {
        const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 10 });
        if (assignment === undefined) continue;
        const lease = assignment.lease!;
        await worker.reportStatus({ sessionId: lease.sessionId, leaseToken: lease.leaseToken, state: SessionState.RUNNING });
        const session = { worker, sessionId: lease.sessionId, leaseToken: lease.leaseToken };
        held.set(worker, [session]);
        return session;
      }
    },
    async close() {
      for (const timer of timers) clearInterval(timer);
      for (const s of sessions) s.abort();
      await server.stop();
    },
  };
  return foreman;
}

/**
 * A 50-line batch; its first line carries the writer's clock when it was made: the machine's
 * shared clock (machineClockMs), which the readers' processes read too.
 */
function makeBatch(sequence: number): LogBatch {
  const sentAt = machineClockMs();
  return create(LogBatchSchema, {
    sequence,
    lines: Array.from({ length: LINES_PER_BATCH }, (_, i) => ({
      stream: LogStream.STDOUT,
      text: i === 0 ? `t=${sentAt} batch ${sequence}` : `line ${i} of batch ${sequence}: compiling src/module-${i}.ts … ok`,
    })),
  });
}

// ---------------------------------------------------------------------------------------------
// log-ingest

export interface IngestResult {
  target: string;
  writers: number;
  linesPerSecond: Spread;
  serverCpuMicrosPerLine: number;
  errors: number;
}

export async function runLogIngest(options: LogOptions & { writers: number[] }): Promise<IngestResult[]> {
  const results: IngestResult[] = [];
  const db = await createBenchDatabase("log-ingest");
  const dialects: [string, Record<string, string>][] = [["sqlite", {}]];
  if (db !== undefined) dialects.push(["postgres", { DATABASE_URL: db.url }]);
  try {
    for (const [dialect, settings] of dialects) {
      process.stderr.write(`  ${dialect}: starting the server\n`);
      const foreman = await startForeman(settings);
      try {
        // Sessions for the most writers, each held by its own worker; fewer writers use the first ones.
        const most = Math.max(...options.writers);
        const held: (HeldSession & { next: number })[] = [];
        for (let i = 0; i < most; i++) held.push({ ...(await foreman.claim(await foreman.worker(), `ingest ${i}`)), next: 1 });
        for (const writers of options.writers) {
          const rates: number[] = [];
          let cpu = 0;
          let lines = 0;
          let errors = 0;
          for (let round = options.warmupMs > 0 ? 0 : 1; round <= options.repeats; round++) {
            const windowMs = round === 0 ? options.warmupMs : options.durationMs;
            let written = 0;
            const cpuBefore = foreman.server.cpuMicros();
            const started = performance.now();
            await Promise.all(
              held.slice(0, writers).map(async (s) => {
                while (performance.now() - started < windowMs) {
                  try {
                    const { storedSequence } = await s.worker.appendLogs({ sessionId: s.sessionId, leaseToken: s.leaseToken, batches: [makeBatch(s.next)] });
                    s.next = storedSequence + 1;
                    written += LINES_PER_BATCH;
                  } catch (error) {
                    errors++;
                    process.stderr.write(`  log-ingest: AppendLogs failed: ${(error as Error).message}\n`);
                    await sleep(100);
                  }
                }
              }),
            );
            const seconds = (performance.now() - started) / 1000;
            if (round === 0) continue;
            rates.push(written / seconds);
            cpu += foreman.server.cpuMicros() - cpuBefore;
            lines += written;
          }
          results.push({ target: dialect, writers, linesPerSecond: spread(rates), serverCpuMicrosPerLine: cpu / lines, errors });
          process.stderr.write(`  ${dialect}, ${writers} writer(s): ${median(rates).toFixed(0)} lines/s\n`);
        }
      } finally {
        await foreman.close();
      }
    }
  } finally {
    await db?.drop();
  }
  return results;
}

export function formatLogIngest(results: IngestResult[], options: LogOptions): string {
  return [
    `log-ingest: AppendLogs with ${LINES_PER_BATCH}-line batches, one call in flight per writer, each writer its own session; median [range] over ${options.repeats} windows of ${options.durationMs} ms`,
    table(
      ["target", "writers", "lines/s", "server CPU µs/line", "errors"],
      results.map((r) => [r.target, String(r.writers), fixed(r.linesPerSecond, 0), r.serverCpuMicrosPerLine.toFixed(1), String(r.errors)]),
    ),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// log-fanout

/** Where the fan-out's batches go in and come out: the project's server, or the bare one. */
interface FanoutTarget {
  name: string;
  url: string;
  pid: number;
  sessionId: string;
  append(batch: LogBatch): Promise<void>;
  close(): Promise<void>;
}

async function foremanTarget(compiled: boolean): Promise<FanoutTarget> {
  const foreman = await startForeman({ FOREMAN_STREAM_KEEPALIVE_SECONDS: "300" }, undefined, { compiled });
  const held = await foreman.claim(await foreman.worker(), "fan-out");
  return {
    name: compiled ? "foreman (sqlite, dist/)" : "foreman (sqlite)",
    url: foreman.server.url,
    pid: foreman.server.pid,
    sessionId: held.sessionId,
    async append(batch) {
      await held.worker.appendLogs({ sessionId: held.sessionId, leaseToken: held.leaseToken, batches: [batch] });
    },
    close: () => foreman.close(),
  };
}

async function bareTarget(): Promise<FanoutTarget> {
  const port = await freePort();
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? "").split(/\s+/).filter((a) => a !== "");
  const child = spawn(process.execPath, [...nodeArgs, "--import", "tsx", "bench/bare-log-server.ts", String(port)], {
    cwd: new URL("..", import.meta.url).pathname,
    stdio: ["ignore", "pipe", "inherit"],
  });
  trackChild(child);
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  await new Promise<void>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).once("line", () => resolve());
    child.once("exit", (code) => reject(new Error(`bare log server exited (code ${code})`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const sessions: Http2SessionManager[] = [];
  const worker = createClient(WorkerService, h2(url, sessions));
  const sessionId = randomUUID();
  process.stderr.write(`  bare log server ready at ${url} (pid ${child.pid})\n`);
  return {
    name: "bare connect-node",
    url,
    pid: child.pid!,
    sessionId,
    async append(batch) {
      await worker.appendLogs({ sessionId, leaseToken: "", batches: [batch] });
    },
    async close() {
      for (const s of sessions) s.abort();
      process.off("exit", killOnExit);
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((resolve) => child.once("exit", resolve));
      }
    },
  };
}

/** What a readers' process prints (bench/log-readers.ts). */
type ReaderMessage = { type: "up" } | { type: "have"; sequence: number } | { type: "taken"; lines: number; latencies: number[]; errors: number };

/** N readers of the target's session, spread over processes of their own, counting what they get and when. */
interface Readers {
  /** Resolves once every reader has batch `sequence`. */
  allHave(sequence: number): Promise<void>;
  /** What the readers got since the last take: lines, each batch's latency at each reader, failed streams so far. */
  take(): Promise<{ lines: number; latencies: number[]; errors: number }>;
  /** The readers' processes' CPU time so far, µs. */
  cpuMicros(): number;
  pids: number[];
  close(): Promise<void>;
}

async function openReaders(target: FanoutTarget, count: number, afterSequence: number, processes: number): Promise<Readers> {
  const n = Math.min(processes, count);
  const children = Array.from({ length: n }, (_, i) =>
    startBenchChild<ReaderMessage>("log-readers.ts", {
      BENCH_READERS_URL: target.url,
      BENCH_READERS_SESSION: target.sessionId,
      // As even as it goes: the first count % n processes take one more.
      BENCH_READERS_COUNT: String(Math.floor(count / n) + (i < count % n ? 1 : 0)),
      BENCH_READERS_AFTER: String(afterSequence),
    }),
  );
  /** The newest sequence each process's readers all have, and who waits for them all to have one. */
  const done = children.map(() => afterSequence);
  let waiters: { sequence: number; resolve: () => void; reject: (error: Error) => void }[] = [];
  let closing = false;
  const everyone = () => Math.min(...done);
  children.forEach((c, i) => {
    c.onMessage((message) => {
      if (message.type !== "have") return;
      done[i] = message.sequence;
      const all = everyone();
      const ready = waiters.filter((w) => w.sequence <= all);
      waiters = waiters.filter((w) => w.sequence > all);
      for (const w of ready) w.resolve();
    });
    void c.exited.then(() => {
      if (closing) return;
      const error = new Error(`a log readers' process (pid ${c.pid}) exited during the run`);
      for (const w of waiters.splice(0)) w.reject(error);
    });
  });
  const close = async () => {
    closing = true;
    await Promise.all(children.map((c) => c.stop()));
  };
  try {
    await Promise.all(children.map((c) => c.next((m): m is ReaderMessage & { type: "up" } => m.type === "up")));
  } catch (error) {
    await close();
    throw error;
  }
  return {
    allHave(sequence) {
      if (sequence <= everyone()) return Promise.resolve();
      return new Promise((resolve, reject) => waiters.push({ sequence, resolve, reject }));
    },
    async take() {
      const taken = await Promise.all(
        children.map((c) => {
          const reply = c.next((m): m is ReaderMessage & { type: "taken" } => m.type === "taken");
          c.send({ type: "take" });
          return reply;
        }),
      );
      return { lines: taken.reduce((a, t) => a + t.lines, 0), latencies: taken.flatMap((t) => t.latencies), errors: taken.reduce((a, t) => a + t.errors, 0) };
    },
    cpuMicros: () => children.reduce((a, c) => a + processCpuMicros(c.pid), 0),
    pids: children.map((c) => c.pid),
    close,
  };
}

export interface FanoutResult {
  target: string;
  readers: number;
  linesPerSecond: Spread;
  p50Ms: Spread;
  p99Ms: Spread;
  /** The server's VmHWM at the end of its row: the most it was resident, from its start (each row has a server of its own). */
  peakRssMb: number;
  /** The server's CPU over the measured windows, % of one core (median). */
  serverCpuPercent: number;
  /** The readers' processes' CPU over the measured windows, % of one core (median). */
  readersCpuPercent: number;
  /** Share of the measured windows' wall time some task on the machine waited for a CPU (median). */
  cpuPressure: number | undefined;
  errors: number;
}

export interface FanoutOptions extends LogOptions {
  readers: number[];
  /** Processes the readers are spread over. */
  processes: number;
  /** Run the project's server from dist/. */
  compiled: boolean;
  /** Batches the writer may be ahead of the slowest reader (default FANOUT_IN_FLIGHT). */
  inFlight: number;
}

export async function runLogFanout(options: FanoutOptions): Promise<FanoutResult[]> {
  const results: FanoutResult[] = [];
  if (options.compiled) {
    process.stderr.write("  building dist/ (npm run build), as npm start does\n");
    execFileSync("npm", ["run", "build", "--silent"], { cwd: new URL("..", import.meta.url).pathname, stdio: "inherit" });
  }
  for (const count of options.readers) {
    // Fresh servers for each number of readers: each row's memory is its own.
    process.stderr.write(`  ${count} reader(s): starting fresh servers\n`);
    const targets: FanoutTarget[] = [];
    const open = new Map<FanoutTarget, Readers>();
    try {
      targets.push(await foremanTarget(options.compiled));
      targets.push(await bareTarget());
      for (const target of targets) {
        const readers = await openReaders(target, count, 0, options.processes);
        open.set(target, readers);
        process.stderr.write(`  ${target.name}: ${count} StreamLog reader(s) in ${readers.pids.length} process(es) (${readers.pids.join(", ")})\n`);
      }
      const sequences = new Map<FanoutTarget, number>(targets.map((t) => [t, 0]));
      const windows = new Map<FanoutTarget, { rate: number; p50: number; p99: number; server: number; cpu: number; pressure: number | undefined }[]>(targets.map((t) => [t, []]));
      // Round-robin over the two servers, so load on the machine falls on both alike.
      for (let round = options.warmupMs > 0 ? 0 : 1; round <= options.repeats; round++) {
        for (const target of targets) {
          const readers = open.get(target)!;
          const windowMs = round === 0 ? options.warmupMs : options.durationMs;
          let seq = sequences.get(target)!;
          await readers.take();
          const cpuBefore = readers.cpuMicros();
          const serverBefore = processCpuMicros(target.pid);
          const pressure = cpuPressure();
          const started = performance.now();
          while (performance.now() - started < windowMs) {
            // Send batch seq + 1 once every reader has seq + 1 - inFlight.
            await readers.allHave(seq + 1 - options.inFlight);
            seq++;
            await target.append(makeBatch(seq));
          }
          await readers.allHave(seq);
          const seconds = (performance.now() - started) / 1000;
          const share = pressure.stop();
          const cpu = ((readers.cpuMicros() - cpuBefore) / (seconds * 1e6)) * 100;
          const server = ((processCpuMicros(target.pid) - serverBefore) / (seconds * 1e6)) * 100;
          sequences.set(target, seq);
          const { lines, latencies } = await readers.take();
          if (round === 0) continue;
          latencies.sort((a, b) => a - b);
          windows.get(target)!.push({ rate: lines / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99), server, cpu, pressure: share });
        }
      }
      for (const target of targets) {
        const w = windows.get(target)!;
        const pressures = w.map((x) => x.pressure).filter((p) => p !== undefined);
        results.push({
          target: target.name,
          readers: count,
          linesPerSecond: spread(w.map((x) => x.rate)),
          p50Ms: spread(w.map((x) => x.p50)),
          p99Ms: spread(w.map((x) => x.p99)),
          peakRssMb: peakRssMb(target.pid),
          serverCpuPercent: median(w.map((x) => x.server)),
          readersCpuPercent: median(w.map((x) => x.cpu)),
          cpuPressure: pressures.length === 0 ? undefined : median(pressures),
          errors: (await open.get(target)!.take()).errors,
        });
        process.stderr.write(`  ${target.name}, ${count} reader(s): ${median(w.map((x) => x.rate)).toFixed(0)} lines/s, p99 ${median(w.map((x) => x.p99)).toFixed(1)} ms, peak RSS ${results.at(-1)!.peakRssMb.toFixed(0)} MB\n`);
      }
    } finally {
      for (const readers of open.values()) await readers.close();
      for (const target of targets) await target.close();
    }
  }
  return results;
}

/** The goals beside a row; "" where the issue sets none for that many readers. */
export function fanoutGoals(row: FanoutResult, bare: FanoutResult | undefined): { goal: string; met: boolean | undefined } {
  const goals: string[] = [];
  const met: boolean[] = [];
  if (row.target.startsWith("foreman") && row.readers === 1000) {
    const share = bare === undefined ? NaN : row.linesPerSecond.median / bare.linesPerSecond.median;
    goals.push(`${(share * 100).toFixed(0)}% of bare (≥ ${FANOUT_GOALS.bareShareAt1000 * 100}%)`, `p99 ≤ ${FANOUT_GOALS.p99MsAt1000} ms`, `RSS ≤ ${FANOUT_GOALS.rssMbAt1000} MB`);
    met.push(share >= FANOUT_GOALS.bareShareAt1000, row.p99Ms.median <= FANOUT_GOALS.p99MsAt1000, row.peakRssMb <= FANOUT_GOALS.rssMbAt1000);
  } else if (row.target.startsWith("foreman") && row.readers === 10) {
    goals.push(`p99 ≤ ${FANOUT_GOALS.p99MsAt10} ms`);
    met.push(row.p99Ms.median <= FANOUT_GOALS.p99MsAt10);
  }
  return { goal: goals.join(", "), met: met.length === 0 ? undefined : met.every(Boolean) };
}

export function formatLogFanout(results: FanoutResult[], options: FanoutOptions): string {
  const percent = (share: number | undefined) => (share === undefined ? "?" : (share * 100).toFixed(0));
  return [
    `log-fanout: StreamLog readers of one session, in ${options.processes} processes of their own, the project's server ${options.compiled ? "compiled (dist/, as npm start runs it)" : "under tsx"} and the bare one under tsx, while a worker appends ${LINES_PER_BATCH}-line batches (at most ${options.inFlight} ahead of the slowest reader); ` +
      `lines/s delivered to all readers together, AppendLogs sent → reader latency (one clock for all the processes); median [range] over ${options.repeats} windows of ${options.durationMs} ms; ` +
      `each row on fresh servers: peak RSS is that server's VmHWM; server's and readers' CPU: % of one core (the readers' processes together); CPU pressure: share of the windows some task waited for a CPU`,
    table(
      ["target", "readers", "lines/s", "p50 ms", "p99 ms", "peak RSS MB", "server CPU %", "readers' CPU %", "CPU pressure %", "errors", "goal", "met"],
      results.map((r) => {
        const bare = results.find((b) => b.readers === r.readers && !b.target.startsWith("foreman"));
        const { goal, met } = fanoutGoals(r, bare);
        return [
          r.target,
          String(r.readers),
          fixed(r.linesPerSecond, 0),
          fixed(r.p50Ms, 2),
          fixed(r.p99Ms, 2),
          r.peakRssMb.toFixed(0),
          r.serverCpuPercent.toFixed(0),
          r.readersCpuPercent.toFixed(0),
          percent(r.cpuPressure),
          String(r.errors),
          goal,
          met === undefined ? "" : met ? "yes" : "no",
        ];
      }),
    ),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// command-latency

export interface CommandResult {
  target: string;
  stops: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  stopCallP50Ms: number;
  errors: number;
}

async function measureStops(name: string, user: Foreman, worker: Client<typeof WorkerService>, stops: number): Promise<CommandResult> {
  const controller = new AbortController();
  const arrived = new Map<string, (at: number) => void>();
  const early = new Map<string, number>();
  let live!: () => void;
  const streaming = new Promise<void>((resolve) => (live = resolve));
  let errors = 0;
  void (async () => {
    try {
      for await (const res of worker.receiveCommands({}, { signal: controller.signal })) {
        const at = performance.now();
        live();
        if (res.event.case !== "command" || res.event.value.command.case !== "stopSession") continue;
        const sessionId = res.event.value.command.value.sessionId;
        const resolve = arrived.get(sessionId);
        if (resolve === undefined) early.set(sessionId, at);
        else resolve(at);
        void worker.acknowledgeCommands({ commandIds: [res.event.value.id] }).catch(() => errors++);
      }
    } catch {
      if (!controller.signal.aborted) errors++;
    }
  })();
  await streaming;
  const latencies: number[] = [];
  const calls: number[] = [];
  try {
    for (let i = 0; i < stops; i++) {
      const { sessionId } = await user.claim(worker, `stop ${i}`);
      const got = new Promise<number>((resolve) => arrived.set(sessionId, resolve));
      const sent = performance.now();
      await user.sessionsApi.stopSession({ sessionId, reason: "bench" });
      calls.push(performance.now() - sent);
      const at = early.get(sessionId) ?? (await got);
      early.delete(sessionId);
      arrived.delete(sessionId);
      latencies.push(at - sent);
    }
  } finally {
    controller.abort();
  }
  latencies.sort((a, b) => a - b);
  return {
    target: name,
    stops,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.at(-1)!,
    stopCallP50Ms: median(calls),
    errors,
  };
}

export async function runCommandLatency(options: { stops: number }): Promise<CommandResult[]> {
  const results: CommandResult[] = [];
  process.stderr.write(`  sqlite: starting the server\n`);
  const sqlite = await startForeman({});
  try {
    results.push(await measureStops("sqlite, one server", sqlite, await sqlite.worker(), options.stops));
  } finally {
    await sqlite.close();
  }
  const db = await createBenchDatabase("command-latency");
  if (db === undefined) return results;
  try {
    // Two replicas on one database, sharing the secret key; the user on A, the worker's calls on B.
    const settings = { DATABASE_URL: db.url, FOREMAN_SECRET_KEY: randomBytes(32).toString("hex"), FOREMAN_WORKER_REGISTRATION_TOKEN: REGISTRATION_TOKEN, FOREMAN_CONTACT_REMOTES: "false" };
    process.stderr.write(`  postgres: starting two replicas\n`);
    const a = await startForeman(settings);
    const b = await startBenchServer(settings);
    try {
      results.push(await measureStops("postgres, stream on the other replica", a, await a.worker(b.url), options.stops));
    } finally {
      await a.close();
      await b.stop();
    }
  } finally {
    await db.drop();
  }
  return results;
}

export function formatCommandLatency(results: CommandResult[]): string {
  return [
    `command-latency: StopSession sent by the user → the stop_session command on the worker's open ReceiveCommands stream (goal: within ${COMMAND_GOAL_MS} ms)`,
    table(
      ["target", "stops", "p50 ms", "p99 ms", "max ms", "StopSession call p50 ms", "goal met", "errors"],
      results.map((r) => [r.target, String(r.stops), r.p50Ms.toFixed(2), r.p99Ms.toFixed(2), r.maxMs.toFixed(2), r.stopCallP50Ms.toFixed(2), r.maxMs <= COMMAND_GOAL_MS ? "yes" : "no", String(r.errors)]),
    ),
  ].join("\n");
}
