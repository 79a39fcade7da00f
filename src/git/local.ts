// Remotes that are folders on the server's machine (single-user mode only). isomorphic-git
// speaks HTTP only, so these go through the git command (Debian's git), never through a shell:
// the path is an absolute one (it cannot read as an option), and no user or system git
// configuration is read. `--no-local` makes a clone copy objects through git's own transport
// rather than hard-link or copy the folder's files (which a crafted folder could point elsewhere).
import { execFile } from "node:child_process";
import { mkdir, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { cloneIntoPlace, remoteBranches, type SyncResult } from "./clone.js";
import { gitEnv } from "./command.js";
import { RemoteError, type RemoteHead } from "./remote.js";

/** A clone or fetch of a folder may take this many times the remote timeout. */
const SYNC_TIMEOUT_FACTOR = 15;

function run(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("git", args, { env: gitEnv(), timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error === null) return resolve(stdout);
      const e = error as NodeJS.ErrnoException & { killed?: boolean };
      if (e.killed) return reject(new RemoteError("timeout", `git did not finish within ${timeoutMs} ms`));
      if (e.code === "ENOENT") return reject(new RemoteError("unreachable", "the git command is not installed on the server"));
      // git's own words name the folder, which the caller gave: not repeated to the client.
      const missing = /does not appear to be a git repository|not a git repository|No such file or directory/i.test(String(stderr));
      reject(new RemoteError(missing ? "not-found" : "unreachable", missing ? "no git repository in this folder" : "git could not read the folder"));
    });
  });
}

/**
 * The git folder a path names, as git finds it (<path>/.git, <path>, <path>.git/.git, <path>.git:
 * the first that holds a HEAD), with symbolic links resolved; undefined when there is none. Two
 * spellings of one repository (with and without ".git", through a link) give one folder.
 */
export async function resolveLocalGitDir(folder: string): Promise<string | undefined> {
  for (const suffix of ["/.git", "", ".git/.git", ".git"]) {
    const candidate = `${folder}${suffix}`;
    const isGitDir = await stat(path.join(candidate, "HEAD")).then(
      (s) => s.isFile(),
      () => false,
    );
    if (isGitDir) return realpath(candidate);
  }
  return undefined;
}

/** Like readRemoteHead (src/git/remote.ts), for a folder on this machine. */
export async function readLocalHead(folder: string, branch: string | undefined, timeoutMs: number): Promise<RemoteHead> {
  const out = await run(["ls-remote", "--symref", folder, "HEAD", ...(branch === undefined ? [] : [`refs/heads/${branch}`])], timeoutMs);
  let defaultBranch: string | undefined;
  let headCommit: string | undefined;
  let branchCommit: string | undefined;
  for (const line of out.split("\n")) {
    const symref = /^ref: refs\/heads\/(\S+)\tHEAD$/.exec(line);
    if (symref !== null) {
      defaultBranch = symref[1];
      continue;
    }
    const [oid, ref] = line.split("\t");
    if (ref === "HEAD") headCommit = oid;
    else if (branch !== undefined && ref === `refs/heads/${branch}`) branchCommit = oid;
  }
  return { defaultBranch, commit: branch === undefined ? headCommit : branchCommit };
}

/** Like syncClone (src/git/clone.ts), for a folder on this machine. */
export async function syncLocalClone(dir: string, folder: string, timeoutMs: number): Promise<SyncResult> {
  const limit = timeoutMs * SYNC_TIMEOUT_FACTOR;
  let cloned = !(await stat(path.join(dir, ".git", "config")).then(
    (s) => s.isFile(),
    () => false,
  ));
  if (cloned) {
    await mkdir(path.dirname(dir), { recursive: true, mode: 0o700 });
    cloned = await cloneIntoPlace(dir, (aside) => run(["clone", "--quiet", "--no-checkout", "--no-local", "--", folder, aside], limit));
  }
  if (!cloned) await run(["-C", dir, "fetch", "--quiet", "--prune", "origin"], limit);
  return { cloned, branches: await remoteBranches(dir) };
}
