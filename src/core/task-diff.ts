// GetTaskDiff (issue 18, "Review and delivery"): what a unit task changed, read from the server's
// clone of each of its repositories with the git command (src/git/diff.ts).
//
// - The whole task: per repository, from the first run's base commit (the base branch's head
//   when the task was made) to the latest run's end commit (recorded when it succeeded), or the
//   task branch's current head in the clone while the latest run has none.
// - One run: from its base commit (for a later run, such as RequestChanges', where the branch
//   was when it was queued) to its end commit; with none, to the next run's base commit (where
//   the branch was when the next run started), else the branch's current head.
// The answer says which head it read (HeadSource). Without a base commit (the server contacts
// no remotes, so it holds no clone and records none) there is no diff: FailedPrecondition.
//
// Paged by file position across the repositories (in id order: the one added first is the
// task's own, as its base_commit and end_commit) then by path; the token carries the position
// and a fingerprint of the commits, so a page never mixes two states of a branch that moved.
// Bounded: each file's patch is cut at MAX_FILE_BYTES with git/diff.ts's CUT_MARKER, and a page
// ends before the file that would take its patches past MAX_ANSWER_BYTES (it always holds one).
import { createHash } from "node:crypto";
import path from "node:path";
import { branchHead } from "../git/branches.js";
import { changedFiles, filePatches, type ChangedFile } from "../git/diff.js";
import { runBranchesOf, type RunBranch, type RunBranches } from "../store/run-branches.js";
import type { Core } from "./context.js";
import { failedPrecondition, notFound } from "./errors.js";
import { syncTaskBranch } from "./task-branches.js";
import * as tasks from "./tasks.js";
import { Violations } from "./validation.js";

/** Files a page holds when the request names no page_size. */
export const DEFAULT_DIFF_PAGE_SIZE = 50;
/** The most files a page holds (a larger page_size is read as this). */
export const MAX_DIFF_PAGE_SIZE = 200;
/** Bytes of one file's patch before it is cut. */
export const MAX_FILE_BYTES = 256 * 1024;
/** Bytes of one answer's patches in all: a page ends before a file that would go over. */
export const MAX_ANSWER_BYTES = 1024 * 1024;

export type HeadSource = "end-commit" | "next-run-base" | "branch-head";

export interface DiffFile extends ChangedFile {
  /** Its patch is cut at MAX_FILE_BYTES (it ends with CUT_MARKER). */
  cut: boolean;
}

export interface RepositoryDiff {
  repositoryId: string;
  name: string;
  branchName: string;
  baseBranch: string;
  baseCommit: string;
  headCommit: string;
  headSource: HeadSource;
  /** Files changed in this repository, in all pages. */
  totalFiles: number;
  /** This page's files of the repository, in path order. */
  files: DiffFile[];
  /** Their unified diff, in the same order. */
  unifiedDiff: string;
}

export interface TaskDiff {
  /** Every repository of the run(s), in id order, each with its part of this page. */
  repositories: RepositoryDiff[];
  totalFiles: number;
  /** Some file of this page is cut. */
  truncated: boolean;
  nextPageToken: string;
}

export interface TaskDiffInput {
  id: string;
  agentTaskId: string;
  pageSize: number;
  pageToken: string;
}

/** What one repository's diff reads: base..head in its clone. */
interface Range {
  branch: RunBranch;
  base: string;
  head: string;
  headSource: HeadSource;
}

