// Unary throughput of WorkspaceService.GetWorkspace over Connect/HTTP1.1, Connect/h2c and gRPC,
// side by side: a closed loop with a fixed number of calls in flight per protocol, repeated
// round-robin so machine noise lands on every protocol alike. Reports req/s, latency, and the
// CPU each side spends per call: the client is often the bottleneck, so req/s alone misleads.
import http from "node:http";
import os from "node:os";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { WorkspaceService } from "../gen/foreman/v1/workspace_pb.js";
import { machineBusyMicros, startBenchServer, type BenchServer } from "./server.js";

export interface UnaryOptions {
  durationMs: number;
  warmupMs: number;
  repeats: number;
  concurrency: number;
}

/** One thing measured: a client calling GetWorkspace on a server it alone measures against. */
export interface Target {
  name: string;
  client: Client<typeof WorkspaceService>;
  server: BenchServer;
  /** The workspace GetWorkspace reads. */
  workspaceId: string;
}

interface Protocol {
  name: string;
  client: Client<typeof WorkspaceService>;
  close(): void;
}

interface Window {
  calls: number;
  errors: number;
  elapsedMs: number;
  serverCpuMicros: number;
  clientCpuMicros: number;
  /** CPU used meanwhile by everything else on the machine: other work skews the figures. */
  otherCpuMicros: number;
  firstError?: string;
}

export interface ProtocolResult {
  protocol: string;
  rpsMedian: number;
  rpsMin: number;
  rpsMax: number;
  p50Ms: number;
  p99Ms: number;
  serverCpuMicrosPerCall: number;
  clientCpuMicrosPerCall: number;
  /** Median share of one core each side kept busy while measuring (1 = a full core). */
  serverCoreShare: number;
  clientCoreShare: number;
  otherCoreShare: number;
  calls: number;
  errors: number;
  firstError?: string;
}

export interface UnaryResult {
  options: UnaryOptions;
  results: ProtocolResult[];
  errors: number;
}

/** A hung call must not stall a window for long. */
const CALL_TIMEOUT_MS = 10_000;

function protocols(baseUrl: string, concurrency: number): Protocol[] {
  // HTTP/1.1: one keep-alive connection per call in flight, reused across windows.
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  // HTTP/2: one session per protocol, all calls multiplexed on it.
  const h2c = new Http2SessionManager(baseUrl);
  const grpc = new Http2SessionManager(baseUrl);
  const make = (name: string, transport: Transport, close: () => void): Protocol => ({
    name,
    client: createClient(WorkspaceService, transport),
    close,
  });
  return [
    make("connect-http1", createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } }), () => agent.destroy()),
    make("connect-h2c", createConnectTransport({ baseUrl, httpVersion: "2", sessionManager: h2c }), () => h2c.abort()),
    make("grpc", createGrpcTransport({ baseUrl, sessionManager: grpc }), () => grpc.abort()),
  ];
}

interface LoadStats {
  calls: number;
  errors: number;
  firstError?: string;
}

/** Keeps `concurrency` calls in flight until durationMs has passed; waits for the last ones. */
async function closedLoop(
  client: Client<typeof WorkspaceService>,
  id: string,
  concurrency: number,
  durationMs: number,
  latencies: number[] | undefined,
): Promise<LoadStats> {
  const stats: LoadStats = { calls: 0, errors: 0 };
  const end = performance.now() + durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      const started = performance.now();
      try {
        const res = await client.getWorkspace({ id }, { timeoutMs: CALL_TIMEOUT_MS });
        if (res.workspace?.id !== id) throw new Error(`GetWorkspace returned workspace "${res.workspace?.id}", want "${id}"`);
        latencies?.push(performance.now() - started);
      } catch (error) {
        stats.errors++;
        stats.firstError ??= error instanceof Error ? error.message : String(error);
      }
      stats.calls++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return stats;
}

