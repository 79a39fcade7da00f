// The git command (Debian's git), for what isomorphic-git does not do (bundles, ancestry, diffs):
// never through a shell, with no user or system configuration read, no prompt, a deadline, and
// its own words kept for the caller's log, never for a client (they may name server paths).
import { execFile } from "node:child_process";

export class GitCommandError extends Error {
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`git ${args[0] ?? ""} failed${exitCode === null ? "" : ` with exit code ${exitCode}`}: ${stderr.trim().slice(0, 500)}`);
  }
}

/** The environment every git command of the server runs in: no user or system configuration, no prompt. */
export function gitEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: "/",
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_TERMINAL_PROMPT: "0",
    LC_ALL: "C",
    ...extra,
  };
}

/** Runs `git --git-dir=<gitDir> args…` and returns its stdout. */
export function runGit(gitDir: string, args: string[], options: { timeoutMs?: number; maxBuffer?: number } = {}): Promise<Buffer> {
  const all = [`--git-dir=${gitDir}`, ...args];
  return new Promise((resolve, reject) => {
    execFile(
      "git",
      all,
      { encoding: "buffer", env: gitEnv(), timeout: options.timeoutMs ?? 120_000, killSignal: "SIGKILL", maxBuffer: options.maxBuffer ?? 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error === null) return resolve(stdout);
        reject(new GitCommandError(args, typeof error.code === "number" ? error.code : null, stderr.toString("utf8")));
      },
    );
  });
}
