// A unit task's branches (issue 18): one per repository of its group, all of one name, made in
// the server's clones when the task is created, from each base branch's head as the fetch just
// before found it. The base commits are recorded per run (agent_task_base_remotes), and each
// run that succeeds records where its branches ended (readRunResult). Without remote contact
// (FOREMAN_CONTACT_REMOTES=false) there are no clones, so no branch and no commit is recorded.
//
// Several replicas: each keeps its own clones, and a worker's push lands in one of them. So the
// database says where each branch stands (table task_branches: its head, and its own commits
// as a git bundle), and syncTaskBranch makes a replica's clone agree before the branch is read
// or served: it records a push this replica took, or takes a push another replica recorded.
import path from "node:path";
import { applyBranchBundle, createBranchBundle, hasCommit, isAncestor, setBranch } from "../git/bundles.js";
import { branchHead, createTaskBranch, deleteTaskBranch } from "../git/branches.js";
import * as heads from "../store/task-branches.js";
import * as repos from "../store/repositories.js";
import type { Repository } from "../store/repositories.js";
import type { Core } from "./context.js";
import { alreadyExists, failedPrecondition, invalidArgument } from "./errors.js";

/** Characters of the title kept in a branch name. */
const SLUG_MAX = 40;

/**
 * The branch a task gets when none is given: foreman/<slug of the title>-<short id>, the slug
 * in lower-case ASCII letters, digits and dashes (foreman/<short id> when the title has none).
 * The short id is the last 8 hexadecimal digits of the task's id, which are random.
 */
export function defaultBranchName(title: string, taskId: string): string {
  const words = title
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w !== "");
  let slug = "";
  for (const word of words) {
    const next = slug === "" ? word : `${slug}-${word}`;
    if (next.length > SLUG_MAX) {
      if (slug === "") slug = word.slice(0, SLUG_MAX);
      break;
    }
    slug = next;
  }
  const shortId = taskId.replace(/-/g, "").slice(-8);
  return slug === "" ? `foreman/${shortId}` : `foreman/${slug}-${shortId}`;
}

/**
 * Makes the branch in each repository's clone from its base branch (`baseBranch`, else the
 * repository's default), in the clone's queue. Returns each repository's base commit; none when
 * the server contacts no remotes. A base branch the remote does not have is InvalidArgument; a
 * name in use in a repository (another task's branch, or a branch the remote has) AlreadyExists.
 * Nothing is left made when it throws.
 */
export async function startTaskBranches(core: Core, repositories: Repository[], branch: string, baseBranch: string): Promise<Map<string, string>> {
  const bases = new Map<string, string>();
  if (!core.remotes.contact) return bases;
  const made: string[] = [];
  try {
    for (const repository of repositories) {
      const base = baseBranch || repository.defaultBranch;
      const result = await core.clones.exclusive(repository.id, (dir) => createTaskBranch(dir, branch, base));
      if (result.created) {
        made.push(repository.id);
        bases.set(repository.id, result.baseCommit);
        continue;
      }
      const where = `repository ${repository.name} (${repository.id})`;
      if (result.reason === "no-base") {
        throw invalidArgument([{ field: "base_branch", description: `${where} has no branch ${base} on its remote` }]);
      }
      throw alreadyExists(
        "branch",
        result.reason === "exists"
          ? `branch ${branch} is in use by another task in ${where}; choose another branch_name, or leave it empty for a new one`
          : `branch ${branch} exists on the remote of ${where}; an approval would push over it: choose another branch_name, or give it as base_branch to start from it`,
        { branch_name: branch, repository_id: repository.id },
      );
    }
  } catch (error) {
    await dropTaskBranches(core, made, branch);
    throw error;
  }
  return bases;
}

/** Removes the branch from these repositories' clones (a task that was not made, or was deleted). */
export async function dropTaskBranches(core: Core, repositoryIds: string[], branch: string): Promise<void> {
  if (!core.remotes.contact) return;
  for (const id of repositoryIds) await core.clones.exclusive(id, (dir) => deleteTaskBranch(dir, branch));
}

/**
 * Makes this replica's clone hold the task's branch in the repository where the database says
 * it stands, and records first a push this replica took that the database lacks (the clone's
 * branch is ahead of the recorded head). Returns the branch's head; undefined when the database
 * records none (the task was made while the server kept no clones).
 */
