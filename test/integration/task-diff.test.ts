// TaskService.GetTaskDiff (src/core/task-diff.ts) over HTTP with the generated client, on both
// databases, against real git remotes (test/helpers/git-remote.ts) and the server's own clones:
// a run's commits are made in the server's clone on the task branch with git's plumbing, as a
// worker's push would leave them, and the run's end commit is recorded by reporting SUCCEEDED
// through the worker protocol. The whole task's diff and one run's; statuses, line stats and
// binary files; pages and their tokens; the byte bounds; a task of two repositories; another
// user's task; a task with no base commit recorded (a server that contacts no remotes); a
// composite task.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { DiffHeadSource, FileStatus, TaskService, type GetTaskDiffResponse, type UnitTask } from "../../gen/foreman/v1/task_pb.js";
import { cloneDir } from "../../src/core/paths.js";
import { MAX_ANSWER_BYTES, MAX_FILE_BYTES } from "../../src/core/task-diff.js";
import { CUT_MARKER } from "../../src/git/diff.js";
import { DIALECTS } from "../helpers/databases.js";
import { dispatchFixtures } from "../helpers/dispatch.js";
import { caller, signIn, type Caller, type User } from "../helpers/fixtures.js";
import { git, gitEnv, startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { expectError } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** Runs git with input bytes on stdin (a binary blob), returning stdout trimmed. */
function gitWithInput(args: string[], input: Buffer | string, env: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("git", args, { env: gitEnv(env), stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve(Buffer.concat(out).toString("utf8").trimEnd()) : reject(new Error(`git ${args[0]} exited ${code}: ${Buffer.concat(err).toString()}`)),
    );
    child.stdin.end(input);
  });
}

/**
 * A commit on refs/heads/<branch> of the server's clone (git dir <clone>/.git) writing files
 * (null deletes one), with git's plumbing on a temporary index, as a worker's push leaves it.
 */
async function commitInClone(clone: string, branch: string, files: Record<string, string | Buffer | null>): Promise<string> {
  const base = ["--git-dir", path.join(clone, ".git")];
  const parent = await git([...base, "rev-parse", "--verify", `refs/heads/${branch}`]);
  const index = path.join(os.tmpdir(), `foreman-diff-index-${randomUUID()}`);
  const env = { GIT_INDEX_FILE: index };
  try {
    await git([...base, "read-tree", parent], { env });
    const lines: string[] = [];
    for (const [file, content] of Object.entries(files)) {
      if (content === null) lines.push(`0 ${"0".repeat(40)}\t${file}`);
      else lines.push(`100644 ${await gitWithInput([...base, "hash-object", "-w", "--stdin"], content)}\t${file}`);
    }
    await git([...base, "update-index", "--index-info"], { env, input: `${lines.join("\n")}\n` });
    const tree = await git([...base, "write-tree"], { env });
    const commit = await git([...base, "commit-tree", tree, "-p", parent, "-m", "the agent's work"]);
    await git([...base, "update-ref", `refs/heads/${branch}`, commit, parent]);
    return commit;
  } finally {
    await rm(index, { force: true });
  }
}

const SIX_LINES = "a\nb\nc\nd\ne\nf\n";

