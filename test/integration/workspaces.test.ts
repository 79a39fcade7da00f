// Task branches and workspaces (issue 18), through the real server in process with remotes
// contacted, against a real git remote (test/helpers/git-remote.ts), on both databases: a task
// gets its branch in the server's clone at creation; a worker fetches it from the server's own
// port with its lease token (the git command, and isomorphic-git as the worker daemon will),
// pushes its commits back, and only a fast-forward of its own branch, while it holds the lease;
// its success report records where the branch ended.
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { toJsonString } from "@bufbuild/protobuf";
import { Code, type Client } from "@connectrpc/connect";
import * as isogit from "isomorphic-git";
import isoHttp from "isomorphic-git/http/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentType, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { TaskService, type UnitTask } from "../../gen/foreman/v1/task_pb.js";
import { AssignmentSchema, WorkerService, type Assignment } from "../../gen/foreman/v1/worker_pb.js";
import { NO_CHANGES } from "../../src/core/dispatch.js";
import { cloneDir } from "../../src/core/paths.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";
import { caller, registerWorker, type Caller } from "../helpers/fixtures.js";
import { git, startGitRemote, writeFiles, type GitRemote } from "../helpers/git-remote.js";
import { clientWith } from "../helpers/oidc.js";
import { expectError } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { unit } from "../helpers/dispatch.js";