export async function syncTaskBranch(core: Core, unitTaskId: string, repositoryId: string): Promise<string | undefined> {
  if (!core.remotes.contact) return undefined;
  const gitDir = path.join(core.clones.dir(repositoryId), ".git");
  // A head another replica moves meanwhile is read again: it only moves forward, a few times a run.
  for (let round = 0; round < 5; round++) {
    const row = await heads.branchHeadOf(core.db, unitTaskId, repositoryId);
    if (row === undefined) return undefined;
    const local = await branchHead(core.clones.dir(repositoryId), row.branchName);
    if (local === row.headCommit) return local;
    if (local !== undefined && (await hasCommit(gitDir, row.headCommit)) && (await isAncestor(gitDir, row.headCommit, local))) {
      // Ahead: a worker's push this replica took.
      const bundle = await createBranchBundle(gitDir, row.branchName, row.baseCommit);
      if (await heads.advanceBranchHead(core.db, row, row.headCommit, local, bundle, core.now())) return local;
      continue;
    }
    // Behind, missing or gone another way: the recorded branch wins.
    if (await takeRecordedBranch(core, row, gitDir)) return row.headCommit;
  }
  throw new Error(`task ${unitTaskId}'s branch in repository ${repositoryId} kept moving while this replica read it`);
}

/** Points the clone's branch at the recorded head, with the objects it needs; false when the head moved meanwhile. */
async function takeRecordedBranch(core: Core, row: heads.BranchHead, gitDir: string): Promise<boolean> {
  if (!(await hasCommit(gitDir, row.baseCommit))) {
    // This replica's clone is missing, or older than the task: fetch it (outside its queue, which the fetch takes).
    const repository = await repos.repositoryById(core.db, row.repositoryId);
    if (repository !== undefined) await core.clones.sync(core, repository);
    if (!(await hasCommit(gitDir, row.baseCommit))) {
      throw failedPrecondition(
        `task ${row.unitTaskId}'s base commit ${row.baseCommit.slice(0, 12)} is no longer on repository ${row.repositoryId}'s remote, so this server cannot rebuild its branch`,
        { repository_id: row.repositoryId },
      );
    }
  }
  if (row.headCommit === row.baseCommit) {
    await core.clones.exclusive(row.repositoryId, () => setBranch(gitDir, row.branchName, row.baseCommit));
    return true;
  }
  const stored = await heads.branchBundle(core.db, row.unitTaskId, row.repositoryId);
  if (stored === undefined || stored.headCommit !== row.headCommit || stored.bundle === null) return false;
  await core.clones.exclusive(row.repositoryId, () => applyBranchBundle(gitDir, row.branchName, stored.bundle!));
  return true;
}

/** Where each repository's branch of a run stands (absent: none recorded), this replica's clone made to agree. */
export async function readBranchHeads(core: Core, unitTaskId: string, remotes: { repositoryId: string }[]): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const r of remotes) {
    const head = await syncTaskBranch(core, unitTaskId, r.repositoryId);
    if (head !== undefined) found.set(r.repositoryId, head);
  }
  return found;
}

/** Where a succeeded run left its branches, read from the server's clones as the worker reports. */
export interface RunResult {
  agentTaskId: string;
  /** Repository id → its branch's head. */
  heads: Map<string, string>;
  /** The first repository's (by id) head: the task's end commit. */
  endCommit: string | undefined;
  /** Whether any branch moved from where the run started. */
  changed: boolean;
}

/**
 * Reads what a run that reports success left on its branches (undefined without clones). A
 * head_commit the worker names must be the head of one of them: a worker that reports work it
 * has not pushed to the server is told so, and the report does not apply.
 */
export async function readRunResult(
  core: Core,
  run: { unitTaskId: string; agentTaskId: string },
  remotes: Remote[],
  headCommit: string | null,
): Promise<RunResult | undefined> {
  if (!core.remotes.contact || remotes.length === 0) return undefined;
  const heads = await readBranchHeads(core, run.unitTaskId, remotes);
  if (heads.size === 0) return undefined;
  if (headCommit !== null && ![...heads.values()].some((h) => h.startsWith(headCommit))) {
    const branches = remotes.map((r) => `${r.branchName} of repository ${r.name} at ${heads.get(r.repositoryId)?.slice(0, 12) ?? "no commit"}`).join(", ");
    throw failedPrecondition(
      `head_commit ${headCommit} is not the head of the task's branch on the server (${branches}): push the branch to the server, then report again`,
      { head_commit: headCommit },
    );
  }
  const first = [...remotes].sort((a, b) => (a.repositoryId < b.repositoryId ? -1 : 1))[0]!;
  const changed = remotes.some((r) => r.baseCommit !== null && heads.has(r.repositoryId) && heads.get(r.repositoryId) !== r.baseCommit);
  return { agentTaskId: run.agentTaskId, heads, endCommit: heads.get(first.repositoryId), changed };
}

interface Remote {
  repositoryId: string;
  name: string;
  branchName: string;
  baseCommit: string | null;
}
