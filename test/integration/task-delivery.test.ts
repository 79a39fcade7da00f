// ApproveTask delivers a task's work upstream (issue 18, "Review and delivery"; src/core/delivery.ts),
// through the real server in process (remotes contacted) against real git remotes
// (test/helpers/git-remote.ts), on both databases. A task's branch gets its commits in the
// server's clone (test/helpers/clone-commits.ts), and the task reaches review through the worker
// protocol (claim, RUNNING, SUCCEEDED). Then: the branch is pushed (and merged, squashed or
// rebased onto the base branch where the repository says so); a conflicting merge, a refused push
// and a remote that does not answer fail the approval, leave the task in review and upstream as it
// was, and a retry after the fix delivers; reject and delete push nothing; and the upstream
// credentials appear in no answer, no log line and not in the clone.
import { randomUUID } from "node:crypto";
import { chmod, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { Code, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { DeliveryMode, RepositoryService } from "../../gen/foreman/v1/repository_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { cloneDir } from "../../src/core/paths.js";
import { commitInClone } from "../helpers/clone-commits.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller, registerWorker, type Caller } from "../helpers/fixtures.js";
import { git, startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { clientWith } from "../helpers/oidc.js";
import { expectError, expectInvalid } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

describe.each(DIALECTS)("task delivery on %s", (dialect) => {
  let t: TestServer;
  let c: Caller;
  let pub: GitRemote;
  let priv: GitRemote;
  const logLines: string[] = [];
  /** Every answer and error message the recording clients read, as text. */
  const answers: string[] = [];
  let tasks: ReturnType<typeof createClient<typeof TaskService>>;
  let repos: ReturnType<typeof createClient<typeof RepositoryService>>;
  let worker: ReturnType<typeof clientWith<typeof WorkerService>>;

  beforeAll(async () => {
    pub = await startGitRemote();
    priv = await startGitRemote({ auth: { username: "robot", password: `pw-${randomUUID()}` } });
    t = await startTestServer(dialect, { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_REMOTE_TIMEOUT_SECONDS: "2" }, undefined, { logLines });
    c = caller(t);
    const record: Interceptor = (next) => async (req) => {
      try {
        const res = await next(req);
        if (!res.stream) answers.push(JSON.stringify(res.message, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)));
        return res;
      } catch (error) {
        answers.push(String((error as Error).message));
        throw error;
      }
    };
    const transport = createConnectTransport({ baseUrl: t.url, httpVersion: "2", interceptors: [record] });
    tasks = createClient(TaskService, transport);
    repos = createClient(RepositoryService, transport);
    const { secret } = await c.registrationToken();
    const reg = await registerWorker(t, secret, { name: "delivery worker" });
    worker = clientWith(t, WorkerService, reg.workerToken);
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await pub?.close();
    await priv?.close();
  });

  const gitDirOf = (repositoryId: string) => path.join(cloneDir(t.config.dataDir, repositoryId), ".git");

  /** A repository on `remote` (main: README.md and shared.txt) added to a new workspace, with a group of it. */
  async function repository(remote: GitRemote, init: { deliveryMode?: DeliveryMode; credentials?: boolean; workspaceCredentials?: boolean } = {}) {
    const name = `d-${randomUUID().slice(0, 8)}`;
    const url = await remote.createRepository(name, { defaultBranch: "main", files: { "README.md": "# d\n", "shared.txt": "one\ntwo\nthree\n" } });
    const ws = (await c.workspace()).id;
    if (init.workspaceCredentials) {
      await c.workspaces.setWorkspaceCredentials({
        id: ws,
        upstreamCredentials: { kind: { case: "usernamePassword" as const, value: { username: remote.auth!.username, password: remote.auth!.password } } },
      });
    }
    const { repository: repo } = await repos.addRepository({
      workspaceId: ws,
      remoteUrl: url,
      ...(init.deliveryMode === undefined ? {} : { deliveryMode: init.deliveryMode }),
      ...(init.credentials ? { upstreamCredentials: { kind: { case: "usernamePassword" as const, value: { username: remote.auth!.username, password: remote.auth!.password } } } } : {}),
    });
    const group = await c.group(ws, [repo!.id]);
    return { name, url, ws, repo: repo!, group };
  }

  /** A unit task on the group whose branch gets `commits` in the server's clones, driven to in_review by the worker. */
  async function inReview(groupId: string, repositoryIds: string[], commits: Record<string, string>[] = [{ "work.txt": "work\n" }]) {
    const branch = `foreman/d-${randomUUID().slice(0, 8)}`;
    const { unitTask } = await tasks.createUnitTask({ repositoryGroupId: groupId, prompt: "Deliver this work", title: "Deliver this work", branchName: branch });
    const id = unitTask!.id;
    const heads: string[] = [];
    for (const repositoryId of repositoryIds) {
      let head = "";
      for (const [i, files] of commits.entries()) head = await commitInClone(path.dirname(gitDirOf(repositoryId)), branch, files, `Work ${i + 1}`);
      heads.push(head);
    }
    const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 5 });
    expect(assignment?.lease, "an assignment").toBeDefined();
    const lease = { sessionId: assignment!.lease!.sessionId, leaseToken: assignment!.lease!.leaseToken };
    await worker.reportStatus({ ...lease, state: SessionState.RUNNING, errorMessage: "", headCommit: "" });
    await worker.reportStatus({ ...lease, state: SessionState.SUCCEEDED, errorMessage: "", headCommit: "" });
    expect(await status(id)).toBe(TaskStatus.IN_REVIEW);
    return { id, branch, heads };
  }

  async function status(id: string): Promise<TaskStatus | undefined> {
    const { task } = await tasks.getTask({ id });
    return task?.task.case === "unitTask" ? task.task.value.status : undefined;
  }

  const remoteGit = (remote: GitRemote, name: string, args: string[]) => git(["--git-dir", remote.gitDir(name), ...args]);

  it("pushes the task branch on approval (branch mode, the default) and leaves the base branch alone", { timeout: 60_000 }, async () => {
    const { name, repo, group } = await repository(pub);
    expect(repo.deliveryMode).toBe(DeliveryMode.BRANCH);
    const main = (await pub.refs(name))["refs/heads/main"];
    const { id, branch, heads } = await inReview(group.id, [repo.id], [{ "a.txt": "a\n" }, { "b.txt": "b\n" }]);
    await tasks.approveTask({ id });
    expect(await status(id)).toBe(TaskStatus.APPROVED);
    const refs = await pub.refs(name);
    expect(refs[`refs/heads/${branch}`]).toBe(heads[0]);
    expect(refs["refs/heads/main"]).toBe(main);
    expect(await remoteGit(pub, name, ["log", "--format=%s", refs[`refs/heads/${branch}`]!])).toBe("Work 2\nWork 1\nInitial commit");
  });

  it("pushes to a basic-auth remote with the stored credentials, which reach no answer, log line or clone config", { timeout: 60_000 }, async () => {
    const { name, repo, group } = await repository(priv, { credentials: true, deliveryMode: DeliveryMode.MERGE });
    const { id, branch, heads } = await inReview(group.id, [repo.id]);
    await tasks.approveTask({ id });
    const refs = await priv.refs(name);
    expect(refs[`refs/heads/${branch}`]).toBe(heads[0]);
    expect(await remoteGit(priv, name, ["log", "-1", "--format=%P", "main"])).toContain(heads[0]!);
    const password = priv.auth!.password;
    const basic = Buffer.from(`${priv.auth!.username}:${password}`).toString("base64");
    for (const text of [answers.join("\n"), logLines.join("\n"), await readFile(path.join(gitDirOf(repo.id), "config"), "utf8")]) {
      expect(text).not.toContain(password);
      expect(text).not.toContain(basic);
    }
    expect(logLines.some((l) => l.includes("approved task delivered"))).toBe(true);
  });

  it("pushes a repository without credentials of its own with its workspace's", { timeout: 60_000 }, async () => {
    const { name, repo, group } = await repository(priv, { workspaceCredentials: true });
    expect(repo.hasUpstreamCredentials).toBe(false);
    const { id, branch, heads } = await inReview(group.id, [repo.id]);
    await tasks.approveTask({ id });
    expect(await status(id)).toBe(TaskStatus.APPROVED);
    expect((await priv.refs(name))[`refs/heads/${branch}`]).toBe(heads[0]);
    expect(await readFile(path.join(gitDirOf(repo.id), "config"), "utf8")).not.toContain(priv.auth!.password);
  });

  it("merges, squashes or rebases onto the base branch as the remote has it now", { timeout: 90_000 }, async () => {
    for (const mode of [DeliveryMode.MERGE, DeliveryMode.SQUASH, DeliveryMode.REBASE]) {
      const { name, repo, group } = await repository(pub, { deliveryMode: mode });
      const { id, branch, heads } = await inReview(group.id, [repo.id], [{ "a.txt": "a\n" }, { "shared.txt": "one\ntwo\nthree\nfour\n" }]);
      // The base moves on after the task started; delivery fetches first and lands on top of it.
      const moved = await pub.commit(name, { branch: "main", files: { "shared.txt": "zero\none\ntwo\nthree\n", "upstream.txt": "u\n" }, message: "Upstream" });
      await tasks.approveTask({ id });
      expect(await status(id)).toBe(TaskStatus.APPROVED);
      const refs = await pub.refs(name);
      expect(refs[`refs/heads/${branch}`]).toBe(heads[0]);
      const main = refs["refs/heads/main"]!;
      expect(await remoteGit(pub, name, ["show", `${main}:shared.txt`])).toBe("zero\none\ntwo\nthree\nfour");
      expect(await remoteGit(pub, name, ["show", `${main}:a.txt`])).toBe("a");
      const log = (await remoteGit(pub, name, ["log", "--format=%s|%P", `${moved}..${main}`])).split("\n");
      if (mode === DeliveryMode.MERGE) {
        expect(log[0]).toBe(`Merge branch '${branch}' into main|${moved} ${heads[0]}`);
      } else if (mode === DeliveryMode.SQUASH) {
        expect(log).toEqual([`Deliver this work|${moved}`]);
      } else {
        expect(log.map((l) => l.split("|")[0])).toEqual(["Work 2", "Work 1"]);
        expect(log[1]!.split("|")[1]).toBe(moved);
      }
    }
  });

  it("refuses a merge that conflicts, naming the file: nothing pushed, the task in review; approved once resolved", { timeout: 60_000 }, async () => {
    const { name, repo, group } = await repository(pub, { deliveryMode: DeliveryMode.SQUASH });
    const { id, branch } = await inReview(group.id, [repo.id], [{ "shared.txt": "one\nTWO (task)\nthree\n" }]);
    await pub.commit(name, { branch: "main", files: { "shared.txt": "one\nTWO (upstream)\nthree\n" } });
    const before = await pub.refs(name);
    await expectError(tasks.approveTask({ id }), { code: Code.FailedPrecondition, message: "conflicts in shared.txt" });
    expect(await pub.refs(name)).toEqual(before);
    expect(before[`refs/heads/${branch}`]).toBeUndefined();
    expect(await status(id)).toBe(TaskStatus.IN_REVIEW);
    // Resolved upstream (the change taken back): the retry delivers.
    await pub.commit(name, { branch: "main", files: { "shared.txt": "one\ntwo\nthree\n" } });
    await tasks.approveTask({ id });
    expect(await remoteGit(pub, name, ["show", "main:shared.txt"])).toBe("one\nTWO (task)\nthree");
  });

  it("a push the remote refuses (not a fast-forward, a hook) fails the approval; the task stays in review and a retry after the fix delivers", { timeout: 60_000 }, async () => {
    const { name, repo, group } = await repository(pub);
    const { id, branch, heads } = await inReview(group.id, [repo.id]);
    // Someone pushed another history to the task's branch upstream.
    const other = await pub.commit(name, { branch, from: "main", files: { "other.txt": "x\n" } });
    await expectError(tasks.approveTask({ id }), { code: Code.FailedPrecondition, message: "not a fast-forward" });
    expect(await status(id)).toBe(TaskStatus.IN_REVIEW);
    expect((await pub.refs(name))[`refs/heads/${branch}`]).toBe(other);
    await remoteGit(pub, name, ["update-ref", "-d", `refs/heads/${branch}`]);

    const hook = path.join(pub.gitDir(name), "hooks", "pre-receive");
    await writeFile(hook, "#!/bin/sh\necho 'pushes frozen for the release' >&2\nexit 1\n");
    await chmod(hook, 0o755);
    await expectError(tasks.approveTask({ id }), { code: Code.FailedPrecondition, message: "pushes frozen for the release" });
    expect(await status(id)).toBe(TaskStatus.IN_REVIEW);
    await rm(hook);

    await tasks.approveTask({ id });
    expect(await status(id)).toBe(TaskStatus.APPROVED);
    expect((await pub.refs(name))[`refs/heads/${branch}`]).toBe(heads[0]);
  });

  it("a remote that does not answer is Unavailable; the task stays in review, and delivers once it answers", { timeout: 60_000 }, async () => {
    const flaky = await startGitRemote();
    try {
      const { name, repo, group } = await repository(flaky);
      const { id, branch, heads } = await inReview(group.id, [repo.id]);
      flaky.misbehave("hang");
      await expectError(tasks.approveTask({ id }), { code: Code.Unavailable, reason: "REMOTE_UNAVAILABLE" });
      expect(await status(id)).toBe(TaskStatus.IN_REVIEW);
      flaky.misbehave("none");
      await tasks.approveTask({ id });
      expect((await flaky.refs(name))[`refs/heads/${branch}`]).toBe(heads[0]);

      const second = await inReview(group.id, [repo.id], [{ "second.txt": "2\n" }]);
      await flaky.stop();
      await expectError(tasks.approveTask({ id: second.id }), { code: Code.Unavailable, reason: "REMOTE_UNAVAILABLE" });
      expect(await status(second.id)).toBe(TaskStatus.IN_REVIEW);
    } finally {
      await flaky.close();
    }
  });

  it("a group whose second repository refuses: the first is delivered, the task stays in review, and the retry delivers both (the first again, unchanged)", { timeout: 60_000 }, async () => {
    const a = await repository(pub, { deliveryMode: DeliveryMode.MERGE });
    const bName = `d-${randomUUID().slice(0, 8)}`;
    const bUrl = await pub.createRepository(bName, { defaultBranch: "main" });
    const { repository: b } = await repos.addRepository({ workspaceId: a.ws, remoteUrl: bUrl, deliveryMode: DeliveryMode.MERGE });
    const group = await c.group(a.ws, [a.repo.id, b!.id], `pair-${randomUUID().slice(0, 6)}`);
    const [first, second] = [a.repo.id, b!.id].sort();
    const secondName = second === a.repo.id ? a.name : bName;
    const firstName = second === a.repo.id ? bName : a.name;
    const hook = path.join(pub.gitDir(secondName), "hooks", "pre-receive");
    await writeFile(hook, "#!/bin/sh\necho 'not today' >&2\nexit 1\n");
    await chmod(hook, 0o755);
    const { id, branch } = await inReview(group.id, [first!, second!]);
    await expectError(tasks.approveTask({ id }), { code: Code.FailedPrecondition, message: `delivered before ${second}: ${first}` });
    expect(await status(id)).toBe(TaskStatus.IN_REVIEW);
    const firstMain = (await pub.refs(firstName))["refs/heads/main"];
    expect(await remoteGit(pub, firstName, ["log", "-1", "--format=%s", "main"])).toBe(`Merge branch '${branch}' into main`);
    await rm(hook);
    await tasks.approveTask({ id });
    expect((await pub.refs(firstName))["refs/heads/main"]).toBe(firstMain);
    expect(await remoteGit(pub, secondName, ["log", "-1", "--format=%s", "main"])).toBe(`Merge branch '${branch}' into main`);
  });

  it("two approvals at once: one moves the task, upstream gets one merge", { timeout: 60_000 }, async () => {
    const { name, repo, group } = await repository(pub, { deliveryMode: DeliveryMode.MERGE });
    const { id } = await inReview(group.id, [repo.id]);
    const main = (await pub.refs(name))["refs/heads/main"];
    const results = await Promise.allSettled([tasks.approveTask({ id }), tasks.approveTask({ id })]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(await status(id)).toBe(TaskStatus.APPROVED);
    expect((await remoteGit(pub, name, ["rev-list", "--first-parent", `${main}..main`])).split("\n")).toHaveLength(1);
  });

  it("after a refused approval, RequestChanges continues on the same branch and the next approval delivers both runs' commits", { timeout: 60_000 }, async () => {
    const { name, repo, group } = await repository(pub, { deliveryMode: DeliveryMode.MERGE });
    const { id, branch, heads } = await inReview(group.id, [repo.id], [{ "shared.txt": "one\nTWO (task)\nthree\n" }]);
    await pub.commit(name, { branch: "main", files: { "shared.txt": "one\nTWO (upstream)\nthree\n" } });
    await expectError(tasks.approveTask({ id }), { code: Code.FailedPrecondition, message: "conflicts in shared.txt" });
    await tasks.requestChanges({ id, feedback: "Take upstream's line two" });
    const second = await commitInClone(path.dirname(gitDirOf(repo.id)), branch, { "shared.txt": "one\nTWO (upstream)\nthree\n", "more.txt": "m\n" }, "Second run");
    const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 5 });
    const lease = { sessionId: assignment!.lease!.sessionId, leaseToken: assignment!.lease!.leaseToken };
    await worker.reportStatus({ ...lease, state: SessionState.RUNNING, errorMessage: "", headCommit: "" });
    await worker.reportStatus({ ...lease, state: SessionState.SUCCEEDED, errorMessage: "", headCommit: "" });
    expect(await status(id)).toBe(TaskStatus.IN_REVIEW);
    await tasks.approveTask({ id });
    const refs = await pub.refs(name);
    expect(refs[`refs/heads/${branch}`]).toBe(second);
    expect(await remoteGit(pub, name, ["log", "--format=%s", `${refs[`refs/heads/${branch}`]}`, "-2"])).toBe(`Second run\nWork 1`);
    expect(await remoteGit(pub, name, ["merge-base", "--is-ancestor", heads[0]!, "main"]).then(() => true)).toBe(true);
    expect(await remoteGit(pub, name, ["show", "main:more.txt"])).toBe("m");
  });

  it("a task rejected or deleted leaves upstream untouched", { timeout: 60_000 }, async () => {
    const { name, repo, group } = await repository(pub, { deliveryMode: DeliveryMode.MERGE });
    const before = await pub.refs(name);
    const rejected = await inReview(group.id, [repo.id]);
    await tasks.rejectTask({ id: rejected.id, reason: "not what we need" });
    const deleted = await inReview(group.id, [repo.id], [{ "d.txt": "d\n" }]);
    await tasks.deleteTask({ id: deleted.id });
    expect(await pub.refs(name)).toEqual(before);
  });

  it("delivers to a folder on the server's machine (single-user mode) with the git command", { timeout: 60_000 }, async () => {
    const name = `f-${randomUUID().slice(0, 8)}`;
    await pub.createRepository(name, { defaultBranch: "main" });
    const ws = (await c.workspace()).id;
    const { repository: repo } = await repos.addRepository({ workspaceId: ws, remoteUrl: pub.gitDir(name), deliveryMode: DeliveryMode.REBASE });
    const group = await c.group(ws, [repo!.id]);
    const { id, branch, heads } = await inReview(group.id, [repo!.id], [{ "f.txt": "f\n" }]);
    await tasks.approveTask({ id });
    const refs = await pub.refs(name);
    expect(refs[`refs/heads/${branch}`]).toBe(heads[0]);
    // The base had not moved: the rebase is the branch's commit as it is.
    expect(refs["refs/heads/main"]).toBe(heads[0]);
  });

  it("sets a repository's delivery mode", { timeout: 30_000 }, async () => {
    const { repo } = await repository(pub);
    const { repository: set } = await repos.setRepositoryDeliveryMode({ id: repo.id, deliveryMode: DeliveryMode.REBASE });
    expect(set?.deliveryMode).toBe(DeliveryMode.REBASE);
    expect((await repos.getRepository({ id: repo.id })).repository?.deliveryMode).toBe(DeliveryMode.REBASE);
    await expectInvalid(repos.setRepositoryDeliveryMode({ id: repo.id }), "delivery_mode");
    await expectInvalid(repos.setRepositoryDeliveryMode({ id: repo.id, deliveryMode: 99 as DeliveryMode }), "delivery_mode");
    await expectInvalid(repos.addRepository({ workspaceId: repo.workspaceId, remoteUrl: pub.url("x"), deliveryMode: 7 as DeliveryMode }), "delivery_mode");
  });
});