export async function getTaskDiff(core: Core, ownerId: string, input: TaskDiffInput): Promise<TaskDiff> {
  const v = new Violations();
  const id = v.id("id", input.id);
  const agentTaskId = v.optionalId("agent_task_id", input.agentTaskId);
  if (input.pageSize < 0) v.add("page_size", "must not be negative");
  const position = readToken(v, input.pageToken);
  v.throwIfAny();
  const pageSize = input.pageSize === 0 ? DEFAULT_DIFF_PAGE_SIZE : Math.min(input.pageSize, MAX_DIFF_PAGE_SIZE);

  // The owner's task or NotFound, as every task call.
  const task = await tasks.getTask(core, ownerId, id);
  if (task.kind === "composite") {
    throw failedPrecondition(`task ${id} is a composite task: it has no branch of its own, its unit tasks have the diffs`, { id });
  }
  const runs = await runBranchesOf(core.db, ownerId, id);
  // This replica's clones made to agree with the branches as recorded (another may have taken the pushes).
  for (const repositoryId of new Set(runs.flatMap((r) => r.repositories.map((b) => b.repositoryId)))) await syncTaskBranch(core, id, repositoryId);
  const ranges = await (agentTaskId === undefined ? wholeTask(core, id, runs) : oneRun(core, id, runs, agentTaskId));

  const lists: ChangedFile[][] = [];
  for (const r of ranges) lists.push(await readFiles(r, () => changedFiles(gitDir(core, r), r.base, r.head)));
  const totalFiles = lists.reduce((n, l) => n + l.length, 0);

  const scope = `diff ${id} ${agentTaskId ?? "*"} ${ranges.map((r) => `${r.branch.repositoryId}:${r.base}..${r.head}`).join(" ")}`;
  if (position !== undefined && (position.f !== fingerprint(scope) || position.p > totalFiles)) {
    v.add("page_token", "belongs to another diff, or this diff changed since it was issued (a branch moved on); start again without it");
    v.throwIfAny();
  }
  const start = position?.p ?? 0;

  const repositories: RepositoryDiff[] = ranges.map((r, i) => ({
    repositoryId: r.branch.repositoryId,
    name: r.branch.repositoryName,
    branchName: r.branch.branchName,
    baseBranch: r.branch.baseBranch,
    baseCommit: r.base,
    headCommit: r.head,
    headSource: r.headSource,
    totalFiles: lists[i]!.length,
    files: [],
    unifiedDiff: "",
  }));
  // The page: files start.. across the repositories, until pageSize or the byte bound.
  let at = 0;
  let taken = 0;
  let bytes = 0;
  let truncated = false;
  let full = false;
  for (let i = 0; i < ranges.length && !full; i++) {
    const list = lists[i]!;
    if (at + list.length <= start) {
      at += list.length;
      continue;
    }
    const r = ranges[i]!;
    const from = Math.max(0, start - at);
    // This repository's candidates for the page, read with one git command.
    const candidates = list.slice(from, from + (pageSize - taken));
    const patches = await readFiles(r, () => filePatches(gitDir(core, r), r.base, r.head, candidates, MAX_FILE_BYTES));
    for (let k = 0; k < candidates.length; k++) {
      const file = candidates[k]!;
      const patch = patches[k]!;
      const size = Buffer.byteLength(patch.text);
      if (taken > 0 && bytes + size > MAX_ANSWER_BYTES) {
        full = true;
        break;
      }
      repositories[i]!.files.push({ ...file, cut: patch.cut });
      repositories[i]!.unifiedDiff += patch.text;
      truncated ||= patch.cut;
      bytes += size;
      taken++;
    }
    if (taken === pageSize) full = true;
    at += list.length;
  }
  const next = start + taken;
  return { repositories, totalFiles, truncated, nextPageToken: next < totalFiles ? writeToken(next, scope) : "" };
}

/** Per repository of the latest run: the first run's base to the latest run's end (or the branch's head). */
async function wholeTask(core: Core, taskId: string, runs: RunBranches[]): Promise<Range[]> {
  const latest = runs[runs.length - 1];
  if (latest === undefined || latest.repositories.length === 0) throw noBranches(taskId);
  const ranges: Range[] = [];
  for (const branch of latest.repositories) {
    const first = runs.find((run) => run.repositories.some((b) => b.repositoryId === branch.repositoryId))!;
    const base = first.repositories.find((b) => b.repositoryId === branch.repositoryId)!.baseCommit;
    if (base === null) throw noBase(taskId, branch);
    ranges.push(await headOf(core, taskId, branch, base, undefined));
  }
  return ranges;
}

