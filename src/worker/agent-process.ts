// One agent process for one session: started in its own process group (so a stop reaches
// everything it started), in the workspace folder, with exactly the environment the caller
// gives. Its stdout and stderr come back line by line; its end comes back as an outcome, never
// as a throw, so a missing executable is reported like any other failed run.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import type { Readable } from "node:stream";
import { recordAgentGroup, signalGroup, type GroupRecord } from "./orphans.js";

export type OutputStream = "stdout" | "stderr";

export interface OutputLine {
  stream: OutputStream;
  text: string;
}

export interface ProcessOutcome {
  /** The exit code, or null when a signal ended it or it never started. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** stop() was called before it exited. */
  stopped: boolean;
  /** Set when it could not be started; names the executable. */
  error?: string;
}

export interface AgentProcessOptions {
  /** The executable and its arguments; the executable is looked up on env.PATH. */
  argv: readonly string[];
  /** The workspace folder. */
  cwd: string;
  /** The whole environment: nothing of the worker's own is passed on beyond this. */
  env: Readonly<Record<string, string>>;
  /** Written to stdin, which is then closed; without it stdin is /dev/null. */
  stdin?: string;
  onLine: (line: OutputLine) => void;
  /** Between SIGTERM and SIGKILL. */
  graceMs?: number;
  maxLineBytes?: number;
  /** Where the process group is recorded while it runs, for a worker started after this one was killed (orphans.ts). */
  groupRecord?: GroupRecord;
}

export interface AgentProcess {
  /** Undefined when it could not be started. */
  readonly pid: number | undefined;
  /** SIGTERM to the group, SIGKILL to the group after the grace period. Idempotent. */
  stop(reason: string): void;
  readonly done: Promise<ProcessOutcome>;
}

export const DEFAULT_GRACE_MS = 10_000;
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024;
// After the leader exits the pipes normally close at once; something that escaped the group
// (setsid) may hold them, and the session must still end.
const DRAIN_AFTER_EXIT_MS = 2_000;

