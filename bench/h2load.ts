// What one unary call costs the server, measured from outside by h2load (Debian's
// nghttp2-client): binary Connect over h2c, 64 calls in flight on one connection, against the
// server as `npm start` runs it (compiled, SQLite, single-user, default log level) and against a
// bare connect-node server answering the same bytes (bench/bare-server.ts), round-robin in one
// run. Prints the server's CPU per call (from /proc) and req/s, median and min–max.
// BENCH_H2LOAD_BASELINE=<another checkout, built> adds that checkout's server as a row, e.g. to
// show before and after a change in one run: `git worktree add /tmp/before <rev>`, then
// `npm ci && npm run build` there.
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { GetWorkspaceRequestSchema, GetWorkspaceResponseSchema, WorkspaceService } from "../gen/foreman/v1/workspace_pb.js";
import { makeTempDir, trackChild } from "./cleanup.js";
import { freePort, processCpuMicros, startBenchServer, type BenchServer } from "./server.js";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
/** Calls in flight on the one HTTP/2 connection. */
const STREAMS = 64;
const PROCEDURE = "/foreman.v1.WorkspaceService/GetWorkspace";

export interface H2loadOptions {
  durationMs: number;
  warmupMs: number;
  repeats: number;
}

interface Run {
  succeeded: number;
  failed: number;
  rps: number;
  serverCpuMicros: number;
}

export interface H2loadRow {
  target: string;
  rpsMedian: number;
  rpsMin: number;
  rpsMax: number;
  cpuMicrosPerCallMedian: number;
  cpuMicrosPerCallMin: number;
  cpuMicrosPerCallMax: number;
  calls: number;
  failed: number;
}

export interface H2loadResult {
  options: H2loadOptions;
  rows: H2loadRow[];
  /** The first row's CPU per call over the bare server's (the last row). */
  ratio: number;
  failed: number;
}

interface Target {
  name: string;
  url: string;
  cpuMicros(): number;
}