describe.each(DIALECTS)("GetTaskDiff on %s", (dialect) => {
  let remote: GitRemote;
  let provider: TestProvider;
  let t: TestServer;
  let alice: User;
  let bob: User;

  const fx = dispatchFixtures({ server: () => t, provider: () => provider, userPrefix: "diff", workerName: "diff worker" });

  beforeAll(async () => {
    remote = await startGitRemote();
    provider = await startOidcProvider();
    t = await startMultiUserServer(dialect, provider, {
      FOREMAN_CONTACT_REMOTES: "true",
      FOREMAN_ALLOW_PRIVATE_REMOTES: "true",
      FOREMAN_REMOTE_TIMEOUT_SECONDS: "10",
      FOREMAN_MAX_CONNECTIONS_PER_ADDRESS: "0",
    });
    alice = await signIn(t, provider, `alice-${randomUUID().slice(0, 6)}`);
    bob = await signIn(t, provider, `bob-${randomUUID().slice(0, 6)}`);
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await provider?.close();
    await remote?.close();
  });

  const cloneOf = (repositoryId: string) => cloneDir(t.config.dataDir, repositoryId);

  /** A group of new repositories on the remote (each holding files), added by the user. */
  async function groupOf(user: Caller, ...contents: Record<string, string>[]) {
    const ws = await user.workspace();
    const repositories = [];
    for (const files of contents) {
      const name = `d-${randomUUID().slice(0, 8)}`;
      const url = await remote.createRepository(name, { defaultBranch: "main", files });
      repositories.push(await user.repository(ws.id, url, { name }));
    }
    const group = await user.group(ws.id, repositories.map((r) => r.id), contents.length > 1 ? `g-${randomUUID().slice(0, 8)}` : undefined);
    return { repositories, group };
  }

  async function newTask(user: Caller, groupId: string): Promise<UnitTask> {
    const { unitTask } = await user.client(TaskService).createUnitTask({ repositoryGroupId: groupId, prompt: "Tidy the files up" });
    expect(unitTask?.baseCommit, "the task's base commit").toMatch(/^[0-9a-f]{40}$/);
    return unitTask!;
  }

  const diffOf = (user: Caller, id: string, more: { agentTaskId?: string; pageSize?: number; pageToken?: string } = {}) =>
    user.client(TaskService).getTaskDiff({ id, ...more });

  /** Every page of a diff, following next_page_token until it is empty. */
  async function allPages(user: Caller, id: string, more: { agentTaskId?: string; pageSize?: number } = {}): Promise<GetTaskDiffResponse[]> {
    const pages: GetTaskDiffResponse[] = [];
    let pageToken = "";
    do {
      const page = await diffOf(user, id, { ...more, pageToken });
      pages.push(page);
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && pages.length < 100);
    return pages;
  }

  it(
    "shows the whole task's and each run's changes: statuses, line stats, a rename, a binary file named only, the head it read",
    { timeout: 120_000 },
    async () => {
      // A user of its own: its worker claims only this test's runs.
      const owner = await signIn(t, provider, `runner-${randomUUID().slice(0, 6)}`);
      const { repositories, group } = await groupOf(owner, { "keep.txt": "one\ntwo\n", "gone.txt": "bye\n", "old-name.txt": SIX_LINES });
      const repo = repositories[0]!;
      const task = await newTask(owner, group.id);
      const clone = cloneOf(repo.id);
      const base = task.baseCommit;
      expect(base).toBe((await remote.refs(repo.name))["refs/heads/main"]);

      // Nothing done yet: an empty diff at the branch's head, which is the base.
      const empty = await diffOf(owner, task.id);
      expect(empty).toMatchObject({ baseCommit: base, headCommit: base, headSource: DiffHeadSource.BRANCH_HEAD, files: [], unifiedDiff: "", totalFiles: 0, nextPageToken: "", truncated: false });
      expect(empty.repositories.map((r) => [r.repositoryId, r.name, r.branchName, r.baseBranch])).toEqual([[repo.id, repo.name, task.branchName, "main"]]);

      const worker = await fx.newWorker(owner);
      const first = await fx.claim(worker);
      expect(first.taskId).toBe(task.id);
      await fx.report(worker, first, SessionState.RUNNING);
      const binary = Buffer.from([0, 1, 2, 0, 255, 0, 137, 80, 78, 71]);
      const c1 = await commitInClone(clone, task.branchName, {
        "keep.txt": "one\nTWO\nthree\n",
        "gone.txt": null,
        "old-name.txt": null,
        "new-name.txt": SIX_LINES,
        "image.bin": binary,
        "added.txt": "new\n",
      });

      // While the run runs: the branch's head.
      const running = await diffOf(owner, task.id);
      expect(running).toMatchObject({ baseCommit: base, headCommit: c1, headSource: DiffHeadSource.BRANCH_HEAD, totalFiles: 5, truncated: false, nextPageToken: "" });
      expect(running.files.map((f) => [f.path, f.oldPath, f.status, f.additions, f.deletions, f.binary, f.cut])).toEqual([
        ["added.txt", "", FileStatus.ADDED, 1, 0, false, false],
        ["gone.txt", "", FileStatus.DELETED, 0, 1, false, false],
        ["image.bin", "", FileStatus.ADDED, 0, 0, true, false],
        ["keep.txt", "", FileStatus.MODIFIED, 2, 1, false, false],
        ["new-name.txt", "old-name.txt", FileStatus.RENAMED, 0, 0, false, false],
      ]);
      expect(running.unifiedDiff).toContain("diff --git a/keep.txt b/keep.txt");
      expect(running.unifiedDiff).toContain("+TWO");
      expect(running.unifiedDiff).toContain("-two");
      expect(running.unifiedDiff).toContain("deleted file mode");
      expect(running.unifiedDiff).toContain("rename from old-name.txt");
      expect(running.unifiedDiff).toContain("rename to new-name.txt");
      expect(running.unifiedDiff).toContain("Binary file image.bin differs (not shown)");
      expect(running.unifiedDiff).not.toContain("\u0000");
      expect(running.unifiedDiff).not.toContain("PNG");
      // One repository: the top-level fields are its own.
      expect(running.repositories).toHaveLength(1);
      expect(running.repositories[0]).toMatchObject({ baseCommit: base, headCommit: c1, files: running.files, unifiedDiff: running.unifiedDiff, totalFiles: 5 });

      // The run succeeds: its end commit is recorded, and the diffs read it.
      await fx.report(worker, first, SessionState.SUCCEEDED);
      const reviewed = await fx.getUnit(owner, task.id);
      expect(reviewed.status).toBe(TaskStatus.IN_REVIEW);
      expect(reviewed.endCommit).toBe(c1);
      const run1 = reviewed.agentTasks[0]!.id;
      const whole = await diffOf(owner, task.id);
      expect(whole).toMatchObject({ baseCommit: base, headCommit: c1, headSource: DiffHeadSource.END_COMMIT, unifiedDiff: running.unifiedDiff });
      const one = await diffOf(owner, task.id, { agentTaskId: run1 });
      expect(one).toMatchObject({ baseCommit: base, headCommit: c1, headSource: DiffHeadSource.END_COMMIT, files: whole.files });

      // A second run (RequestChanges) on the same branch: its diff starts where the first ended.
      await owner.client(TaskService).requestChanges({ id: task.id, feedback: "Say more in added.txt" });
      const second = await fx.claim(worker);
      expect(second.agentTaskId).not.toBe(run1);
      await fx.report(worker, second, SessionState.RUNNING);
      const c2 = await commitInClone(clone, task.branchName, { "added.txt": "new\nand more\n" });

      const run2 = await diffOf(owner, task.id, { agentTaskId: second.agentTaskId });
      expect(run2).toMatchObject({ baseCommit: c1, headCommit: c2, headSource: DiffHeadSource.BRANCH_HEAD, totalFiles: 1 });
      expect(run2.files.map((f) => [f.path, f.status, f.additions, f.deletions])).toEqual([["added.txt", FileStatus.MODIFIED, 1, 0]]);
      expect(run2.unifiedDiff).toContain("+and more");
      // The first run's diff is as it was; the whole task's runs from the first base to the new head.
      expect(await diffOf(owner, task.id, { agentTaskId: run1 })).toMatchObject({ baseCommit: base, headCommit: c1, headSource: DiffHeadSource.END_COMMIT, totalFiles: 5 });
      const both = await diffOf(owner, task.id);
      expect(both).toMatchObject({ baseCommit: base, headCommit: c2, headSource: DiffHeadSource.BRANCH_HEAD, totalFiles: 5 });
      expect(both.files.find((f) => f.path === "added.txt")).toMatchObject({ status: FileStatus.ADDED, additions: 2 });

      // A run that recorded no end commit (here: taken away), followed by another: it ends where the next began.
      await t.server.db.kysely.updateTable("agent_task_base_remotes").set({ end_commit: null }).where("agent_task_id", "=", run1).execute();
      expect(await diffOf(owner, task.id, { agentTaskId: run1 })).toMatchObject({ baseCommit: base, headCommit: c1, headSource: DiffHeadSource.NEXT_RUN_BASE, totalFiles: 5 });

      await fx.report(worker, second, SessionState.SUCCEEDED);
      expect(await diffOf(owner, task.id)).toMatchObject({ headCommit: c2, headSource: DiffHeadSource.END_COMMIT });
      expect(await diffOf(owner, task.id, { agentTaskId: second.agentTaskId })).toMatchObject({ baseCommit: c1, headCommit: c2, headSource: DiffHeadSource.END_COMMIT });

      // Another user's task, or a run of no task of the caller's: NotFound.
      await expectError(diffOf(bob, task.id), { code: Code.NotFound, message: `task ${task.id} not found` });
      await expectError(diffOf(bob, task.id, { agentTaskId: run1 }), { code: Code.NotFound });
      const stranger = randomUUID();
      await expectError(diffOf(owner, task.id, { agentTaskId: stranger }), { code: Code.NotFound, message: `agent task ${stranger} of task ${task.id} not found` });
      await expectError(diffOf(owner, task.id, { agentTaskId: "nope" }), { code: Code.InvalidArgument, message: "agent_task_id: must be a UUID" });
    },
  );

  it("pages a diff of more files than a page with next_page_token until done; a token it did not issue is InvalidArgument", { timeout: 60_000 }, async () => {
    const { repositories, group } = await groupOf(alice, { "README.md": "hello\n" });
    const task = await newTask(alice, group.id);
    const files: Record<string, string> = {};
    for (let i = 0; i < 7; i++) files[`src/f${i}.txt`] = `file ${i}\n`;
    await commitInClone(cloneOf(repositories[0]!.id), task.branchName, files);

    const pages = await allPages(alice, task.id, { pageSize: 3 });
    expect(pages.map((p) => p.files.length)).toEqual([3, 3, 1]);
    expect(pages.flatMap((p) => p.files.map((f) => f.path))).toEqual(Object.keys(files));
    expect(pages.every((p) => p.totalFiles === 7)).toBe(true);
    expect(pages[1]!.unifiedDiff).toContain("+file 3");
    expect(pages[1]!.unifiedDiff).not.toContain("+file 2");
    // The default page holds them all.
    expect((await diffOf(alice, task.id)).files).toHaveLength(7);

    await expectError(diffOf(alice, task.id, { pageToken: "not-a-token" }), { code: Code.InvalidArgument, message: "page_token: is not a page token this server issued" });
    await expectError(diffOf(alice, task.id, { pageSize: -1 }), { code: Code.InvalidArgument, message: "page_size: must not be negative" });
    // Another task's token, and a token issued before the branch moved on, are refused too.
    const { group: other } = await groupOf(alice, { "README.md": "hello\n" });
    const otherTask = await newTask(alice, other.id);
    await expectError(diffOf(alice, otherTask.id, { pageToken: pages[0]!.nextPageToken }), { code: Code.InvalidArgument, message: "page_token: belongs to another diff" });
    await commitInClone(cloneOf(repositories[0]!.id), task.branchName, { "src/f9.txt": "late\n" });
    await expectError(diffOf(alice, task.id, { pageToken: pages[0]!.nextPageToken, pageSize: 3 }), { code: Code.InvalidArgument, message: "a branch moved on" });
  });

  it("cuts a file's patch at the server's limit with the marker and says so; a page ends before its patches pass the answer's limit", { timeout: 60_000 }, async () => {
    const { repositories, group } = await groupOf(alice, { "README.md": "hello\n" });
    const task = await newTask(alice, group.id);
    const line = `${"x".repeat(99)}\n`;
    const files: Record<string, string> = { "big.txt": line.repeat(Math.ceil((MAX_FILE_BYTES * 1.5) / 100)), "small.txt": "small\n" };
    // Six files of about a fifth of the answer's limit each: not all on one page.
    for (let i = 0; i < 6; i++) files[`part-${i}.txt`] = line.repeat(Math.floor(MAX_ANSWER_BYTES / 5 / 101));
    await commitInClone(cloneOf(repositories[0]!.id), task.branchName, files);

    const pages = await allPages(alice, task.id);
    expect(pages.length).toBeGreaterThan(1);
    for (const page of pages) {
      expect(page.files.length).toBeGreaterThan(0);
      expect(Buffer.byteLength(page.unifiedDiff)).toBeLessThanOrEqual(MAX_ANSWER_BYTES);
    }
    const all = pages.flatMap((p) => p.files);
    expect(all.map((f) => f.path)).toEqual(Object.keys(files).sort());
    const big = pages.find((p) => p.files.some((f) => f.path === "big.txt"))!;
    expect(big.truncated).toBe(true);
    expect(big.files.find((f) => f.path === "big.txt")).toMatchObject({ cut: true, additions: Math.ceil((MAX_FILE_BYTES * 1.5) / 100) });
    expect(big.unifiedDiff).toContain(CUT_MARKER);
    expect(Buffer.byteLength(big.unifiedDiff)).toBeLessThan(MAX_FILE_BYTES + MAX_ANSWER_BYTES);
    // No other file is cut, and a page without big.txt is whole.
    expect(all.filter((f) => f.cut).map((f) => f.path)).toEqual(["big.txt"]);
    for (const page of pages.filter((p) => p !== big)) {
      expect(page.truncated).toBe(false);
      expect(page.unifiedDiff).not.toContain(CUT_MARKER);
    }
  });

  it("shows each repository of a task of two, in the order they were added, paged across both", { timeout: 60_000 }, async () => {
    const { repositories, group } = await groupOf(alice, { "a.txt": "a\n" }, { "b.txt": "b\n" });
    const task = await newTask(alice, group.id);
    const [r1, r2] = [...repositories].sort((x, y) => (x.id < y.id ? -1 : 1));
    const h1 = await commitInClone(cloneOf(r1!.id), task.branchName, { "a.txt": "a\nA\n", "one.txt": "1\n" });
    const h2 = await commitInClone(cloneOf(r2!.id), task.branchName, { "b.txt": null, "two.txt": "2\n" });

    const diff = await diffOf(alice, task.id);
    expect(diff.totalFiles).toBe(4);
    expect(diff.repositories.map((r) => [r.repositoryId, r.name, r.branchName, r.headCommit, r.headSource, r.totalFiles])).toEqual([
      [r1!.id, r1!.name, task.branchName, h1, DiffHeadSource.BRANCH_HEAD, 2],
      [r2!.id, r2!.name, task.branchName, h2, DiffHeadSource.BRANCH_HEAD, 2],
    ]);
    expect(diff.repositories[0]!.files.map((f) => [f.path, f.status])).toEqual([
      ["a.txt", FileStatus.MODIFIED],
      ["one.txt", FileStatus.ADDED],
    ]);
    expect(diff.repositories[1]!.files.map((f) => [f.path, f.status])).toEqual([
      ["b.txt", FileStatus.DELETED],
      ["two.txt", FileStatus.ADDED],
    ]);
    expect(diff.repositories[1]!.unifiedDiff).toContain("+2");
    expect(diff.repositories[0]!.unifiedDiff).not.toContain("two.txt");
    // The top level is the first repository's, which is the task's own base commit.
    expect(diff).toMatchObject({ baseCommit: task.baseCommit, headCommit: h1, files: diff.repositories[0]!.files, unifiedDiff: diff.repositories[0]!.unifiedDiff });

    // Pages of three: the first ends in the second repository; every page names both.
    const pages = await allPages(alice, task.id, { pageSize: 3 });
    expect(pages.map((p) => p.repositories.map((r) => r.files.map((f) => f.path)))).toEqual([
      [["a.txt", "one.txt"], ["b.txt"]],
      [[], ["two.txt"]],
    ]);
    expect(pages[1]!.files).toEqual([]);
    expect(pages[1]!.headCommit).toBe(h1);
  });
});

