// The parent's side of tests with real processes: starts scripted workers
// (test/helpers/worker-process.ts) and `foreman serve` as children, reads their JSON lines, and
// kills every child it started when told to (afterAll) or when the test process exits, so no
// test leaves an orphan behind, whether it passed or not.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { WorkerEvent, WorkerSettings } from "./worker-process.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const TSX = ["--import", "tsx"];
const WORKER_SOURCE = path.join(ROOT, "test/helpers/worker-process.ts");
/** Generous: tsx compiles on start, and the machine may be busy. */
export const PROCESS_START_MS = 60_000;
/** How long a child has to end on SIGTERM before it gets SIGKILL. */
const STOP_GRACE_MS = 30_000;

const children = new Set<ChildProcess>();
const folders = new Set<string>();

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function exited(child: ChildProcess): Promise<void> {
  if (!alive(child)) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

// A test process that dies leaves no child behind.
process.once("exit", () => {
  for (const child of children) if (alive(child)) child.kill("SIGKILL");
});

/** SIGKILLs every child still running and waits for each to end; removes the folders made for them. */
export async function killAllChildren(): Promise<void> {
  const all = [...children];
  for (const child of all) if (alive(child)) child.kill("SIGKILL");
  await Promise.all(all.map(exited));
  children.clear();
  for (const dir of folders) rmSync(dir, { recursive: true, force: true });
  folders.clear();
  bundled = undefined;
}

/** A fresh folder, removed by killAllChildren. */
export function tempFolder(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  folders.add(dir);
  return dir;
}

/** The environment without the machine's own foreman settings, plus env. */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("FOREMAN_") && key !== "DATABASE_URL"));
  return { ...base, ...env };
}

/** A child's stdout as JSON lines, with waits for a line to come. */
class Lines<T> {
  readonly all: T[] = [];
  private rest = "";
  private readonly waiters = new Set<() => void>();
  private ended = false;

