// `npm run bench` as a real process: --help prints what it runs and its BENCH_* settings, an
// unknown argument or setting is refused with exit code 2, and an interrupted run (SIGINT or
// SIGTERM to the bench, or a terminal's Ctrl-C to its whole process group through npm) stops
// the servers it started and removes their temporary folders before it exits. Each run gets a
// TMPDIR of its own, so every folder it makes, and every process it starts (they inherit
// TMPDIR), can be found and counted without guessing at others on the machine.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { adminUrl, runsOn } from "../helpers/databases.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const run = promisify(execFile);

const BENCHMARKS = ["unary", "h2load", "auth", "watch", "hostile", "dispatch-latency", "dispatch-throughput", "dispatch-idle", "log-ingest", "log-fanout", "command-latency", "workspaces", "pool"];

const SETTINGS = [
  "BENCH_ONLY",
  "BENCH_DURATION_MS",
  "BENCH_WARMUP_MS",
  "BENCH_REPEATS",
  "BENCH_CONCURRENCY",
  "BENCH_WATCH_CHANGES",
  "BENCH_DISPATCH_WORKERS",
  "BENCH_DISPATCH_JOBS",
  "BENCH_DISPATCH_IDLE_WORKERS",
  "BENCH_DISPATCH_IDLE_WINDOW_MS",
  "BENCH_DISPATCH_IDLE_PROCESSES",
  "BENCH_LOG_WRITERS",
  "BENCH_LOG_READERS",
  "BENCH_COMMAND_STOPS",
  "BENCH_POOL_TASKS",
  "BENCH_SERVER_NODE_ARGS",
  "BENCH_H2LOAD_BASELINE",
  "FOREMAN_BENCH_DATABASE_URL",
];

/** The bench's environment: the caller's, less any BENCH_* a developer's shell may hold. */
function benchEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("BENCH_")) env[key] = value;
  return { ...env, ...extra };
}