export function h2loadAvailable(): boolean {
  try {
    execFileSync("h2load", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Runs h2load as a child process (not synchronously, so that Ctrl-C is handled at once and stops it). */
function runH2loadProcess(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile("h2load", args, { encoding: "utf8", timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (error, stdout) =>
      error === null ? resolve(stdout) : reject(error),
    );
    trackChild(child);
  });
}

async function h2load(url: string, bodyFile: string, seconds: number): Promise<Run & { output: string }> {
  const output = await runH2loadProcess(
    [
      ...["-c", "1", "-t", "1", "-m", String(STREAMS), "-D", String(seconds)],
      ...["-d", bodyFile, "-H", "content-type: application/proto", "-H", "connect-protocol-version: 1"],
      url + PROCEDURE,
    ],
    (seconds + 30) * 1000,
  );
  // "requests: 9 total, 9 started, 9 done, 9 succeeded, 0 failed, 0 errored, 0 timeout"
  const requests = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(output);
  // "status codes: 9 2xx, 0 3xx, 0 4xx, 0 5xx": a Connect error is never a 2xx.
  const statuses = /status codes: (\d+) 2xx/.exec(output);
  const finished = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(output);
  if (requests === null || statuses === null || finished === null) throw new Error(`cannot read h2load's output:\n${output}`);
  const ok = Number(statuses[1]);
  return {
    succeeded: ok,
    // In a timed run a few answers may land after the count of succeeded requests is taken.
    failed: Math.max(0, Number(requests[1]) - ok) + Number(requests[2]) + Number(requests[3]),
    rps: Number(finished[1]),
    serverCpuMicros: 0,
    output,
  };
}

async function measure(target: Target, bodyFile: string, options: H2loadOptions): Promise<Run> {
  if (options.warmupMs > 0) await h2load(target.url, bodyFile, Math.max(1, Math.round(options.warmupMs / 1000)));
  const before = target.cpuMicros();
  const run = await h2load(target.url, bodyFile, Math.max(1, Math.round(options.durationMs / 1000)));
  return { ...run, serverCpuMicros: target.cpuMicros() - before };
}

async function startBareServer(responseBase64: string): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", "bench/bare-server.ts", String(port), responseBase64], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  trackChild(child);
  await new Promise<void>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the bare server exited with code ${code}`)));
    child.stdout!.once("data", () => resolve());
  });
  return { url: `http://127.0.0.1:${port}`, child };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export async function runH2load(options: H2loadOptions): Promise<H2loadResult> {
  process.stderr.write("  building dist/ (npm run build), as npm start does\n");
  execFileSync("npm", ["run", "build", "--silent"], { cwd: REPO_ROOT, stdio: "inherit" });
  const temp = makeTempDir("foreman-h2load-");
  const dir = temp.path;
  const servers: BenchServer[] = [];
  let bare: ChildProcess | undefined;
  try {
    const foreman = await startBenchServer({}, { compiled: true });
    servers.push(foreman);
    const quiet = await startBenchServer({ FOREMAN_LOG_LEVEL: "warn" }, { compiled: true });
    servers.push(quiet);
    const baselineRoot = process.env.BENCH_H2LOAD_BASELINE?.trim() || undefined;
    const baseline = baselineRoot === undefined ? undefined : await startBenchServer({}, { compiled: true, root: baselineRoot });
    if (baseline !== undefined) servers.push(baseline);
    const client = createClient(WorkspaceService, createConnectTransport({ baseUrl: foreman.url, httpVersion: "1.1" }));
    const quietClient = createClient(WorkspaceService, createConnectTransport({ baseUrl: quiet.url, httpVersion: "1.1" }));
    const created = await client.createWorkspace({ name: "bench", description: "h2load benchmark" });
    const id = created.workspace!.id;
    const quietId = (await quietClient.createWorkspace({ name: "bench", description: "h2load benchmark" })).workspace!.id;
    const answer = await client.getWorkspace({ id });
    let baselineBody: string | undefined;
    if (baseline !== undefined) {
      const baselineClient = createClient(WorkspaceService, createConnectTransport({ baseUrl: baseline.url, httpVersion: "1.1" }));
      const baselineId = (await baselineClient.createWorkspace({ name: "bench", description: "h2load benchmark" })).workspace!.id;
      baselineBody = path.join(dir, "request-baseline.bin");
      writeFileSync(baselineBody, toBinary(GetWorkspaceRequestSchema, create(GetWorkspaceRequestSchema, { id: baselineId })));
    }
    const started = await startBareServer(Buffer.from(toBinary(GetWorkspaceResponseSchema, answer)).toString("base64"));
    bare = started.child;
    const bareChild = started.child;

    const body = path.join(dir, "request.bin");
    writeFileSync(body, toBinary(GetWorkspaceRequestSchema, create(GetWorkspaceRequestSchema, { id })));
    const quietBody = path.join(dir, "request-quiet.bin");
    writeFileSync(quietBody, toBinary(GetWorkspaceRequestSchema, create(GetWorkspaceRequestSchema, { id: quietId })));
    const targets: (Target & { body: string })[] = [
      { name: "foreman (npm start defaults)", url: foreman.url, cpuMicros: foreman.cpuMicros, body },
      { name: "foreman, FOREMAN_LOG_LEVEL=warn", url: quiet.url, cpuMicros: quiet.cpuMicros, body: quietBody },
      ...(baseline !== undefined && baselineBody !== undefined
        ? [{ name: `baseline: ${path.basename(baselineRoot!)}`, url: baseline.url, cpuMicros: baseline.cpuMicros, body: baselineBody }]
        : []),
      { name: "bare connect-node", url: started.url, cpuMicros: () => processCpuMicros(bareChild.pid!), body },
    ];

    const runs = new Map<string, Run[]>(targets.map((t) => [t.name, []]));
    // Round 0 is thrown away: cold code on both sides runs at about half speed.
    for (let round = 0; round <= options.repeats; round++) {
      for (const target of targets) {
        const run = await measure(target, target.body, options);
        if (round > 0) runs.get(target.name)!.push(run);
        process.stderr.write(
          `  ${round === 0 ? "warm-up round" : `repeat ${round}/${options.repeats}`} ${target.name}: ` +
            `${Math.round(run.rps)} req/s, ${Math.round(run.serverCpuMicros / Math.max(1, run.succeeded))} µs server CPU per call` +
            (run.failed > 0 ? `, ${run.failed} failed` : "") +
            "\n",
        );
      }
    }
    const rows = targets.map((target): H2loadRow => {
      const rs = runs.get(target.name)!;
      const perCall = rs.map((r) => r.serverCpuMicros / Math.max(1, r.succeeded));
      const rps = rs.map((r) => r.rps);
      return {
        target: target.name,
        rpsMedian: median(rps),
        rpsMin: Math.min(...rps),
        rpsMax: Math.max(...rps),
        cpuMicrosPerCallMedian: median(perCall),
        cpuMicrosPerCallMin: Math.min(...perCall),
        cpuMicrosPerCallMax: Math.max(...perCall),
        calls: rs.reduce((n, r) => n + r.succeeded, 0),
        failed: rs.reduce((n, r) => n + r.failed, 0),
      };
    });
    return {
      options,
      rows,
      ratio: rows[0]!.cpuMicrosPerCallMedian / rows.at(-1)!.cpuMicrosPerCallMedian,
      failed: rows.reduce((n, r) => n + r.failed, 0),
    };
  } finally {
    bare?.kill("SIGTERM");
    for (const server of servers) await server.stop();
    temp.remove();
  }
}

export function formatH2load(result: H2loadResult): string {
  const { durationMs, warmupMs, repeats } = result.options;
  const r = (n: number) => String(Math.round(n));
  const header = ["server", "req/s", "range", "server µs/call", "range", "calls", "failed"];
  const rows = result.rows.map((row) => [
    row.target,
    r(row.rpsMedian),
    `${r(row.rpsMin)}–${r(row.rpsMax)}`,
    r(row.cpuMicrosPerCallMedian),
    `${r(row.cpuMicrosPerCallMin)}–${r(row.cpuMicrosPerCallMax)}`,
    String(row.calls),
    String(row.failed),
  ]);
  const widths = header.map((_, col) => Math.max(...[header, ...rows].map((row) => row[col]!.length)));
  const table = [header, ...rows].map((row) => row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!))).join("  "));
  return [
    `h2load GetWorkspace: binary Connect over h2c, ${STREAMS} in flight on one connection, ${repeats} × ${Math.round(durationMs / 1000)} s per server, each after a ${Math.round(warmupMs / 1000)} s warm-up, after one discarded round; median and min–max`,
    ...table,
    `server CPU per call, the project's defaults over the bare server: ${result.ratio.toFixed(2)}×`,
  ].join("\n");
}
