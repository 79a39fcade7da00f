// What a benchmark leaves on the machine while it runs (server processes, temporary folders, a
// PostgreSQL database), registered so that an interrupted run removes it too. On SIGINT or
// SIGTERM (Ctrl-C, or a CI runner stopping the job) the registered child processes get SIGTERM
// (SIGKILL after a grace), then the folders and databases are removed, then the process exits:
// 130 for SIGINT, 143 for SIGTERM. A run that ends normally removes each thing itself, which
// also takes it off the list.
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/** How long an interrupted child may take to exit after SIGTERM before it gets SIGKILL. */
const CHILD_GRACE_MS = 3_000;
/** The most an interrupted run spends removing folders and databases before it exits anyway. */
const REMOVAL_TIMEOUT_MS = 10_000;

const children = new Set<ChildProcess>();
const removals = new Set<() => void | Promise<void>>();
let interruptedBy: NodeJS.Signals | undefined;

/** Stops the child if the run is interrupted; a child that exits is taken off the list. */
export function trackChild(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  children.add(child);
  child.once("exit", () => children.delete(child));
}

/**
 * Registers `remove` to run if the run is interrupted, and returns the function that runs it
 * now instead (once, however often it is called). An interruption while it runs waits for it
 * rather than exiting under it.
 */
export function removeOnInterrupt(remove: () => void | Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  const once = () => (running ??= (async () => remove())());
  removals.add(once);
  return async () => {
    try {
      await once();
    } finally {
      removals.delete(once);
    }
  };
}

/**
 * A new folder under the system's temporary folder (os.tmpdir(), so TMPDIR moves it), removed
 * by `remove()` or when the run is interrupted.
 */
export function makeTempDir(prefix: string): { path: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  // Synchronous, so an interruption never finds it half done.
  const remove = () => rmSync(dir, { recursive: true, force: true });
  removals.add(remove);
  return {
    path: dir,
    remove() {
      removals.delete(remove);
      remove();
    },
  };
}

/** The signal that interrupted the run, once one has: the run's own errors after it are noise. */
export function interrupted(): NodeJS.Signals | undefined {
  return interruptedBy;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

async function stopChildren(): Promise<void> {
  const running = [...children];
  for (const child of running) child.kill("SIGTERM");
  const timer = setTimeout(() => {
    const late = running.filter((child) => child.exitCode === null && child.signalCode === null);
    if (late.length > 0) process.stderr.write(`bench: ${late.length} child process(es) still running ${CHILD_GRACE_MS} ms after SIGTERM: SIGKILL\n`);
    for (const child of late) child.kill("SIGKILL");
  }, CHILD_GRACE_MS);
  await Promise.all(running.map(exited));
  clearTimeout(timer);
}

async function removeAll(): Promise<void> {
  const all = [...removals];
  removals.clear();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, REMOVAL_TIMEOUT_MS)));
  const work = Promise.all(
    all.map(async (remove) => {
      try {
        await remove();
      } catch (error) {
        process.stderr.write(`bench: could not clean up: ${error instanceof Error ? error.message : String(error)}\n`);
      }
    }),
  );
  await Promise.race([work, timeout]);
  clearTimeout(timer);
}

async function onSignal(signal: NodeJS.Signals): Promise<void> {
  // A terminal's Ctrl-C reaches every process of the group, and tsx relays it too: the first
  // signal starts the cleanup, a repeat while it runs changes nothing.
  if (interruptedBy !== undefined) return;
  interruptedBy = signal;
  process.stderr.write(`\nbench: ${signal}: stopping ${children.size} child process(es), then removing ${removals.size} temporary folder(s) and database(s)\n`);
  await stopChildren();
  // Folders only after the servers writing into them have exited.
  await removeAll();
  process.exit(signal === "SIGINT" ? 130 : 143);
}

/**
 * After a benchmark failed: stops the servers and children it left running and removes its
 * folders and databases, so that the run ends instead of waiting on them.
 */
export async function cleanUpAfterFailure(): Promise<void> {
  await stopChildren();
  await removeAll();
}

/** Installs the SIGINT and SIGTERM handlers; call once, before anything is started. */
export function cleanUpOnSignals(): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => void onSignal(signal));
}
