// Runs the real server as a child process (SQLite in a temp dir) so the load generator and the
// server never share a thread, and reads the child's CPU time from /proc for per-call cost.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { makeTempDir, trackChild } from "./cleanup.js";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

export interface BenchServer {
  url: string;
  pid: number;
  /** The child's user + system CPU time so far, in microseconds. */
  cpuMicros(): number;
  stop(): Promise<void>;
}

// utime and stime in /proc/<pid>/stat are in clock ticks (almost always 100 per second).
let ticksPerSecond: number | undefined;
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

export function processCpuMicros(pid: number): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch (error) {
    throw new Error(`cannot read the CPU time of process ${pid}: has it exited?`, { cause: error });
  }
  // The command name (field 2) may contain spaces, so count fields after its closing ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]); // field 14
  const stime = Number(fields[12]); // field 15
  return ((utime + stime) * 1e6) / clockTicks();
}

/** CPU time all processes on the machine spent busy so far (not idle or waiting on I/O), in µs. */
export function machineBusyMicros(): number {
  // First line of /proc/stat: "cpu user nice system idle iowait irq softirq steal guest ...".
  const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return ((user + nice + system + irq + softirq + steal) * 1e6) / clockTicks();
}

// The port is chosen here (ask the OS for a free loopback port and hand it to the child)
// rather than read from the server's "foreman serving" line, which a log level may hide.
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

function healthy(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(`${url}/healthz`, { timeout: 1000, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
  });
}

/** pino's levels: 40 warn, 50 error, 60 fatal. */
const WARNING_OR_WORSE = /"level":[456]0[,}]/;

/** A pino line below warn (the local pool's workers log JSON lines on the server's stderr). */
const BELOW_WARNING = /^\{"level":[123]0[,}]/;

function forwardWarnings(child: ChildProcess): void {
  let rest = "";
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (chunk: string) => {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) if (WARNING_OR_WORSE.test(line)) process.stderr.write(`${line}\n`);
  });
  // stderr passes on whole but for the info lines of the pool's workers (bench/pool.ts turns the pool on).
  let restErr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    const lines = (restErr + chunk).split("\n");
    restErr = lines.pop()!;
    for (const line of lines) if (!BELOW_WARNING.test(line)) process.stderr.write(`${line}\n`);
  });
  child.stderr?.on("end", () => {
    if (restErr !== "" && !BELOW_WARNING.test(restErr)) process.stderr.write(`${restErr}\n`);
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

export interface BenchServerOptions {
  /** Run the compiled server (dist/, as `npm start` runs it; build it first) instead of src/ under tsx. */
  compiled?: boolean;
  /** Another checkout to run instead of this one (compiled, with its own dist/ and node_modules). */
  root?: string;
}

/**
 * Starts `foreman serve` with its defaults (SQLite, single-user, log level info) unless
 * `settings` says otherwise: benchmarks measure what users get.
 */
export async function startBenchServer(settings: Record<string, string> = {}, options: BenchServerOptions = {}): Promise<BenchServer> {
  const data = makeTempDir("foreman-bench-");
  const dataDir = data.path;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // Only this benchmark's settings: no inherited FOREMAN_* or DATABASE_URL.
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("FOREMAN_") && key !== "DATABASE_URL") env[key] = value;
  }
  Object.assign(env, {
    FOREMAN_HOST: "127.0.0.1",
    FOREMAN_PORT: String(port),
    FOREMAN_DATA_DIR: dataDir,
    FOREMAN_SINGLE_USER_MODE: "true",
    // The local pool would claim what a benchmark's own simulated workers are timed on; the
    // benchmark of the pool (bench/pool.ts) turns it on.
    FOREMAN_LOCAL_WORKERS: "0",
    ...settings,
  });
  // Spawn node itself (not npm or a shell) so child.pid is the server's process.
  // BENCH_SERVER_NODE_ARGS passes flags to the server's node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? "").split(/\s+/).filter((a) => a !== "");
  const entry = options.compiled === true ? ["dist/src/cli/main.js"] : ["--import", "tsx", "src/cli/main.ts"];
  const child = spawn(process.execPath, [...nodeArgs, ...entry, "serve"], {
    cwd: options.root ?? REPO_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  // Ctrl-C stops it and removes its data folder (bench/cleanup.ts).
  trackChild(child);
  // The server's warnings and errors go to stderr, away from the printed figures; its info
  // lines (one per call), and its local workers', are read and dropped, as a terminal or log
  // collector would take them.
  forwardWarnings(child);
  // A crashed benchmark must not leave a server behind.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  const cleanup = () => {
    process.off("exit", killOnExit);
    data.remove();
  };
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await exited(child);
      clearTimeout(timer);
    }
    cleanup();
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await healthy(url))) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`bench server did not become healthy at ${url} (exit code ${child.exitCode}, signal ${child.signalCode})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error("bench server has no pid");
  process.stderr.write(`  server ready at ${url} (pid ${pid}, data in ${dataDir})\n`);
  return { url, pid, cpuMicros: () => processCpuMicros(pid), stop };
}
