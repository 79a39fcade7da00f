// WatchTasks fan-out: N streams watch one workspace while its tasks change one at a time; for
// each change, how long until every stream has it, and how much server CPU each change costs.
// Sizes are measured side by side, round-robin over repeats, each on its own fresh server.
import { createClient } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import { RepositoryService } from "../gen/foreman/v1/repository_pb.js";
import { TaskService } from "../gen/foreman/v1/task_pb.js";
import { WorkspaceService } from "../gen/foreman/v1/workspace_pb.js";
import { startBenchServer, type BenchServer } from "./server.js";

export interface WatchOptions {
  /** Stream counts to compare. */
  sizes: number[];
  /** Changes per window. */
  changes: number;
  repeats: number;
}

export interface WatchResult {
  watchers: number;
  /** Median over windows of the per-window median / p99 time until the last stream had a change. */
  p50Ms: number;
  p99Ms: number;
  serverCpuMicrosPerChange: number;
  changesPerSecond: number;
  errors: number;
}

/** Node's HTTP/2 client lets about 100 streams share one connection by default. */
const STREAMS_PER_SESSION = 90;

interface Setup {
  server: BenchServer;
  sessions: Http2SessionManager[];
  controller: AbortController;
  /** Resolves when every stream has seen the change with this task status sequence number. */
  waitAll(seq: number): Promise<void>;
  change(): Promise<number>;
  errors(): number;
  close(): Promise<void>;
}

async function setUp(watchers: number): Promise<Setup> {
  // No contact with the made-up remote below: the benchmark measures the change fan-out, not
  // the fetch a real server makes before each new task.
  const server = await startBenchServer({ FOREMAN_STREAM_KEEPALIVE_SECONDS: "300", FOREMAN_CONTACT_REMOTES: "false" });
  const sessions: Http2SessionManager[] = [];
  const controller = new AbortController();
  const admin = createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" });
  const workspace = (await createClient(WorkspaceService, admin).createWorkspace({ name: "watch bench" })).workspace!;
  const repos = createClient(RepositoryService, admin);
  const repo = (await repos.addRepository({ workspaceId: workspace.id, remoteUrl: "https://github.com/acme/app.git" })).repository!;
  const group = (await repos.createRepositoryGroup({ workspaceId: workspace.id, repositoryIds: [repo.id] })).repositoryGroup!;
  const tasks = createClient(TaskService, admin);
  await tasks.createUnitTask({ repositoryGroupId: group.id, prompt: "Watched" });

  // Every stream counts the changes it has seen; waiters resolve once all have seen `seq`.
  const seen = new Array<number>(watchers).fill(0);
  let errors = 0;
  let waiter: { seq: number; resolve: () => void } | undefined;
  const check = () => {
    if (waiter !== undefined && seen.every((n) => n >= waiter!.seq)) {
      const w = waiter;
      waiter = undefined;
      w.resolve();
    }
  };
  let started = 0;
  let allStarted!: () => void;
  const ready = new Promise<void>((resolve) => (allStarted = resolve));
  for (let i = 0; i < watchers; i++) {
    if (i % STREAMS_PER_SESSION === 0) sessions.push(new Http2SessionManager(server.url));
    const client = createClient(
      TaskService,
      createConnectTransport({ baseUrl: server.url, httpVersion: "2", sessionManager: sessions[sessions.length - 1]! }),
    );
    void (async () => {
      try {
        // Cursor "0" replays the creation: its arrival says the stream is up.
        for await (const res of client.watchTasks({ workspaceId: workspace.id, cursor: "0" }, { signal: controller.signal })) {
          if (res.event.case !== "change") continue;
          if (seen[i] === 0 && ++started === watchers) allStarted();
          seen[i]!++;
          check();
        }
      } catch {
        if (!controller.signal.aborted) errors++;
      }
    })();
  }
  await ready;
  // Each stream has seen the creation (1); changes count on from there.
  let seq = 1;
  return {
    server,
    sessions,
    controller,
    waitAll: (target) =>
      new Promise<void>((resolve) => {
        waiter = { seq: target, resolve };
        check();
      }),
    async change() {
      // A new task each time: every change carries a task of the same (small) size. Moving one
      // task through RequestChanges instead would grow it by an agent task per change.
      await tasks.createUnitTask({ repositoryGroupId: group.id, prompt: `Change ${seq}` });
      return ++seq;
    },
    errors: () => errors,
    async close() {
      controller.abort();
      for (const s of sessions) s.abort();
      await server.stop();
    },
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export async function runWatch(options: WatchOptions): Promise<WatchResult[]> {
  const setups = new Map<number, Setup>();
  const windows = new Map<number, { p50: number; p99: number; cpu: number; rate: number }[]>(options.sizes.map((n) => [n, []]));
  try {
    for (const n of options.sizes) setups.set(n, await setUp(n));
    // Round 0 warms up and is not counted.
    for (let round = 0; round <= options.repeats; round++) {
      for (const n of options.sizes) {
        const s = setups.get(n)!;
        const latencies: number[] = [];
        const cpuBefore = s.server.cpuMicros();
        const started = performance.now();
        for (let i = 0; i < options.changes; i++) {
          const t0 = performance.now();
          const seq = await s.change();
          await s.waitAll(seq);
          latencies.push(performance.now() - t0);
        }
        const elapsed = performance.now() - started;
        const cpu = (s.server.cpuMicros() - cpuBefore) / options.changes;
        latencies.sort((a, b) => a - b);
        const w = { p50: percentile(latencies, 50), p99: percentile(latencies, 99), cpu, rate: (options.changes * 1000) / elapsed };
        process.stderr.write(
          `  ${round === 0 ? "warm-up round" : `repeat ${round}/${options.repeats}`} ${n} streams: ` +
            `p50 ${w.p50.toFixed(1)} ms, p99 ${w.p99.toFixed(1)} ms, ${Math.round(cpu)} µs server CPU per change\n`,
        );
        if (round > 0) windows.get(n)!.push(w);
      }
    }
    return options.sizes.map((n) => {
      const ws = windows.get(n)!;
      return {
        watchers: n,
        p50Ms: median(ws.map((w) => w.p50)),
        p99Ms: median(ws.map((w) => w.p99)),
        serverCpuMicrosPerChange: median(ws.map((w) => w.cpu)),
        changesPerSecond: median(ws.map((w) => w.rate)),
        errors: setups.get(n)!.errors(),
      };
    });
  } finally {
    for (const s of setups.values()) await s.close();
  }
}

export function formatWatch(results: WatchResult[], options: WatchOptions): string {
  const header = ["streams", "change→all p50 ms", "p99 ms", "server µs/change", "changes/s", "errors"];
  const rows = results.map((r) => [
    String(r.watchers),
    r.p50Ms.toFixed(1),
    r.p99Ms.toFixed(1),
    String(Math.round(r.serverCpuMicrosPerChange)),
    r.changesPerSecond.toFixed(0),
    String(r.errors),
  ]);
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((row) => row[c]!.length)));
  const line = (row: string[]) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ");
  return [
    `WatchTasks fan-out: one workspace, ${options.changes} changes one at a time per window, ${options.repeats} windows per size after a warm-up; medians over windows`,
    line(header),
    ...rows.map(line),
  ].join("\n");
}
