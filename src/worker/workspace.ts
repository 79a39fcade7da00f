// A session's workspace on the worker's machine: each repository of the assignment cloned (or,
// when an earlier run of the same task left it here, fetched: only what is new) from the
// server's workspace route, at the task branch; after the agent, what it left uncommitted is
// committed and the branch pushed back to the same route. The git command does the work, in
// child processes, so a 5,000-file checkout never holds up the heartbeat. The lease token
// rides in git's environment configuration (http.extraHeader), so it is written to no
// .git/config and no command line.
import { execFile } from "node:child_process";
import { mkdir, readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { AssignedRepository } from "../../gen/foreman/v1/worker_pb.js";

/** Who the worker's own commits are by (the agent's own commits keep its identity, when it has one). */
export const WORKER_GIT_IDENTITY = { name: "Foreman worker", email: "worker@foreman.invalid" };

/** A git failure: its words are the worker's to log and to report (they name no secret). */
export class WorkspaceError extends Error {
  constructor(
    message: string,
    /** The server answered 403/404: the lease is gone (fenced), not a fault of the workspace. */
    readonly leaseLost = false,
  ) {
    super(message);
  }
}

export interface WorkspaceRepository {
  repositoryId: string;
  name: string;
  branch: string;
  /** The folder of its working tree. */
  dir: string;
  /** The branch's head as fetched, before the agent. */
  startCommit: string;
  url: string;
}

export interface Workspace {
  /** Where the agent works: the repository's folder, or with several repositories the folder holding one folder each. */
  dir: string;
  repositories: WorkspaceRepository[];
}

export interface WorkspaceOptions {
  /** The server's base URL; each repository's clone_url is a path on it. */
  server: string;
  leaseToken: string;
  /** The folder the task's workspaces live in (one per task, reused by its later runs). */
  root: string;
  taskId: string;
  signal?: AbortSignal;
}

/** The environment of every git command the worker runs: no user configuration, no prompt, the lease as a header. */
function gitEnvironment(leaseToken: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/",
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_TERMINAL_PROMPT: "0",
    LC_ALL: "C",
    GIT_CONFIG_COUNT: "1",
    GIT_CONFIG_KEY_0: "http.extraHeader",
    GIT_CONFIG_VALUE_0: `Authorization: Bearer ${leaseToken}`,
    GIT_AUTHOR_NAME: WORKER_GIT_IDENTITY.name,
    GIT_AUTHOR_EMAIL: WORKER_GIT_IDENTITY.email,
    GIT_COMMITTER_NAME: WORKER_GIT_IDENTITY.name,
    GIT_COMMITTER_EMAIL: WORKER_GIT_IDENTITY.email,
  };
}

function git(args: string[], options: { cwd?: string; leaseToken: string; signal?: AbortSignal; timeoutMs?: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "git",
      args,
      { cwd: options.cwd, env: gitEnvironment(options.leaseToken), timeout: options.timeoutMs ?? 600_000, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024, signal: options.signal },
      (error, stdout, stderr) => {
        if (error === null) return resolve(stdout);
        const words = stderr.trim().split("\n").slice(-3).join(" ").slice(0, 500) || error.message;
        // The route answers 404 (or 403) once the lease is gone: fenced, like LEASE_LOST.
        const leaseLost = /returned error: 40[34]|repository '[^']*' not found/.test(stderr);
        reject(new WorkspaceError(`git ${args[0]} failed: ${words}`, leaseLost));
      },
    );
  });
}

/** The folder of a task's workspace under the root. */
export function taskFolder(taskId: string): string {
  return taskId.replace(/[^A-Za-z0-9_-]/g, "_") || "task";
}

/** The folder name of a repository: its name, made safe for a path. */
function folderName(name: string, taken: Set<string>): string {
  let base = name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[-.]+/, "") || "repository";
  if (base === "." || base === "..") base = "repository";
  let candidate = base;
  for (let n = 2; taken.has(candidate); n++) candidate = `${base}-${n}`;
  taken.add(candidate);
  return candidate;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** Clones or fetches each repository at its task branch; the working tree is exactly the branch's head. */