describe.each(DIALECTS)("task branches and workspaces on %s", (dialect) => {
  let t: TestServer;
  let c: Caller;
  let remote: GitRemote;
  let worker: Client<typeof WorkerService>;
  let tmp: string;
  const logLines: string[] = [];

  beforeAll(async () => {
    remote = await startGitRemote();
    t = await startTestServer(dialect, { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_REMOTE_TIMEOUT_SECONDS: "5" }, undefined, { logLines });
    c = caller(t);
    const { secret } = await c.registrationToken();
    const registered = await registerWorker(t, secret, { agentTypes: [AgentType.CLAUDE_CODE], maxConcurrentSessions: 10 });
    worker = clientWith(t, WorkerService, registered.workerToken);
    tmp = await mkdtemp(path.join(os.tmpdir(), "foreman-workspaces-"));
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await remote?.close();
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  });

  const tasks = () => c.client(TaskService);
  const serverGitDir = (repositoryId: string) => path.join(cloneDir(t.config.dataDir, repositoryId), ".git");
  const serverRef = (repositoryId: string, ref: string) => git(["--git-dir", serverGitDir(repositoryId), "rev-parse", "--verify", "--quiet", ref]).catch(() => undefined);
  const getUnit = async (id: string): Promise<UnitTask> => unit((await tasks().getTask({ id })).task);

  /** A new repository on the remote (files given), added to a new workspace with a group of just it. */
  async function project(files: Record<string, string> = { "README.md": "# project\n", "src/app.ts": "export const x = 1;\n" }) {
    const name = `w-${randomUUID().slice(0, 8)}`;
    const url = await remote.createRepository(name, { defaultBranch: "main", files });
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url);
    const group = await c.group(ws, [repo.id]);
    return { name, url, ws, repo, group };
  }

  async function claim(): Promise<Assignment> {
    const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 5 });
    expect(assignment, "an assignment").toBeDefined();
    return assignment!;
  }

  /**
   * The git command's environment that sends the lease token with each request (git
   * configuration from the environment: nothing is written to the workspace, and no error
   * message quotes it as it would a command-line option).
   */
  const auth = (token: string) => ({ GIT_CONFIG_COUNT: "1", GIT_CONFIG_KEY_0: "http.extraHeader", GIT_CONFIG_VALUE_0: `Authorization: Bearer ${token}` });
  const gitAs = (token: string, args: string[]) => git(args, { env: auth(token) });
  const cloneUrl = (a: Assignment, i = 0) => new URL(a.repositories[i]!.cloneUrl, t.url).toString();

  async function workspace(a: Assignment, i = 0): Promise<string> {
    const dir = await mkdtemp(path.join(tmp, "ws-"));
    const r = a.repositories[i]!;
    await gitAs(a.lease!.leaseToken, ["clone", "--quiet", "--branch", r.branchName, "--single-branch", cloneUrl(a, i), dir]);
    return dir;
  }

  async function commitAll(dir: string, files: Record<string, string>, message: string): Promise<string> {
    await writeFiles(dir, files);
    await git(["-C", dir, "add", "-A"]);
    await git(["-C", dir, "commit", "--quiet", "-m", message]);
    return git(["-C", dir, "rev-parse", "HEAD"]);
  }

  const push = (a: Assignment, dir: string, refspec: string, token = a.lease!.leaseToken) => gitAs(token, ["-C", dir, "push", "origin", refspec]);

  const report = (a: Assignment, state: SessionState, headCommit = "") =>
    worker.reportStatus({ sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken, state, errorMessage: "", headCommit });

  it("gives a task its branch at the base branch's head and records the base commit", { timeout: 60_000 }, async () => {
    const p = await project();
    const main = (await remote.refs(p.name))["refs/heads/main"]!;
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Add a health check\nand test it" });
    const u = unitTask!;
    expect(u.branchName).toBe(`foreman/add-a-health-check-${u.id.replace(/-/g, "").slice(-8)}`);
    expect(u.baseCommit).toBe(main);
    expect(u.endCommit).toBe("");
    expect(await serverRef(p.repo.id, `refs/heads/${u.branchName}`)).toBe(main);
    // The upstream remote never sees a task branch before approval.
    expect(Object.keys(await remote.refs(p.name)).filter((r) => r.startsWith("refs/heads/foreman/"))).toEqual([]);

    const a = await claim();
    expect(a.taskId).toBe(u.id);
    expect(a.repositories).toHaveLength(1);
    expect(a.repositories[0]).toMatchObject({
      repositoryId: p.repo.id,
      branchName: u.branchName,
      baseBranch: "main",
      baseCommit: main,
      cloneUrl: `/git/sessions/${a.lease!.sessionId}/${p.repo.id}.git`,
    });
    await report(a, SessionState.CANCELLED);
  });

  it("refuses a branch name in use, here or upstream, and a base branch the remote lacks, making nothing", { timeout: 60_000 }, async () => {
    const p = await project();
    await remote.commit(p.name, { branch: "feature", from: "main", files: { "f.txt": "f\n" } });
    const first = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "One", branchName: "work/one" });
    expect(first.unitTask!.branchName).toBe("work/one");
    await expectError(tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Two", branchName: "work/one" }), {
      code: Code.AlreadyExists,
      message: /branch work\/one is in use by another task/,
    });
    await expectError(tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Three", branchName: "feature" }), {
      code: Code.AlreadyExists,
      message: /exists on the remote/,
    });
    await expectError(tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Four", baseBranch: "no-such" }), {
      code: Code.InvalidArgument,
      message: /has no branch no-such/,
    });
    const based = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Five", baseBranch: "feature" });
    expect(based.unitTask!.baseCommit).toBe((await remote.refs(p.name))["refs/heads/feature"]);
    const { tasks: listed } = await tasks().listTasks({ workspaceId: p.ws });
    expect(listed.map((x) => x.task.value?.title).sort()).toEqual(["Five", "One"]);

    // A deleted task's branch goes from the server's clone (upstream untouched), and its name is free again.
    await tasks().deleteTask({ id: first.unitTask!.id });
    expect(await serverRef(p.repo.id, "refs/heads/work/one")).toBeUndefined();
    const again = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "One again", branchName: "work/one" });
    expect(again.unitTask!.branchName).toBe("work/one");
    await tasks().deleteTask({ id: again.unitTask!.id });
    await tasks().deleteTask({ id: based.unitTask!.id });
  });

  it("hands the worker its workspace, takes its commits back, and records where the branch ended", { timeout: 90_000 }, async () => {
    const p = await project();
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Add a health check" });
    const u = unitTask!;
    const a = await claim();
    await report(a, SessionState.RUNNING);

    const dir = await workspace(a);
    expect(await readFile(path.join(dir, "src/app.ts"), "utf8")).toBe("export const x = 1;\n");
    expect(await git(["-C", dir, "rev-parse", "HEAD"])).toBe(u.baseCommit);
    // The worker sees its branch and nothing else of the server's clone.
    const advertised = await gitAs(a.lease!.leaseToken, ["ls-remote", cloneUrl(a)]);
    expect(advertised.split("\n").map((l) => l.split("\t")[1])).toEqual([`refs/heads/${u.branchName}`]);
    // Nothing of the lease reaches the workspace.
    expect(await readFile(path.join(dir, ".git", "config"), "utf8")).not.toContain(a.lease!.leaseToken);

    const head = await commitAll(dir, { "src/health.ts": "export const ok = true;\n" }, "Add a health check");
    await push(a, dir, `HEAD:refs/heads/${u.branchName}`);
    expect(await serverRef(p.repo.id, `refs/heads/${u.branchName}`)).toBe(head);

    // A report naming a commit the server does not hold on the branch is refused and changes nothing.
    await expectError(report(a, SessionState.SUCCEEDED, "0123456789abcdef0123456789abcdef01234567"), {
      code: Code.FailedPrecondition,
      message: /is not the head of the task's branch on the server.*push the branch/,
    });
    expect((await getUnit(u.id)).status).toBe(TaskStatus.IN_PROGRESS);

    await report(a, SessionState.SUCCEEDED, head.slice(0, 12));
    const done = await getUnit(u.id);
    expect(done.status).toBe(TaskStatus.IN_REVIEW);
    expect(done.endCommit).toBe(head);
    expect(done.baseCommit).toBe(u.baseCommit);
    expect(done.statusReason).toBe("");
    expect(done.agentTasks[0]!.sessions[0]!.state).toBe(SessionState.SUCCEEDED);

    // The lease ended with the run: the workspace is closed to the token.
    await expect(gitAs(a.lease!.leaseToken, ["ls-remote", cloneUrl(a)])).rejects.toThrow(/403/);

    // RequestChanges: the next run starts where this one ended, on the same branch, and a
    // fetch into the workspace brings only what is new.
    await tasks().requestChanges({ id: u.id, feedback: "Also export a version" });
    const b = await claim();
    expect(b.repositories[0]).toMatchObject({ branchName: u.branchName, baseCommit: head });
    const next = await commitAll(dir, { "src/version.ts": "export const version = 1;\n" }, "Export a version");
    await gitAs(b.lease!.leaseToken, ["-C", dir, "fetch", "--quiet", cloneUrl(b), u.branchName]);
    await gitAs(b.lease!.leaseToken, ["-C", dir, "push", "--quiet", cloneUrl(b), `HEAD:refs/heads/${u.branchName}`]);
    await report(b, SessionState.SUCCEEDED);
    const second = await getUnit(u.id);
    expect(second.status).toBe(TaskStatus.IN_REVIEW);
    expect(second.endCommit).toBe(next);
    expect(second.agentTasks).toHaveLength(2);

    // The reviewer reads both runs' work, approves, and the upstream has the commits.
    const diff = await tasks().getTaskDiff({ id: u.id });
    expect(diff.baseCommit).toBe(u.baseCommit);
    expect(diff.headCommit).toBe(next);
    expect(diff.files.map((f) => f.path)).toEqual(["src/health.ts", "src/version.ts"]);
    await tasks().approveTask({ id: u.id });
    expect((await getUnit(u.id)).status).toBe(TaskStatus.APPROVED);
    expect((await remote.refs(p.name))[`refs/heads/${u.branchName}`]).toBe(next);
  });

  it("hands the worker no upstream credential: not in its workspace, not in what it is served", { timeout: 60_000 }, async () => {
    const locked = await startGitRemote({ auth: { username: "robot", password: `pw-${randomUUID()}` } });
    try {
      const name = `s-${randomUUID().slice(0, 8)}`;
      const url = await locked.createRepository(name, { defaultBranch: "main" });
      const ws = (await c.workspace()).id;
      const repo = await c.repository(ws, url, {
        upstreamCredentials: { kind: { case: "usernamePassword", value: { username: "robot", password: locked.auth!.password } } },
      });
      const group = await c.group(ws, [repo.id]);
      await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Private work" });
      const a = await claim();
      expect(toJsonString(AssignmentSchema, a)).not.toContain(locked.auth!.password);
      const dir = await workspace(a);
      const secrets = [locked.auth!.password, Buffer.from(`robot:${locked.auth!.password}`).toString("base64")];
      for (const file of [".git/config", ".git/FETCH_HEAD", ".git/packed-refs"]) {
        const text = await readFile(path.join(dir, file), "utf8").catch(() => "");
        for (const secret of secrets) expect(text, file).not.toContain(secret);
      }
      // The workspace's remote is the server's route, never the upstream.
      expect(await git(["-C", dir, "remote", "get-url", "origin"])).toBe(cloneUrl(a));
      await report(a, SessionState.CANCELLED);
    } finally {
      await locked.close();
    }
  });

  it("fetches and pushes with isomorphic-git, the lease token as basic auth's password", { timeout: 60_000 }, async () => {
    const p = await project();
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "From isomorphic-git" });
    const u = unitTask!;
    const a = await claim();
    const dir = await mkdtemp(path.join(tmp, "iso-"));
    const onAuth = () => ({ username: "worker", password: a.lease!.leaseToken });
    await isogit.clone({ fs, http: isoHttp, dir, url: cloneUrl(a), ref: u.branchName, singleBranch: true, noTags: true, onAuth });
    expect(await readFile(path.join(dir, "README.md"), "utf8")).toBe("# project\n");
    await fs.promises.writeFile(path.join(dir, "iso.txt"), "iso\n");
    await isogit.add({ fs, dir, filepath: "iso.txt" });
    const head = await isogit.commit({ fs, dir, message: "From isomorphic-git", author: { name: "Worker", email: "worker@example.com" } });
    const pushed = await isogit.push({ fs, http: isoHttp, dir, url: cloneUrl(a), ref: u.branchName, remoteRef: u.branchName, onAuth });
    expect(pushed.ok).toBe(true);
    expect(await serverRef(p.repo.id, `refs/heads/${u.branchName}`)).toBe(head);
    expect(await readFile(path.join(dir, ".git", "config"), "utf8")).not.toContain(a.lease!.leaseToken);
    await report(a, SessionState.SUCCEEDED, head);
    expect((await getUnit(u.id)).endCommit).toBe(head);
  });

  it("refuses a push to another branch, one that is not a fast-forward, and a deletion", { timeout: 60_000 }, async () => {
    const p = await project();
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Stay on your branch" });
    const u = unitTask!;
    const a = await claim();
    const dir = await workspace(a);
    const head = await commitAll(dir, { "a.txt": "a\n" }, "A");
    await push(a, dir, `HEAD:refs/heads/${u.branchName}`);

    await expect(push(a, dir, "HEAD:refs/heads/main")).rejects.toThrow(/hidden ref/);
    await expect(push(a, dir, "HEAD:refs/heads/another")).rejects.toThrow(/hidden ref/);
    // A rewritten history (a force push) is not a fast-forward of the branch.
    await git(["-C", dir, "commit", "--quiet", "--amend", "-m", "A, rewritten"]);
    await expect(push(a, dir, `+HEAD:refs/heads/${u.branchName}`)).rejects.toThrow(/non-fast-forward|denying non-fast-forward/);
    await expect(push(a, dir, `:refs/heads/${u.branchName}`)).rejects.toThrow(/deletion|denying/);
    expect(await serverRef(p.repo.id, `refs/heads/${u.branchName}`)).toBe(head);
    expect(await serverRef(p.repo.id, "refs/heads/another")).toBeUndefined();
    expect(await serverRef(p.repo.id, "refs/heads/main")).toBe(u.baseCommit);
    await report(a, SessionState.CANCELLED);
  });

  it("serves no one without the live lease, and nothing but git's smart protocol", { timeout: 60_000 }, async () => {
    const p = await project();
    await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Keep out" });
    const a = await claim();
    const url = cloneUrl(a);
    // No token: asked for one, as git's credential helpers expect.
    const bare = await fetch(`${url}/info/refs?service=git-upload-pack`);
    expect(bare.status).toBe(401);
    expect(bare.headers.get("www-authenticate")).toMatch(/^Basic /);
    // A wrong token, or the right one for another session's path, finds nothing.
    const wrong = await fetch(`${url}/info/refs?service=git-upload-pack`, { headers: { authorization: "Bearer lease_not-this-one" } });
    expect(wrong.status).toBe(404);
    const other = `${t.url}/git/sessions/${randomUUID()}/${p.repo.id}.git/info/refs?service=git-upload-pack`;
    expect((await fetch(other, { headers: { authorization: `Bearer ${a.lease!.leaseToken}` } })).status).toBe(404);
    const otherRepo = `${t.url}/git/sessions/${a.lease!.sessionId}/${randomUUID()}.git/info/refs?service=git-upload-pack`;
    expect((await fetch(otherRepo, { headers: { authorization: `Bearer ${a.lease!.leaseToken}` } })).status).toBe(404);
    // git's dumb protocol (files of the repository) is not served, even with the lease.
    for (const file of ["HEAD", "info/refs", "objects/info/packs", "config"]) {
      const res = await fetch(`${url}/${file}`, { headers: { authorization: `Bearer ${a.lease!.leaseToken}` } });
      expect(res.status, file).toBe(404);
    }
    const good = await fetch(`${url}/info/refs?service=git-upload-pack`, { headers: { authorization: `Bearer ${a.lease!.leaseToken}` } });
    expect(good.status).toBe(200);
    expect(good.headers.get("content-type")).toBe("application/x-git-upload-pack-advertisement");
    await good.arrayBuffer();

    // A worker whose run was taken from it (cancelled here) can no longer fetch or push.
    const dir = await workspace(a);
    const id = a.taskId;
    await tasks().updateTaskStatus({ id, status: TaskStatus.CANCELLED });
    await commitAll(dir, { "late.txt": "late\n" }, "Too late");
    await expect(push(a, dir, `HEAD:refs/heads/${a.repositories[0]!.branchName}`)).rejects.toThrow(/no worker holds it now \(it is cancelled\)/);
    expect(await serverRef(p.repo.id, `refs/heads/${a.repositories[0]!.branchName}`)).toBe(a.repositories[0]!.baseCommit);
    // No lease token reached a log line.
    expect(logLines.join("\n")).not.toContain(a.lease!.leaseToken);
  });

  it("ends a run that made no commits in review, saying the diff is empty", { timeout: 60_000 }, async () => {
    const p = await project();
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Change nothing" });
    const a = await claim();
    await report(a, SessionState.SUCCEEDED);
    const done = await getUnit(unitTask!.id);
    expect(done.status).toBe(TaskStatus.IN_REVIEW);
    expect(done.statusReason).toBe(NO_CHANGES);
    expect(done.endCommit).toBe(unitTask!.baseCommit);
  });

  it("gives each repository of a group its branch and workspace", { timeout: 90_000 }, async () => {
    const one = await project({ "one.txt": "1\n" });
    const twoName = `w-${randomUUID().slice(0, 8)}`;
    const twoUrl = await remote.createRepository(twoName, { defaultBranch: "develop", files: { "two.txt": "2\n" } });
    const two = await c.repository(one.ws, twoUrl);
    const group = await c.group(one.ws, [one.repo.id, two.id], "both");
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Touch both" });
    const u = unitTask!;
    const a = await claim();
    expect(a.repositories.map((r) => [r.repositoryId, r.baseBranch, r.branchName]).sort()).toEqual(
      [
        [one.repo.id, "main", u.branchName],
        [two.id, "develop", u.branchName],
      ].sort(),
    );
    const heads = new Map<string, string>();
    for (let i = 0; i < a.repositories.length; i++) {
      const dir = await workspace(a, i);
      const r = a.repositories[i]!;
      heads.set(r.repositoryId, await commitAll(dir, { [`${r.name}.changed`]: "yes\n" }, `Change ${r.name}`));
      await push(a, dir, `HEAD:refs/heads/${u.branchName}`);
    }
    await report(a, SessionState.SUCCEEDED);
    for (const [repositoryId, head] of heads) expect(await serverRef(repositoryId, `refs/heads/${u.branchName}`)).toBe(head);
    // The task's own end commit is its first repository's (the one added first).
    expect((await getUnit(u.id)).endCommit).toBe(heads.get([one.repo.id, two.id].sort()[0]!));
  });
});