  constructor(child: ChildProcess, parse: (line: string) => T | undefined) {
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (this.rest + chunk).split("\n");
      this.rest = lines.pop()!;
      for (const line of lines) {
        const parsed = parse(line);
        if (parsed !== undefined) this.all.push(parsed);
      }
      for (const wake of this.waiters) wake();
    });
    child.once("exit", () => {
      this.ended = true;
      for (const wake of this.waiters) wake();
    });
  }

  /** The first line at index `from` or later that matches; rejects after timeoutMs or once the child ended without one. */
  waitFor(match: (line: T) => boolean, what: string, timeoutMs: number, from = 0): Promise<T> {
    return new Promise((resolve, reject) => {
      let seen = from;
      const look = () => {
        for (; seen < this.all.length; seen++) {
          if (match(this.all[seen]!)) {
            done();
            resolve(this.all[seen]!);
            return;
          }
        }
        if (this.ended) {
          done();
          reject(new Error(`the process ended without ${what}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(look);
      };
      this.waiters.add(look);
      look();
    });
  }
}

export interface WorkerProcess {
  child: ChildProcess;
  /** Every event so far, in order. */
  events: WorkerEvent[];
  credentialFile: string;
  /** The first event at index `from` (default 0) or later that matches. */
  waitFor<E extends WorkerEvent["event"]>(
    event: E,
    match?: (e: Extract<WorkerEvent, { event: E }>) => boolean,
    options?: { from?: number; timeoutMs?: number },
  ): Promise<Extract<WorkerEvent, { event: E }>>;
  /** The events of one kind so far. */
  all<E extends WorkerEvent["event"]>(event: E): Extract<WorkerEvent, { event: E }>[];
  /** A line on its stdin: "finish" ends its held runs, "stop" the process. */
  send(line: "finish" | "stop"): void;
  /** SIGTERM, then SIGKILL if it has not ended within the grace. */
  stop(): Promise<void>;
  /** SIGKILL, and waits for it to end. */
  kill(): Promise<void>;
  stderr(): string;
}

export type WorkerProcessSettings = Omit<WorkerSettings, "credentialFile"> & { credentialFile?: string };

let bundled: Promise<string[]> | undefined;

/**
 * How to run the worker: one bundle of it, made once per test file with esbuild (the compiler
 * tsx runs on), starts in a fifth of the CPU time tsx takes to compile it in every process
 * (measured here: 0.13 s against 0.65 s), which twenty workers starting at once on two cores
 * feel. Without esbuild, tsx.
 */
function workerCommand(): Promise<string[]> {
  bundled ??= (async () => {
    try {
      const { build } = await import("esbuild");
      const outfile = path.join(tempFolder("foreman-worker-bundle-"), "worker-process.mjs");
      await build({ entryPoints: [WORKER_SOURCE], bundle: true, platform: "node", format: "esm", outfile, logLevel: "warning" });
      return [outfile];
    } catch {
      return [...TSX, WORKER_SOURCE];
    }
  })();
  return bundled;
}

/** Starts a scripted worker; resolves once it has registered. */
export async function startWorkerProcess(settings: WorkerProcessSettings): Promise<WorkerProcess> {
  const credentialFile = settings.credentialFile ?? path.join(tempFolder("foreman-worker-"), "credential");
  const child = spawn(process.execPath, [...(await workerCommand()), JSON.stringify({ ...settings, credentialFile })], {
    cwd: ROOT,
    env: childEnv({}),
    // stdin stays open: its end tells the worker its parent is gone.
    stdio: ["pipe", "pipe", "pipe"],
  });
  children.add(child);
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const lines = new Lines<WorkerEvent>(child, (line) => (line.startsWith("{") ? (JSON.parse(line) as WorkerEvent) : undefined));
  const w: WorkerProcess = {
    child,
    events: lines.all,
    credentialFile,
    waitFor(event, match = () => true, options = {}) {
      return lines.waitFor(
        (e) => e.event === event && match(e as never),
        `"${event}" event`,
        options.timeoutMs ?? PROCESS_START_MS,
        options.from ?? 0,
      ) as never;
    },
    all: (event) => lines.all.filter((e) => e.event === event) as never,
    send(line) {
      child.stdin!.write(`${line}\n`);
    },
    async stop() {
      if (!alive(child)) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
      await exited(child);
      clearTimeout(timer);
    },
    async kill() {
      if (alive(child)) child.kill("SIGKILL");
      await exited(child);
    },
    stderr: () => stderr,
  };
  try {
    await w.waitFor("registered");
  } catch (error) {
    throw new Error(`the worker did not register: ${String(error)}\n${stderr}`);
  }
  return w;
}

/** A running child's user + system CPU time so far, in seconds (from /proc; clock ticks of 1/100 s). */
export function cpuSeconds(child: ChildProcess): number {
  const stat = readFileSync(`/proc/${child.pid}/stat`, "utf8");
  // The command name (field 2) may hold spaces: count from its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** A port free now (the OS picks it), for a server that must come back on the same one. */
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

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** Its JSON log lines so far. */
  logs: Record<string, unknown>[];
  kill(): Promise<void>;
  stop(): Promise<void>;
  output(): string;
}

/**
 * Starts `foreman serve` (the CLI, under tsx) with only `env` for settings (remote checks off
 * unless env turns them on: its tests add made-up remotes; no local workers unless env asks: its
 * tests bring their own); resolves once /healthz answers.
 */
export async function startServerProcess(env: Record<string, string> & { FOREMAN_PORT: string }): Promise<ServerProcess> {
  const url = `http://127.0.0.1:${env.FOREMAN_PORT}`;
  const child = spawn(process.execPath, [...TSX, "src/cli/main.ts", "serve"], { cwd: ROOT, env: childEnv({ FOREMAN_HOST: "127.0.0.1", FOREMAN_CONTACT_REMOTES: "false", FOREMAN_LOCAL_WORKERS: "0", ...env }), stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let output = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (output += d));
  const lines = new Lines<Record<string, unknown>>(child, (line) => {
    output += `${line}\n`;
    return line.startsWith("{") ? (JSON.parse(line) as Record<string, unknown>) : undefined;
  });
  const s: ServerProcess = {
    child,
    url,
    logs: lines.all,
    async kill() {
      if (alive(child)) child.kill("SIGKILL");
      await exited(child);
    },
    async stop() {
      if (!alive(child)) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
      await exited(child);
      clearTimeout(timer);
    },
    output: () => output,
  };
  const deadline = Date.now() + PROCESS_START_MS;
  while (!(await healthy(url))) {
    if (!alive(child) || Date.now() > deadline) {
      await s.kill();
      throw new Error(`foreman serve did not answer at ${url} (exit ${child.exitCode ?? child.signalCode}):\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return s;
}
