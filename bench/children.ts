// Load generators in processes of their own, so that a benchmark measures the server rather
// than its own client's event loop: the parent starts a child script under tsx and the two talk
// in JSON lines, the parent's on the child's stdin, the child's on its stdout (its stderr goes
// to the bench's). Ctrl-C stops the children with the servers (bench/cleanup.ts), and a bench
// that crashes kills them on its way out.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { trackChild } from "./cleanup.js";

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));

/** Children still running, killed if the bench exits under them: one exit listener for them all. */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * A clock every process on the machine shares, ms: process.hrtime reads CLOCK_MONOTONIC, which
 * on Linux is one clock for the whole system (unlike performance.now(), which counts from each
 * process's own start), steady (no NTP step) and sub-microsecond. A time stamped in one bench
 * process can be subtracted from this clock read in another.
 */
export function machineClockMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** A child script of the bench's, and the JSON lines it prints. */
export interface BenchChild<M> {
  child: ChildProcess;
  pid: number;
  /** Writes one JSON line to the child's stdin. */
  send(message: unknown): void;
  /** The next line the child prints that `accept` takes (rejects if the child exits first). */
  next<T extends M>(accept: (message: M) => message is T): Promise<T>;
  /** Every line the child prints, as it prints it. */
  onMessage(on: (message: M) => void): void;
  /** Resolves when the child has exited, however it did. */
  exited: Promise<void>;
  /** SIGTERM, and waits for the exit. */
  stop(): Promise<void>;
}

/** Starts bench/`script` under tsx with `env` added to the bench's environment. */
export function startBenchChild<M>(script: string, env: Record<string, string>): BenchChild<M> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(BENCH_DIR, script)], {
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "inherit"],
  });
  trackChild(child);
  running.add(child);
  let gone = false;
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => {
      gone = true;
      running.delete(child);
      resolve();
    }),
  );
  // A child that exits early closes its stdin: a write after that is not an error of the bench's.
  child.stdin!.on("error", () => undefined);
  const listeners = new Set<(message: M) => void>();
  readline.createInterface({ input: child.stdout! }).on("line", (line) => {
    let message: M;
    try {
      message = JSON.parse(line) as M;
    } catch {
      return; // Not a message.
    }
    for (const on of [...listeners]) on(message);
  });
  return {
    child,
    pid: child.pid!,
    send(message) {
      if (!gone) child.stdin!.write(`${JSON.stringify(message)}\n`);
    },
    next(accept) {
      return new Promise((resolve, reject) => {
        const on = (message: M) => {
          if (!accept(message)) return;
          listeners.delete(on);
          resolve(message);
        };
        listeners.add(on);
        void exited.then(() => {
          if (listeners.delete(on)) reject(new Error(`bench/${script} (pid ${child.pid}) exited with code ${child.exitCode}`));
        });
      });
    },
    onMessage(on) {
      listeners.add(on);
    },
    exited,
    async stop() {
      if (!gone) child.kill("SIGTERM");
      await exited;
    },
  };
}

/**
 * The child's side: calls `on` with each JSON line from the parent, and returns the function
 * that prints one to it. The child exits when its stdin closes (the parent is gone).
 */
export function parentChannel<M>(on: (message: M) => void): (message: unknown) => void {
  readline
    .createInterface({ input: process.stdin })
    .on("line", (line) => on(JSON.parse(line) as M))
    .once("close", () => process.exit(0));
  return (message) => process.stdout.write(`${JSON.stringify(message)}\n`);
}