export function startAgentProcess(options: AgentProcessOptions): AgentProcess {
  const [executable, ...args] = options.argv;
  if (executable === undefined || executable === "") {
    const outcome: ProcessOutcome = { exitCode: null, signal: null, stopped: false, error: "no agent executable configured" };
    return { pid: undefined, stop: () => {}, done: Promise.resolve(outcome) };
  }
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const maxLineBytes = Math.max(4, options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);

  const child = spawn(executable, args, {
    cwd: options.cwd,
    env: { ...options.env },
    detached: true,
    stdio: [options.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });

  const forgetGroup = child.pid !== undefined && options.groupRecord !== undefined ? recordAgentGroup(options.groupRecord, child.pid) : () => {};
  let stopped = false;
  let exited = false;
  let killTimer: NodeJS.Timeout | undefined;
  let drainTimer: NodeJS.Timeout | undefined;
  let resolveDone!: (outcome: ProcessOutcome) => void;
  const done = new Promise<ProcessOutcome>((resolve) => (resolveDone = resolve));
  let finished = false;
  const finish = (outcome: ProcessOutcome) => {
    if (finished) return;
    finished = true;
    forgetGroup();
    clearTimeout(killTimer);
    clearTimeout(drainTimer);
    resolveDone(outcome);
  };

  const signalAgent = (signal: NodeJS.Signals) => {
    if (child.pid !== undefined) signalGroup(child.pid, signal);
  };

  // Both are "pipe" above, so never null.
  const stdoutPipe = child.stdout as Readable;
  const stderrPipe = child.stderr as Readable;
  const stdout = lineSplitter("stdout", maxLineBytes, options.onLine);
  const stderr = lineSplitter("stderr", maxLineBytes, options.onLine);
  stdoutPipe.on("data", stdout.push);
  stderrPipe.on("data", stderr.push);

  if (child.stdin) {
    // An agent that exits without reading its stdin makes this EPIPE; that is its business.
    child.stdin.on("error", () => {});
    child.stdin.end(options.stdin);
  }

  let exitCode: number | null = null;
  let exitSignal: NodeJS.Signals | null = null;

  child.on("error", (error: NodeJS.ErrnoException) => {
    // Also emitted for a failed kill, which signalGroup does not use; only a failed start matters.
    if (child.pid !== undefined) return;
    finish({ exitCode: null, signal: null, stopped, error: startError(executable, options.cwd, error) });
  });

  child.on("exit", (code, signal) => {
    exited = true;
    exitCode = code;
    exitSignal = signal;
    // The session is over: whatever the agent left running in its group (a `sleep &`, a dev
    // server) goes too, or it would outlive the lease and hold the output pipes open.
    signalAgent("SIGKILL");
    drainTimer = setTimeout(() => {
      stdoutPipe.destroy();
      stderrPipe.destroy();
      stdout.flush();
      stderr.flush();
      finish({ exitCode, signal: exitSignal, stopped });
    }, DRAIN_AFTER_EXIT_MS);
  });

  // "close" comes after "exit" and after both pipes ended, so every line has been read.
  child.on("close", () => {
    if (child.pid === undefined) return;
    stdout.flush();
    stderr.flush();
    finish({ exitCode, signal: exitSignal, stopped });
  });

  return {
    pid: child.pid,
    done,
    stop(_reason: string) {
      if (stopped || exited || finished) return;
      stopped = true;
      signalAgent("SIGTERM");
      killTimer = setTimeout(() => signalAgent("SIGKILL"), graceMs);
    },
  };
}

function startError(executable: string, cwd: string, error: NodeJS.ErrnoException): string {
  if (error.code === "ENOENT" && !existsSync(cwd)) {
    return `could not start ${executable}: the workspace folder ${cwd} does not exist`;
  }
  if (error.code === "ENOENT") return `could not start ${executable}: no such executable (ENOENT)`;
  if (error.code === "EACCES") return `could not start ${executable}: permission denied (EACCES)`;
  return `could not start ${executable}: ${error.message}`;
}

/**
 * Splits one stream's bytes into lines. A newline byte never occurs inside a UTF-8 sequence, so
 * lines are found in bytes and decoded whole: a character split across chunks arrives intact.
 * A line longer than maxLineBytes is cut into pieces of at most maxLineBytes bytes each, every
 * piece delivered as a line of its own; a cut backs up to a character boundary, so no piece
 * carries half a character. A trailing "\r" (CRLF output) is dropped.
 */
export function lineSplitter(stream: OutputStream, maxLineBytes: number, onLine: (line: OutputLine) => void) {
  let pending: Buffer = Buffer.alloc(0);

  const emit = (bytes: Buffer) => onLine({ stream, text: bytes.toString("utf8") });

  // Emits whole pieces while more than the bound remains; returns the rest (at most the bound).
  const cutLong = (bytes: Buffer): Buffer => {
    while (bytes.length > maxLineBytes) {
      let cut = maxLineBytes;
      while (cut > 0 && ((bytes[cut] ?? 0) & 0xc0) === 0x80) cut--;
      if (cut === 0) cut = maxLineBytes;
      emit(bytes.subarray(0, cut));
      bytes = bytes.subarray(cut);
    }
    return bytes;
  };

  const emitLine = (line: Buffer) => {
    if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    emit(cutLong(line));
  };

  return {
    push(chunk: Buffer) {
      const bytes = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      let start = 0;
      for (let newline = bytes.indexOf(0x0a, start); newline !== -1; newline = bytes.indexOf(0x0a, start)) {
        emitLine(bytes.subarray(start, newline));
        start = newline + 1;
      }
      // A copy, so a small remainder does not keep a large chunk alive.
      pending = Buffer.from(cutLong(bytes.subarray(start)));
    },
    flush() {
      if (pending.length > 0) emitLine(pending);
      pending = Buffer.alloc(0);
    },
  };
}