async function measure(target: Target, options: UnaryOptions, latencies: number[]): Promise<Window> {
  const { server, client: rpc, workspaceId: id } = target;
  // Warm up each window: JIT, connections, and the server's caches settle before counting.
  const warm = await closedLoop(rpc, id, options.concurrency, options.warmupMs, undefined);
  const serverBefore = server.cpuMicros();
  const clientBefore = process.cpuUsage();
  const machineBefore = machineBusyMicros();
  const started = performance.now();
  const load = await closedLoop(rpc, id, options.concurrency, options.durationMs, latencies);
  const elapsedMs = performance.now() - started;
  const client = process.cpuUsage(clientBefore);
  const serverCpuMicros = server.cpuMicros() - serverBefore;
  const clientCpuMicros = client.user + client.system;
  return {
    calls: load.calls,
    errors: warm.errors + load.errors,
    firstError: warm.firstError ?? load.firstError,
    elapsedMs,
    serverCpuMicros,
    clientCpuMicros,
    otherCpuMicros: Math.max(0, machineBusyMicros() - machineBefore - serverCpuMicros - clientCpuMicros),
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export async function runUnary(options: UnaryOptions): Promise<UnaryResult> {
  const server = await startBenchServer();
  const list = protocols(server.url, options.concurrency);
  try {
    const created = await list[0]!.client.createWorkspace({ name: "bench", description: "unary benchmark" }, { timeoutMs: CALL_TIMEOUT_MS });
    const workspaceId = created.workspace?.id;
    if (workspaceId === undefined) throw new Error("CreateWorkspace returned no workspace");
    return await compare(
      list.map((p) => ({ name: p.name, client: p.client, server, workspaceId })),
      options,
    );
  } finally {
    for (const protocol of list) protocol.close();
    await server.stop();
  }
}

/** Measures the targets round-robin, so machine noise lands on each alike. */
export async function compare(targets: Target[], options: UnaryOptions): Promise<UnaryResult> {
  const windows = new Map<string, Window[]>(targets.map((t) => [t.name, []]));
  const latencies = new Map<string, number[]>(targets.map((t) => [t.name, []]));
  const warmupFailures = new Map<string, { errors: number; firstError?: string }>();
  // Round 0 is thrown away: the first seconds of load run cold code on both sides (about half
  // speed here), which a per-window warm-up of a second or so does not cover.
  for (let round = 0; round <= options.repeats; round++) {
    for (const target of targets) {
      const window = await measure(target, options, round === 0 ? [] : latencies.get(target.name)!);
      if (round > 0) windows.get(target.name)!.push(window);
      else warmupFailures.set(target.name, { errors: window.errors, firstError: window.firstError });
      const share = (micros: number) => `${Math.round(micros / (window.elapsedMs * 10))}%`;
      process.stderr.write(
        `  ${round === 0 ? "warm-up round" : `repeat ${round}/${options.repeats}`} ${target.name}: ` +
          `${Math.round((window.calls * 1000) / window.elapsedMs)} req/s, ` +
          `server ${share(window.serverCpuMicros)}, client ${share(window.clientCpuMicros)}, other ${share(window.otherCpuMicros)}` +
          (window.errors > 0 ? `, ${window.errors} errors` : "") +
          "\n",
      );
    }
  }

  const results = targets.map((target): ProtocolResult => {
    const ws = windows.get(target.name)!;
    const rps = ws.map((w) => (w.calls * 1000) / w.elapsedMs);
    const sorted = Float64Array.from(latencies.get(target.name)!).sort();
    const calls = ws.reduce((sum, w) => sum + w.calls, 0);
    const warmup = warmupFailures.get(target.name);
    const errors = ws.reduce((sum, w) => sum + w.errors, warmup?.errors ?? 0);
    const firstError = warmup?.firstError ?? ws.find((w) => w.firstError !== undefined)?.firstError;
    return {
      protocol: target.name,
      rpsMedian: median(rps),
      rpsMin: Math.min(...rps),
      rpsMax: Math.max(...rps),
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      serverCpuMicrosPerCall: median(ws.map((w) => w.serverCpuMicros / Math.max(1, w.calls))),
      clientCpuMicrosPerCall: median(ws.map((w) => w.clientCpuMicros / Math.max(1, w.calls))),
      serverCoreShare: median(ws.map((w) => w.serverCpuMicros / (w.elapsedMs * 1000))),
      clientCoreShare: median(ws.map((w) => w.clientCpuMicros / (w.elapsedMs * 1000))),
      otherCoreShare: median(ws.map((w) => w.otherCpuMicros / (w.elapsedMs * 1000))),
      calls,
      errors,
      ...(firstError !== undefined ? { firstError } : {}),
    };
  });
  return { options, results, errors: results.reduce((sum, r) => sum + r.errors, 0) };
}

function pad(cells: string[][]): string {
  const widths = cells[0]!.map((_, col) => Math.max(...cells.map((row) => row[col]!.length)));
  return cells.map((row) => row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!))).join("  ")).join("\n");
}

export function formatUnary(result: UnaryResult, title = "unary GetWorkspace", column = "protocol"): string {
  const { durationMs, warmupMs, repeats, concurrency } = result.options;
  const round = (n: number) => String(Math.round(n));
  const header = [column, "req/s", "range", "p50 ms", "p99 ms", "server µs/call", "client µs/call", "server core", "client core", "other load", "errors"];
  const rows = result.results.map((r) => [
    r.protocol,
    round(r.rpsMedian),
    `${round(r.rpsMin)}–${round(r.rpsMax)}`,
    r.p50Ms.toFixed(2),
    r.p99Ms.toFixed(2),
    round(r.serverCpuMicrosPerCall),
    round(r.clientCpuMicrosPerCall),
    `${Math.round(r.serverCoreShare * 100)}%`,
    `${Math.round(r.clientCoreShare * 100)}%`,
    `${Math.round(r.otherCoreShare * 100)}%`,
    String(r.errors),
  ]);
  const lines = [
    `${title}: ${concurrency} in flight, ${repeats} × ${durationMs} ms per ${column}, each after a ${warmupMs} ms warm-up, after one discarded round; req/s median and min–max`,
    pad([header, ...rows]),
    `core = share of one CPU core busy (median); other load = CPU used by other processes meanwhile (${os.cpus().length} cores here)`,
  ];
  for (const r of result.results) {
    if (r.firstError !== undefined) lines.push(`${r.protocol}: first error: ${r.firstError}`);
  }
  return lines.join("\n");
}