// Two replicas on one PostgreSQL, each with its own data folder (so its own clones): a worker's
// push taken by one is what the other serves, diffs, reports on and builds on.
describe.skipIf(!DIALECTS.includes("postgres"))("task branches across replicas", () => {
  let remote: GitRemote;
  let database: TestDatabase;
  let a: TestServer;
  let b: TestServer;
  let tmp: string;

  beforeAll(async () => {
    remote = await startGitRemote();
    database = await createTestDatabase("postgres");
    tmp = await mkdtemp(path.join(os.tmpdir(), "foreman-replicas-"));
    const env = { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_REMOTE_TIMEOUT_SECONDS: "5", FOREMAN_SECRET_KEY: randomBytes(32).toString("base64") };
    a = await startTestServer("postgres", { ...env, FOREMAN_DATA_DIR: path.join(tmp, "a") }, database);
    b = await startTestServer("postgres", { ...env, FOREMAN_DATA_DIR: path.join(tmp, "b") }, database);
  }, 60_000);

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await database?.drop();
    await remote?.close();
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  });

  const auth = (token: string) => ({ GIT_CONFIG_COUNT: "1", GIT_CONFIG_KEY_0: "http.extraHeader", GIT_CONFIG_VALUE_0: `Authorization: Bearer ${token}` });
  const refOn = (s: TestServer, repositoryId: string, ref: string) =>
    git(["--git-dir", path.join(cloneDir(s.config.dataDir, repositoryId), ".git"), "rev-parse", "--verify", "--quiet", ref]).catch(() => undefined);

  it("serves, diffs and continues a branch pushed to the other replica", { timeout: 120_000 }, async () => {
    const ca = caller(a);
    const name = `r-${randomUUID().slice(0, 8)}`;
    const url = await remote.createRepository(name, { defaultBranch: "main", files: { "app.txt": "one\n" } });
    const ws = (await ca.workspace()).id;
    const repo = await ca.repository(ws, url);
    const group = await ca.group(ws, [repo.id]);
    const { unitTask } = await ca.client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "Across replicas" });
    const u = unitTask!;
    // B has never cloned this repository.
    expect(await refOn(b, repo.id, "HEAD")).toBeUndefined();

    const { secret } = await ca.registrationToken();
    const registered = await registerWorker(a, secret, { agentTypes: [AgentType.CLAUDE_CODE] });
    const onA = clientWith(a, WorkerService, registered.workerToken);
    const onB = clientWith(b, WorkerService, registered.workerToken);
    const first = (await onA.getTask({ pollId: randomUUID(), waitSeconds: 5 })).assignment!;
    const token = first.lease!.leaseToken;
    const path0 = first.repositories[0]!.cloneUrl;

    // The workspace from B, which clones the repository and makes the branch as recorded; the push to B.
    const dir = await mkdtemp(path.join(tmp, "ws-"));
    await git(["clone", "--quiet", "--branch", u.branchName, "--single-branch", new URL(path0, b.url).toString(), dir], { env: auth(token) });
    expect(await git(["-C", dir, "rev-parse", "HEAD"])).toBe(u.baseCommit);
    await writeFiles(dir, { "app.txt": "two\n", "new.txt": "new\n" });
    await git(["-C", dir, "add", "-A"]);
    await git(["-C", dir, "commit", "--quiet", "-m", "Work on B"]);
    const head = await git(["-C", dir, "rev-parse", "HEAD"]);
    await git(["-C", dir, "push", "--quiet", "origin", `HEAD:refs/heads/${u.branchName}`], { env: auth(token) });
    expect(await refOn(a, repo.id, `refs/heads/${u.branchName}`)).toBe(u.baseCommit);

    // The report reaches A, which takes the branch from the record: the end commit is B's push.
    await onA.reportStatus({ sessionId: first.lease!.sessionId, leaseToken: token, state: SessionState.SUCCEEDED, errorMessage: "", headCommit: head });
    const done = unit((await ca.client(TaskService).getTask({ id: u.id })).task);
    expect(done.status).toBe(TaskStatus.IN_REVIEW);
    expect(done.endCommit).toBe(head);
    expect(await refOn(a, repo.id, `refs/heads/${u.branchName}`)).toBe(head);
    const diff = await ca.client(TaskService).getTaskDiff({ id: u.id });
    expect(diff.headCommit).toBe(head);
    expect(diff.repositories[0]!.files.map((f) => f.path)).toEqual(["app.txt", "new.txt"]);

    // The next run is served by A and builds on B's commit; B then serves A's push.
    await ca.client(TaskService).requestChanges({ id: u.id, feedback: "More" });
    const second = (await onB.getTask({ pollId: randomUUID(), waitSeconds: 5 })).assignment!;
    expect(second.repositories[0]!.baseCommit).toBe(head);
    const token2 = second.lease!.leaseToken;
    const onAUrl = new URL(second.repositories[0]!.cloneUrl, a.url).toString();
    await git(["-C", dir, "pull", "--quiet", "--ff-only", onAUrl, u.branchName], { env: auth(token2) });
    await writeFiles(dir, { "more.txt": "more\n" });
    await git(["-C", dir, "add", "-A"]);
    await git(["-C", dir, "commit", "--quiet", "-m", "Work on A"]);
    const next = await git(["-C", dir, "rev-parse", "HEAD"]);
    await git(["-C", dir, "push", "--quiet", onAUrl, `HEAD:refs/heads/${u.branchName}`], { env: auth(token2) });
    const fresh = await mkdtemp(path.join(tmp, "fresh-"));
    await git(["clone", "--quiet", "--branch", u.branchName, new URL(second.repositories[0]!.cloneUrl, b.url).toString(), fresh], { env: auth(token2) });
    expect(await git(["-C", fresh, "rev-parse", "HEAD"])).toBe(next);
    await onB.reportStatus({ sessionId: second.lease!.sessionId, leaseToken: token2, state: SessionState.SUCCEEDED, errorMessage: "", headCommit: "" });
    expect(unit((await caller(b).client(TaskService).getTask({ id: u.id })).task).endCommit).toBe(next);
  });
});
