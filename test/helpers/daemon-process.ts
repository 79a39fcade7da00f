// The real worker daemon, `foreman worker` (the CLI under tsx), as a child process of a test:
// started with its options, its JSON log lines (stderr) collected, stopped with SIGTERM (drain),
// a second SIGTERM (stop now) or SIGKILL. Every one is killed when the test process exits.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { tempFolder } from "./worker-processes.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

export interface DaemonProcess {
  child: ChildProcess;
  stateDir: string;
  /** Its log lines so far, parsed. */
  logs: Record<string, unknown>[];
  output(): string;
  /** Resolves with the first log line that matches, from index `from`. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, what: string, timeoutMs?: number, from?: number): Promise<Record<string, unknown>>;
  /** Resolves with its exit code (or signal name). */
  exited(): Promise<number | string>;
  signal(signal: NodeJS.Signals): void;
  kill(): Promise<void>;
}

export interface DaemonSettings {
  server: string;
  token: string;
  stateDir?: string;
  name?: string;
  concurrency?: number;
  agents?: string;
  command?: string;
  extraArgs?: string[];
  env?: Record<string, string>;
}

/** Starts `foreman worker`; resolves once it has registered (or rejects with its output if it exits first). */
export async function startDaemon(settings: DaemonSettings, options: { waitForRegistration?: boolean } = {}): Promise<DaemonProcess> {
  const stateDir = settings.stateDir ?? tempFolder("foreman-daemon-");
  const args = ["--import", "tsx", "src/cli/main.ts", "worker", "--server", settings.server, "--state-dir", stateDir];
  // An empty token passes none, for the tests of a missing one.
  if (settings.token !== "") args.push("--token", settings.token);
  if (settings.name !== undefined) args.push("--name", settings.name);
  if (settings.concurrency !== undefined) args.push("--concurrency", String(settings.concurrency));
  if (settings.agents !== undefined) args.push("--agents", settings.agents);
  if (settings.command !== undefined) args.push("--command", settings.command);
  args.push(...(settings.extraArgs ?? []));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FOREMAN_") && k !== "DATABASE_URL"));
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...env, FOREMAN_LOG_LEVEL: "debug", ...settings.env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let output = "";
  let rest = "";
  const logs: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  const exit = new Promise<number | string>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? -1)));
  let ended = false;
  void exit.then(() => {
    ended = true;
    children.delete(child);
    for (const w of waiters) w();
  });
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (output += d));
  // PATH may be given to hide agent CLIs, so node is named by its path, not looked up.
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      if (!line.startsWith("{")) continue;
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // Not a log line.
      }
    }
    for (const w of waiters) w();
  });
  const d: DaemonProcess = {
    child,
    stateDir,
    logs,
    output: () => output,
    waitForLog(match, what, timeoutMs = 60_000, from = 0) {
      return new Promise((resolve, reject) => {
        let seen = from;
        const look = () => {
          for (; seen < logs.length; seen++) {
            if (match(logs[seen]!)) return finish(() => resolve(logs[seen]!));
          }
          if (ended) finish(() => reject(new Error(`the worker exited without ${what}:\n${output}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`no ${what} within ${timeoutMs} ms:\n${output}`))), timeoutMs);
        const finish = (then: () => void) => {
          clearTimeout(timer);
          waiters.delete(look);
          then();
        };
        waiters.add(look);
        look();
      });
    },
    exited: () => exit,
    signal: (signal) => void child.kill(signal),
    async kill() {
      if (!ended) child.kill("SIGKILL");
      await exit;
    },
  };
  if (options.waitForRegistration !== false) await d.waitForLog((l) => l.msg === "worker registered", "registration");
  return d;
}
