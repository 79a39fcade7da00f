// Task branches in the server's clone (issue 18, "Task branches and workspaces"): a task's branch
// is a local branch (refs/heads/<name>) of the server's clone, made from the clone's copy of the
// base branch (refs/remotes/origin/<base>) right after the fetch that starts the task. Workers
// later fetch and push it through the server; the upstream remote never sees it until approval.
import fs from "node:fs";
import * as isogit from "isomorphic-git";

export type TaskBranch =
  /** Made, at baseCommit: the base branch's head as the fetch found it. */
  | { created: true; baseCommit: string }
  /**
   * Not made: the clone has no such base branch, the branch is there already (another task's,
   * or work of someone else's: left as it is), or the remote has a branch of that name (an
   * approval would have to push over it).
   */
  | { created: false; reason: "no-base" | "exists" | "exists-upstream" };

async function resolve(dir: string, ref: string): Promise<string | undefined> {
  return isogit.resolveRef({ fs, dir, ref }).catch(() => undefined);
}

/** Makes refs/heads/<branch> in the clone at dir point at the clone's copy of <base>, unless a branch of that name is there or upstream. */
export async function createTaskBranch(dir: string, branch: string, base: string): Promise<TaskBranch> {
  const baseCommit = await resolve(dir, `refs/remotes/origin/${base}`);
  if (baseCommit === undefined) return { created: false, reason: "no-base" };
  const ref = `refs/heads/${branch}`;
  if ((await resolve(dir, ref)) !== undefined) return { created: false, reason: "exists" };
  if ((await resolve(dir, `refs/remotes/origin/${branch}`)) !== undefined) return { created: false, reason: "exists-upstream" };
  await isogit.writeRef({ fs, dir, ref, value: baseCommit, force: false });
  return { created: true, baseCommit };
}

/** Removes a task branch from the clone (nothing when it has none). */
export async function deleteTaskBranch(dir: string, branch: string): Promise<void> {
  await isogit.deleteRef({ fs, dir, ref: `refs/heads/${branch}` }).catch(() => undefined);
}

/** The commit a branch of the clone points at, or undefined when it has none. */
export async function branchHead(dir: string, branch: string): Promise<string | undefined> {
  return resolve(dir, `refs/heads/${branch}`);
}