describe.each(DIALECTS)("GetTaskDiff without remote contact on %s", (dialect) => {
  let t: TestServer;
  let c: Caller;

  beforeAll(async () => {
    t = await startTestServer(dialect);
    c = caller(t);
  }, 60_000);

  afterAll(async () => {
    await t?.close();
  });

  it("is FailedPrecondition for a task with no base commit recorded, and for a composite task", async () => {
    const { group } = await c.groupOfOne();
    const tasks = c.client(TaskService);
    const { unitTask } = await tasks.createUnitTask({ repositoryGroupId: group.id, prompt: "No clone here" });
    expect(unitTask?.baseCommit).toBe("");
    await expectError(tasks.getTaskDiff({ id: unitTask!.id }), { code: Code.FailedPrecondition, message: "no base commit was recorded" });
    await expectError(tasks.getTaskDiff({ id: unitTask!.id, agentTaskId: unitTask!.agentTasks[0]!.id }), { code: Code.FailedPrecondition, message: "no base commit was recorded" });
    const { compositeTask } = await tasks.createCompositeTask({ repositoryGroupId: group.id, prompt: "Plan it" });
    await expectError(tasks.getTaskDiff({ id: compositeTask!.id }), { code: Code.FailedPrecondition, message: "is a composite task" });
    await expectError(tasks.getTaskDiff({ id: randomUUID() }), { code: Code.NotFound });
  });
});
