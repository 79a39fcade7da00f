// The local worker pool: `foreman worker` daemons started as child processes of the server,
// each with its own state folder (so a restarted one gets its worker id back), restarted with
// backoff when one dies, and stopped with the server: SIGTERM (drain), a second SIGTERM after a
// short wait (stop now: their runs go back to the queue), SIGKILL as a last resort. Each child's
// stdin is a pipe whose end tells it the server is gone, so none outlives a killed server.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";

export interface LocalPoolOptions {
  count: number;
  /** The server's URL, as the workers reach it. */
  server: string;
  tokenFile: string;
  /** Worker n keeps its state in <stateRoot>/<n>. */
  stateRoot: string;
  /** How to run `foreman`: the executable and the arguments before the verb. */
  foreman: readonly string[];
  /** The workers' environment (the agents get only a part of it: see cli/worker.ts). */
  env: NodeJS.ProcessEnv;
  log: Logger;
}

export interface LocalPool {
  /** The running children's process ids, for tests and the log. */
  pids(): number[];
  stop(): Promise<void>;
}

/** Restart waits: doubling from 1 s to 30 s, back to 1 s once a worker has run a minute. */
const FIRST_RESTART_MS = 1_000;
const MAX_RESTART_MS = 30_000;
const HEALTHY_AFTER_MS = 60_000;
/** Stopping: drain this long, then stop now, then SIGKILL after this much more. */
const DRAIN_MS = 3_000;
const KILL_AFTER_MS = 15_000;

export async function startLocalPool(options: LocalPoolOptions): Promise<LocalPool> {
  const slots = Array.from({ length: options.count }, (_, i) => ({ n: i + 1, child: undefined as ChildProcess | undefined, wait: FIRST_RESTART_MS, timer: undefined as NodeJS.Timeout | undefined }));
  let stopping = false;

  const launch = async (slot: (typeof slots)[number]) => {
    const stateDir = path.join(options.stateRoot, String(slot.n));
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    if (stopping) return;
    const [executable, ...before] = options.foreman;
    const args = [...before, "worker", "--server", options.server, "--token-file", options.tokenFile, "--state-dir", stateDir, "--name", `local worker ${slot.n}`];
    const child = spawn(executable!, args, { env: { ...options.env, FOREMAN_WORKER_STOP_WITH_STDIN: "1" }, stdio: ["pipe", "inherit", "inherit"] });
    slot.child = child;
    const started = Date.now();
    options.log.info({ worker: slot.n, pid: child.pid }, "local worker started");
    child.on("error", (error) => options.log.error({ worker: slot.n, err: error }, "local worker could not start"));
    child.once("exit", (code, signal) => {
      slot.child = undefined;
      if (stopping) return;
      if (Date.now() - started > HEALTHY_AFTER_MS) slot.wait = FIRST_RESTART_MS;
      options.log.warn({ worker: slot.n, exit_code: code, signal, restart_in_ms: slot.wait }, "local worker exited; restarting it");
      slot.timer = setTimeout(() => void launch(slot), slot.wait);
      slot.wait = Math.min(MAX_RESTART_MS, slot.wait * 2);
    });
  };

  await Promise.all(slots.map(launch));

  return {
    pids: () => slots.flatMap((s) => (s.child?.pid === undefined ? [] : [s.child.pid])),
    async stop() {
      stopping = true;
      for (const slot of slots) clearTimeout(slot.timer);
      const running = slots.flatMap((s) => (s.child === undefined ? [] : [s.child]));
      const exits = running.map((child) => new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once("exit", () => resolve()))));
      for (const child of running) child.kill("SIGTERM");
      const again = setTimeout(() => running.forEach((c) => c.kill("SIGTERM")), DRAIN_MS);
      const kill = setTimeout(() => running.forEach((c) => c.kill("SIGKILL")), DRAIN_MS + KILL_AFTER_MS);
      await Promise.all(exits);
      clearTimeout(again);
      clearTimeout(kill);
      options.log.info({ workers: running.length }, "local workers stopped");
    },
  };
}
