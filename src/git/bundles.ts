// A task branch's own commits as a git bundle: what a replica that did not take a worker's push
// needs, besides the base branch it fetches from upstream itself, to have the branch too. The
// bundle holds refs/heads/<branch> and every object from the base commit (its prerequisite) up.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { GitCommandError, runGit } from "./command.js";

/** The largest bundle read back into memory. */
const MAX_BUNDLE_BYTES = 1024 * 1024 * 1024;

/** Whether the repository has this commit. */
export async function hasCommit(gitDir: string, commit: string): Promise<boolean> {
  try {
    await runGit(gitDir, ["cat-file", "-e", `${commit}^{commit}`]);
    return true;
  } catch (error) {
    if (error instanceof GitCommandError) return false;
    throw error;
  }
}

/** Whether `ancestor` is `descendant` or one of its ancestors (both must be in the repository). */
export async function isAncestor(gitDir: string, ancestor: string, descendant: string): Promise<boolean> {
  try {
    await runGit(gitDir, ["merge-base", "--is-ancestor", ancestor, descendant]);
    return true;
  } catch (error) {
    if (error instanceof GitCommandError && error.exitCode === 1) return false;
    throw error;
  }
}

/** refs/heads/<branch> and its commits not reachable from `base`, as a bundle (the branch must have moved from base). */
export async function createBranchBundle(gitDir: string, branch: string, base: string): Promise<Buffer> {
  return runGit(gitDir, ["bundle", "create", "--quiet", "-", `refs/heads/${branch}`, `^${base}`], { maxBuffer: MAX_BUNDLE_BYTES });
}

/** Writes a bundle's objects into the repository and points refs/heads/<branch> at its head (its prerequisite must be there). */
export async function applyBranchBundle(gitDir: string, branch: string, bundle: Buffer): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "foreman-bundle-"));
  try {
    const file = path.join(dir, "branch.bundle");
    await writeFile(file, bundle);
    await runGit(gitDir, ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", file, `+refs/heads/${branch}:refs/heads/${branch}`]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Points refs/heads/<branch> at commit, whatever it pointed at. */
export async function setBranch(gitDir: string, branch: string, commit: string): Promise<void> {
  await runGit(gitDir, ["update-ref", `refs/heads/${branch}`, commit]);
}