/** Per repository of the run: its base to its end (or the next run's base, or the branch's head). */
async function oneRun(core: Core, taskId: string, runs: RunBranches[], agentTaskId: string): Promise<Range[]> {
  const index = runs.findIndex((run) => run.agentTaskId === agentTaskId);
  if (index === -1) throw notFound("agent task", agentTaskId, `agent task ${agentTaskId} of task ${taskId} not found`);
  const run = runs[index]!;
  if (run.repositories.length === 0) throw noBranches(taskId);
  const ranges: Range[] = [];
  for (const branch of run.repositories) {
    if (branch.baseCommit === null) throw noBase(taskId, branch);
    const after = runs
      .slice(index + 1)
      .map((later) => later.repositories.find((b) => b.repositoryId === branch.repositoryId)?.baseCommit)
      .find((c) => c !== undefined && c !== null);
    ranges.push(await headOf(core, taskId, branch, branch.baseCommit, after ?? undefined));
  }
  return ranges;
}

async function headOf(core: Core, taskId: string, branch: RunBranch, base: string, nextBase: string | undefined): Promise<Range> {
  if (branch.endCommit !== null) return { branch, base, head: branch.endCommit, headSource: "end-commit" };
  if (nextBase !== undefined) return { branch, base, head: nextBase, headSource: "next-run-base" };
  const head = await branchHead(core.clones.dir(branch.repositoryId), branch.branchName);
  if (head === undefined) {
    throw failedPrecondition(
      `task ${taskId} has no diff in repository ${describe(branch)}: the server's clone of it has no branch ${branch.branchName}`,
      { id: taskId, repository_id: branch.repositoryId },
    );
  }
  return { branch, base, head, headSource: "branch-head" };
}

function gitDir(core: Core, r: Range): string {
  return path.join(core.clones.dir(r.branch.repositoryId), ".git");
}

/** Runs a read of the clone; a clone that is gone or lacks the commits is FailedPrecondition. */
async function readFiles<T>(r: Range, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch {
    throw failedPrecondition(
      `the server's clone of repository ${describe(r.branch)} cannot show ${r.base.slice(0, 12)}..${r.head.slice(0, 12)} (the clone is gone, or lacks those commits)`,
      { repository_id: r.branch.repositoryId },
    );
  }
}

function describe(branch: RunBranch): string {
  return branch.repositoryName === "" ? branch.repositoryId : `${branch.repositoryName} (${branch.repositoryId})`;
}

function noBranches(taskId: string): Error {
  return failedPrecondition(`task ${taskId} has no diff: its runs name no repository branch`, { id: taskId });
}

function noBase(taskId: string, branch: RunBranch): Error {
  return failedPrecondition(
    `task ${taskId} has no diff in repository ${describe(branch)}: no base commit was recorded for it (the server held no clone when the run was queued, as when it contacts no remotes)`,
    { id: taskId, repository_id: branch.repositoryId },
  );
}

// Page tokens: a file position and a fingerprint of the diff's scope (task, run and commits).

function fingerprint(scope: string): string {
  return createHash("sha256").update(scope).digest("base64url").slice(0, 16);
}

function readToken(v: Violations, token: string): { p: number; f: string } | undefined {
  if (token === "") return undefined;
  try {
    if (token.length > 200) throw new Error("too long");
    const parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { p?: unknown; f?: unknown };
    if (typeof parsed.p !== "number" || !Number.isSafeInteger(parsed.p) || parsed.p < 1 || typeof parsed.f !== "string") throw new Error("no position");
    return { p: parsed.p, f: parsed.f };
  } catch {
    v.add("page_token", "is not a page token this server issued");
    return undefined;
  }
}

function writeToken(position: number, scope: string): string {
  return Buffer.from(JSON.stringify({ p: position, f: fingerprint(scope) }), "utf8").toString("base64url");
}