export async function prepareWorkspace(repositories: readonly AssignedRepository[], options: WorkspaceOptions): Promise<Workspace> {
  if (repositories.length === 0) throw new WorkspaceError("the assignment names no repository");
  const taskDir = path.join(options.root, taskFolder(options.taskId));
  await mkdir(taskDir, { recursive: true });
  const taken = new Set<string>();
  const prepared: WorkspaceRepository[] = [];
  for (const repository of repositories) {
    const dir = path.join(taskDir, folderName(repository.name, taken));
    const url = new URL(repository.cloneUrl, options.server).href;
    const run = (args: string[], cwd?: string) => git(args, { cwd, leaseToken: options.leaseToken, signal: options.signal });
    const branch = repository.branchName;
    if (await exists(path.join(dir, ".git"))) {
      // An earlier run of this task: fetch only what is new, then take the server's branch as it is.
      await run(["remote", "set-url", "origin", url], dir);
      await run(["fetch", "--no-tags", "origin", `+refs/heads/${branch}:refs/remotes/origin/${branch}`], dir);
      await run(["checkout", "-q", "-B", branch, `refs/remotes/origin/${branch}`], dir);
      await run(["reset", "-q", "--hard", `refs/remotes/origin/${branch}`], dir);
      await run(["clean", "-q", "-fdx"], dir);
    } else {
      await rm(dir, { recursive: true, force: true });
      await run(["clone", "-q", "--no-tags", "--single-branch", "--branch", branch, url, dir]);
    }
    await ensureIdentity(dir);
    const startCommit = (await run(["rev-parse", "HEAD"], dir)).trim();
    prepared.push({ repositoryId: repository.repositoryId, name: repository.name, branch, dir, startCommit, url });
  }
  return { dir: prepared.length === 1 ? prepared[0]!.dir : taskDir, repositories: prepared };
}

/**
 * The agent commits as the worker's user, when that user has a git identity; else as the
 * worker (set in the repository's own configuration), so that its `git commit` does not fail.
 */
async function ensureIdentity(dir: string): Promise<void> {
  const userEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/", LC_ALL: "C" };
  const has = await new Promise<boolean>((resolve) => execFile("git", ["config", "--get", "user.email"], { cwd: dir, env: userEnv }, (error) => resolve(error === null)));
  if (has) return;
  const local = (args: string[]) => new Promise<void>((resolve, reject) => execFile("git", ["config", ...args], { cwd: dir, env: userEnv }, (error) => (error === null ? resolve() : reject(new WorkspaceError(`git config failed: ${error.message}`)))));
  await local(["user.name", WORKER_GIT_IDENTITY.name]);
  await local(["user.email", WORKER_GIT_IDENTITY.email]);
}

/** A commit message for what the agent left uncommitted: the prompt's first line, and where it came from. */
export function resultMessage(prompt: string, taskId: string, sessionId: string): string {
  const first = prompt.split("\n").map((l) => l.trim()).find((l) => l !== "") ?? "Agent changes";
  const subject = first.length > 72 ? `${first.slice(0, 71)}…` : first;
  return `${subject}\n\nForeman task ${taskId}, session ${sessionId}\n`;
}

/**
 * Commits what the agent left uncommitted and pushes each branch that moved. Returns the first
 * repository's head (ReportStatus's head_commit), or "" when no repository moved.
 */
export async function deliverResult(workspace: Workspace, options: { leaseToken: string; message: string; signal?: AbortSignal }): Promise<{ headCommit: string; moved: string[] }> {
  const moved: string[] = [];
  let headCommit = "";
  for (const [i, repository] of workspace.repositories.entries()) {
    const run = (args: string[]) => git(args, { cwd: repository.dir, leaseToken: options.leaseToken, signal: options.signal });
    await run(["add", "-A"]);
    const staged = await run(["status", "--porcelain", "--untracked-files=no"]);
    if (staged.trim() !== "") await run(["commit", "-q", "--no-verify", "-m", options.message]);
    const head = (await run(["rev-parse", "HEAD"])).trim();
    if (head !== repository.startCommit) {
      await run(["push", "-q", "--no-verify", "origin", `HEAD:refs/heads/${repository.branch}`]);
      moved.push(repository.name);
    }
    if (i === 0 && head !== repository.startCommit) headCommit = head;
  }
  return { headCommit, moved };
}

/** Keeps the `keep` most recently used task workspaces under root and removes the rest. */
export async function pruneWorkspaces(root: string, keep: number, inUse: ReadonlySet<string>): Promise<void> {
  const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
  const dirs = await Promise.all(
    entries.filter((e) => e.isDirectory()).map(async (e) => ({ name: e.name, mtime: (await stat(path.join(root, e.name))).mtimeMs })),
  );
  dirs.sort((a, b) => b.mtime - a.mtime);
  for (const old of dirs.slice(keep)) {
    if (!inUse.has(old.name)) await rm(path.join(root, old.name), { recursive: true, force: true });
  }
}
