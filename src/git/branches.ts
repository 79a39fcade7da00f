// Task branches in the server's clone (issue 18, "Task branches and workspaces"): a task's branch
// is a local branch (refs/heads/<name>) of the server's clone, made from the clone's copy of the
// base branch (refs/remotes/origin/<base>) right after the fetch that starts the task. Workers
// later fetch and push it through the server; the upstream remote never sees it until approval.
import fs from "node:fs";
import * as isogit from "isomorphic-git";

export interface TaskBranch {
  /** The commit the branch started from: the base branch's head as the fetch found it. */
  baseCommit: string;
  /** Whether this call made the branch (false: it was there already and was left as it is). */
  created: boolean;
}

/**
 * Makes refs/heads/<branch> in the clone at dir point at the clone's copy of <base>. A branch that
 * exists already (a name given again) is left where it is: it may hold a run's work. Throws when
 * the clone has no such base branch.
 */
export async function createTaskBranch(dir: string, branch: string, base: string): Promise<TaskBranch> {
  const baseCommit = await isogit.resolveRef({ fs, dir, ref: `refs/remotes/origin/${base}` });
  const ref = `refs/heads/${branch}`;
  const existing = await isogit.resolveRef({ fs, dir, ref }).catch(() => undefined);
  if (existing !== undefined) return { baseCommit, created: false };
  await isogit.writeRef({ fs, dir, ref, value: baseCommit, force: false });
  return { baseCommit, created: true };
}

/** The commit a branch of the clone points at, or undefined when it has none. */
export async function branchHead(dir: string, branch: string): Promise<string | undefined> {
  return isogit.resolveRef({ fs, dir, ref: `refs/heads/${branch}` }).catch(() => undefined);
}
