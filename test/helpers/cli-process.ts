// The foreman command as a real process for the tests of its daily verbs: run to its end, or
// started and watched while it follows something live. Its environment holds no foreman setting
// of the machine running the tests; stdin is empty unless a test gives it text.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "../..");
const CLI = ["--import", "tsx", "src/cli/main.ts"];
/** Generous: tsx compiles on start, and the machine may be busy. */
const PROCESS_TIMEOUT_MS = 120_000;

export interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Running {
  child: ChildProcess;
  exited: Promise<Exited>;
  stdout(): string;
  stderr(): string;
  /** Resolves once stdout holds something that matches; rejects if the process ends first. */
  waitFor(pattern: RegExp | string): Promise<void>;
}

const children = new Set<ChildProcess>();

/** Kills what a test left running. */
export function killCliProcesses(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  children.clear();
}

export function cliEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("FOREMAN_") && key !== "DATABASE_URL" && key !== "NO_COLOR"));
  return { ...base, ...env };
}

export interface StartOptions {
  /** Text for stdin; none: stdin is empty (/dev/null). */
  input?: string;
  /** Flags for node itself, before the CLI's script. */
  nodeArgs?: string[];
}

export function startCli(args: string[], env: Record<string, string>, options: StartOptions = {}): Running {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), ...CLI, ...args], {
    cwd: ROOT,
    env: cliEnv(env),
    stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    timeout: PROCESS_TIMEOUT_MS,
  });
  children.add(child);
  if (options.input !== undefined) child.stdin!.end(options.input);
  let stdout = "";
  let stderr = "";
  const watchers = new Set<() => void>();
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
    for (const w of watchers) w();
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exited = new Promise<Exited>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
  const matches = (pattern: RegExp | string) => (typeof pattern === "string" ? stdout.includes(pattern) : pattern.test(stdout));
  return {
    child,
    exited,
    stdout: () => stdout,
    stderr: () => stderr,
    waitFor(pattern) {
      return new Promise<void>((resolve, reject) => {
        if (matches(pattern)) return resolve();
        const look = () => {
          if (!matches(pattern)) return;
          watchers.delete(look);
          resolve();
        };
        watchers.add(look);
        void exited.then((e) => {
          if (watchers.delete(look)) reject(new Error(`the CLI exited (${e.code ?? e.signal}) before printing ${String(pattern)}:\n${e.stdout}\n${e.stderr}`));
        });
      });
    },
  };
}

export function runCli(args: string[], env: Record<string, string>, options: StartOptions = {}): Promise<Exited> {
  return startCli(args, env, options).exited;
}

/** Runs the CLI on a pseudo-terminal (script(1)), as from a person's shell: its output, stdout and stderr together. */
export function runOnTerminal(args: string[], env: Record<string, string>): Promise<Exited> {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const command = ["exec", process.execPath, ...CLI, ...args].map(quote).join(" ");
  const child = spawn("script", ["-qec", command, "/dev/null"], { cwd: ROOT, env: cliEnv(env), stdio: ["ignore", "pipe", "pipe"], timeout: PROCESS_TIMEOUT_MS });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