/** A command's exit code, stdout and stderr, whatever the code. */
async function outcome(file: string, args: string[], env = benchEnv()): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(file, args, { cwd: ROOT, env, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof e.code !== "number") throw error;
    return { code: e.code, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

describe("npm run bench's command line", () => {
  it("--help prints what it runs, every setting and the quick mode, runs nothing, and exits 0", async () => {
    const { code, stdout, stderr } = await outcome("npx", ["tsx", "bench/run.ts", "--help"]);
    expect(code, stderr).toBe(0);
    // Each benchmark is listed at the start of a line, its description after it or on the next.
    for (const benchmark of BENCHMARKS) expect(stdout).toMatch(new RegExp(`^  ${benchmark}(?: |\n)`, "m"));
    for (const setting of SETTINGS) expect(stdout).toContain(setting);
    expect(stdout).toContain("BENCH_DURATION_MS=500 BENCH_WARMUP_MS=0 BENCH_REPEATS=1 npm run bench");
    expect(stdout).toMatch(/Ctrl-C/);
    // Nothing was started: no server's progress line.
    expect(stderr).not.toMatch(/server ready|starting the server/);
    // -h is the same, and so is the way npm passes it.
    expect((await outcome("npx", ["tsx", "bench/run.ts", "-h"])).stdout).toBe(stdout);
    const viaNpm = await outcome("npm", ["run", "--silent", "bench", "--", "--help"]);
    expect(viaNpm.code).toBe(0);
    expect(viaNpm.stdout).toBe(stdout);
  }, 60_000);

  it("refuses an unknown argument, or an unknown BENCH_ONLY, with exit code 2 and a message naming it", async () => {
    const flag = await outcome("npx", ["tsx", "bench/run.ts", "--bogus"]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain('unknown argument "--bogus"');
    expect(flag.stderr).toContain("--help");
    expect(flag.stdout).toBe("");
    const stray = await outcome("npx", ["tsx", "bench/run.ts", "unary"]);
    expect(stray.code).toBe(2);
    expect(stray.stderr).toContain('unknown argument "unary"');
    // A help flag anywhere wins, as with the foreman command's verbs.
    expect((await outcome("npx", ["tsx", "bench/run.ts", "unary", "--help"])).code).toBe(0);

    const only = await outcome("npx", ["tsx", "bench/run.ts"], benchEnv({ BENCH_ONLY: "unray" }));
    expect(only.code).toBe(2);
    expect(only.stderr).toContain(`BENCH_ONLY must be one of ${BENCHMARKS.join(", ")}, got "unray"`);
    expect(only.stderr).not.toMatch(/starting the server/);
    const duration = await outcome("npx", ["tsx", "bench/run.ts"], benchEnv({ BENCH_DURATION_MS: "soon" }));
    expect(duration.code).toBe(2);
    expect(duration.stderr).toContain('BENCH_DURATION_MS must be a whole number from 100 to 600000, got "soon"');
    expect(duration.stderr).not.toMatch(/\n\s+at /); // no stack trace for a mistake in the call
    const readers = await outcome("npx", ["tsx", "bench/run.ts"], benchEnv({ BENCH_ONLY: "log-fanout", BENCH_LOG_READERS: "1,ten" }));
    expect(readers.code).toBe(2);
    expect(readers.stderr).toContain('BENCH_LOG_READERS must be whole numbers from 1 to 10000 separated by commas, got "1,ten"');
    expect(readers.stderr).not.toMatch(/starting the server|StreamLog readers/);
    // Seven runs of the bench's command line, each a few seconds on a loaded machine.
  }, 180_000);
});

/** Processes whose environment holds TMPDIR=dir: the bench and everything it started. */
function processesUsing(dir: string): number[] {
  const needle = Buffer.from(`TMPDIR=${dir}\0`);
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`).includes(needle)) found.push(Number(entry));
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return found;
}

/** True while the process exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

interface Interruption {
  /** How the bench is started: what package.json's bench script runs, or npm run bench itself. */
  command: "script" | "npm";
  signal: NodeJS.Signals;
  /** Whom the signal goes to: the bench's process alone, or its whole process group (a terminal's Ctrl-C). */
  to: "process" | "group";
}

/** Whether a PostgreSQL database of this name exists. */
async function databaseExists(name: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    return (await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])).rowCount === 1;
  } finally {
    await client.end();
  }
}

describe("an interrupted npm run bench", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  /** package.json's bench script, as argv with this node for "node". */
  function benchScript(): string[] {
    const { scripts } = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
    const argv = scripts.bench!.split(/\s+/);
    // node itself runs the bench, not tsx's CLI: tsx relays a signal to a busy child late, then kills it with SIGKILL.
    expect(argv[0]).toBe("node");
    return [process.execPath, ...argv.slice(1)];
  }

  /**
   * Starts one benchmark in a TMPDIR of its own, waits until its first server runs and `ready`
   * holds for its stderr, checks what it made, signals it, and checks that it then exited at once
   * by the signal and left no folder and no process behind. Returns its stderr.
   */
  async function interrupt({ command, signal, to }: Interruption, only: string, ready: (stderr: string) => boolean, settings: Record<string, string> = {}): Promise<string> {
    const tmp = mkdtempSync(path.join(os.tmpdir(), "bench-cli-test-"));
    // Windows long enough that the run is certainly still measuring when the signal comes, and
    // an exit within seconds of it can only be the interruption.
    const env = benchEnv({ TMPDIR: tmp, BENCH_ONLY: only, BENCH_DURATION_MS: "30000", BENCH_WARMUP_MS: "0", BENCH_REPEATS: "1", ...settings });
    const [file, ...args] = command === "npm" ? ["npm", "run", "bench"] : benchScript();
    // Its own process group, so that the group can be signalled, and killed whole if the test fails.
    const bench: ChildProcess = spawn(file!, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    cleanups.push(() => {
      try {
        process.kill(-bench.pid!, "SIGKILL");
      } catch {
        // Already gone.
      }
      for (const pid of processesUsing(tmp)) process.kill(pid, "SIGKILL");
      rmSync(tmp, { recursive: true, force: true });
    });
    let stderr = "";
    bench.stderr!.setEncoding("utf8");
    bench.stdout!.resume();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      bench.once("exit", (code, signal) => resolve({ code, signal })),
    );
    const SERVER = /server ready at \S+ \(pid (\d+), data in (\S+)\)/;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not ready within 60 s; stderr:\n${stderr}`)), 60_000);
      bench.stderr!.on("data", (chunk: string) => {
        stderr += chunk;
        if (SERVER.test(stderr) && ready(stderr)) {
          clearTimeout(timer);
          resolve();
        }
      });
      bench.once("exit", () => reject(new Error(`the bench exited before it was ready; stderr:\n${stderr}`)));
    });
    const [, serverPid, dataDir] = SERVER.exec(stderr)!;

    // What the run made, before the signal: its server's folder in our TMPDIR, and its server.
    expect(path.dirname(dataDir!)).toBe(tmp);
    expect(readdirSync(tmp).filter((name) => name.startsWith("foreman-"))).toContain(path.basename(dataDir!));
    expect(alive(Number(serverPid))).toBe(true);
    expect(processesUsing(tmp)).toContain(Number(serverPid));

    process.kill(to === "group" ? -bench.pid! : bench.pid!, signal);
    const result = await Promise.race([
      exited,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`still running 20 s after ${signal}; stderr:\n${stderr}`)), 20_000)),
    ]);
    // The bench exits 128 + the signal (130 for SIGINT); npm, signalled with its group, ends by
    // the same signal (a shell shows 130 for it too) or passes the code on.
    const code = 128 + os.constants.signals[signal];
    if (command === "npm") expect([signal, code]).toContain(result.signal ?? result.code);
    else expect(result).toEqual({ code, signal: null });
    expect(stderr).toContain(`bench: ${signal}: stopping`);
    expect(stderr).not.toMatch(/\n\s+at /); // the interrupted measurement's errors are not printed

    // Nothing left: no folder of the run's, no process of the run's.
    expect(readdirSync(tmp).filter((name) => name.startsWith("foreman-"))).toEqual([]);
    expect(alive(Number(serverPid))).toBe(false);
    expect(processesUsing(tmp)).toEqual([]);
    return stderr;
  }

  it.each<Interruption>([
    { command: "script", signal: "SIGINT", to: "process" },
    { command: "script", signal: "SIGTERM", to: "process" },
    { command: "npm", signal: "SIGINT", to: "group" },
  ])("stops its servers and removes their folders: $signal to the $to, started as $command", async (how) => {
    await interrupt(how, "unary", () => true);
  }, 120_000);

  it.runIf(runsOn("postgres"))("drops the PostgreSQL database auth made, with the servers using it", async () => {
    // Interrupted once the first PostgreSQL server runs (the third), while the database is in use.
    const CREATED = /created PostgreSQL database (foreman_bench_[0-9a-f]+)/;
    const postgresServerRuns = (stderr: string) => CREATED.test(stderr) && stderr.split("server ready").length > 3;
    const stderr = await interrupt({ command: "script", signal: "SIGINT", to: "process" }, "auth", postgresServerRuns, {
      FOREMAN_BENCH_DATABASE_URL: adminUrl(),
    });
    const name = CREATED.exec(stderr)![1]!;
    cleanups.push(async () => {
      const client = new pg.Client({ connectionString: adminUrl() });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    });
    expect(await databaseExists(name)).toBe(false);
  }, 120_000);

  it.runIf(runsOn("postgres"))("stops dispatch-idle's simulated workers' processes and drops its PostgreSQL database", async () => {
    // Interrupted once its first server's simulated workers are all registered and running.
    const CREATED = /created PostgreSQL database (foreman_bench_[0-9a-f]+)/;
    const REGISTERED = /workers registered in \S+ s \(processes ([\d, ]+)\)/;
    let workerPids: number[] = [];
    const workersRun = (stderr: string) => {
      const match = REGISTERED.exec(stderr);
      if (match === null) return false;
      workerPids = match[1]!.split(", ").map(Number);
      return workerPids.every(alive);
    };
    const stderr = await interrupt({ command: "script", signal: "SIGINT", to: "process" }, "dispatch-idle", workersRun, {
      FOREMAN_BENCH_DATABASE_URL: adminUrl(),
      BENCH_DISPATCH_IDLE_WORKERS: "100",
    });
    expect(workerPids).toHaveLength(2);
    for (const pid of workerPids) expect(alive(pid)).toBe(false);
    const name = CREATED.exec(stderr)![1]!;
    cleanups.push(async () => {
      const client = new pg.Client({ connectionString: adminUrl() });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    });
    expect(await databaseExists(name)).toBe(false);
  }, 180_000);
});
