// A 5,000-file repository through the workspace route (issue 18), on both databases, with the
// real server in process contacting a real git remote (test/helpers/git-remote.ts): the worker's
// clone over Foreman with isomorphic-git (as the worker daemon will fetch) holds every file with
// its content, a 100-file result pushed back lands on the server's task branch, and the success
// report records it as the task's end commit.
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Client } from "@connectrpc/connect";
import * as isogit from "isomorphic-git";
import isoHttp from "isomorphic-git/http/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentType, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { cloneDir } from "../../src/core/paths.js";
import { DIALECTS } from "../helpers/databases.js";
import { unit } from "../helpers/dispatch.js";
import { caller, registerWorker, type Caller } from "../helpers/fixtures.js";
import { git, importCommits, startGitRemote, writeFiles, type GitRemote } from "../helpers/git-remote.js";
import { clientWith } from "../helpers/oidc.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const FILES = 5000;
const RESULT = 100;

/** File i's path: 10 folders of 10 folders of 50 files. */
const filePath = (i: number) => `src/part${Math.floor(i / 500)}/mod${Math.floor(i / 50) % 10}/file${i % 50}.ts`;

/** Some 200 B to 2 KiB of text, its own for each (i, version). */
function text(i: number, version = 0): string {
  const size = 200 + ((i * 37 + version * 11) % 1800);
  let out = "";
  for (let k = 0; out.length < size; k++) out += `export const v${i}_${k} = "${version}:${(i * 7919 + k * 104729) % 1_000_003}";\n`;
  return out;
}

const files = (from: number, to: number, version = 0) => Object.fromEntries(Array.from({ length: to - from }, (_, k) => [filePath(from + k), text(from + k, version)]));

describe.each(DIALECTS)("a 5,000-file workspace on %s", (dialect) => {
  let t: TestServer;
  let c: Caller;
  let remote: GitRemote;
  let worker: Client<typeof WorkerService>;
  let tmp: string;

  beforeAll(async () => {
    remote = await startGitRemote();
    // A lease lasts three heartbeat intervals: at the default 10 s, an isomorphic-git clone of
    // 5,000 files on a busy machine outlasts it (this worker sends no heartbeats, and the clone
    // holds the event loop it shares with the server for seconds at a time).
    t = await startTestServer(dialect, { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_REMOTE_TIMEOUT_SECONDS: "60", FOREMAN_HEARTBEAT_SECONDS: "300" }, undefined, {});
    c = caller(t);
    const { secret } = await c.registrationToken();
    const registered = await registerWorker(t, secret, { agentTypes: [AgentType.CLAUDE_CODE], maxConcurrentSessions: 1 });
    worker = clientWith(t, WorkerService, registered.workerToken);
    tmp = await mkdtemp(path.join(os.tmpdir(), "foreman-workspace-large-"));
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await remote?.close();
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  });

  /** `git ls-tree -r` of a commit: mode, type, object id and path of every file. */
  const tree = (gitDir: string, commit: string) => git(["--git-dir", gitDir, "ls-tree", "-r", commit]);

  it("clones every file over the workspace route, takes a 100-file result back, and records it as the end commit", { timeout: 240_000 }, async () => {
    const name = `large-${randomUUID().slice(0, 8)}`;
    const url = await remote.createRepository(name, { defaultBranch: "main", files: { "README.md": "# large\n" } });
    const remoteGitDir = remote.gitDir(name);
    // History: the files in two commits, then a tenth of them changed.
    const ids = await importCommits(remoteGitDir, "main", [
      { message: "First half", files: files(0, FILES / 2) },
      { message: "Second half", files: files(FILES / 2, FILES) },
      { message: "Change a tenth", files: files(0, FILES / 10, 1) },
    ]);
    const main = (await remote.refs(name))["refs/heads/main"]!;
    expect(ids).toHaveLength(3);
    expect(ids[2]).toBe(main);
    const remoteTree = await tree(remoteGitDir, main);
    expect(remoteTree.split("\n")).toHaveLength(FILES + 1);

    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url);
    const group = await c.group(ws, [repo.id]);
    const tasks = c.client(TaskService);
    const { unitTask } = await tasks.createUnitTask({ repositoryGroupId: group.id, prompt: "Touch a hundred files" });
    const u = unitTask!;
    expect(u.baseCommit).toBe(main);
    const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 10 });
    expect(assignment, "an assignment").toBeDefined();
    const a = assignment!;
    const lease = a.lease!;
    await worker.reportStatus({ sessionId: lease.sessionId, leaseToken: lease.leaseToken, state: SessionState.RUNNING });
    const r = a.repositories[0]!;
    expect(r.branchName).toBe(u.branchName);
    const cloneUrl = new URL(r.cloneUrl, t.url).toString();
    const onAuth = () => ({ username: "worker", password: lease.leaseToken });

    // The worker's clone: the task branch at the base commit, the same tree as the remote's
    // (every file's mode, object id and path), and a work tree that matches it file for file.
    const dir = path.join(tmp, `ws-${dialect}`);
    await isogit.clone({ fs, http: isoHttp, dir, url: cloneUrl, ref: r.branchName, singleBranch: true, noTags: true, onAuth });
    const workGitDir = path.join(dir, ".git");
    expect(await git(["-C", dir, "rev-parse", "HEAD"])).toBe(main);
    expect(await tree(workGitDir, "HEAD")).toBe(remoteTree);
    expect((await git(["-C", dir, "ls-files"])).split("\n")).toHaveLength(FILES + 1);
    expect(await git(["-C", dir, "status", "--porcelain", "--untracked-files=all"])).toBe("");
    expect(fs.readFileSync(path.join(dir, filePath(FILES - 1)), "utf8")).toBe(text(FILES - 1));
    expect(fs.readFileSync(path.join(dir, filePath(0)), "utf8")).toBe(text(0, 1));

    // A 100-file result: half of them changed, half new, committed and pushed with isomorphic-git.
    const result: Record<string, string> = {};
    for (let k = 0; k < RESULT; k++) {
      if (k % 2 === 0) result[filePath(k * 41)] = text(k * 41, 2);
      else result[`src/added/new${k}.ts`] = text(FILES + k);
    }
    await writeFiles(dir, result);
    await isogit.add({ fs, dir, filepath: Object.keys(result) });
    const head = await isogit.commit({ fs, dir, message: "Touch a hundred files", author: { name: "Worker", email: "worker@example.com" } });
    const pushed = await isogit.push({ fs, http: isoHttp, dir, url: cloneUrl, ref: r.branchName, remoteRef: r.branchName, onAuth });
    expect(pushed.ok).toBe(true);

    // It landed on the server's task branch, whole: the same tree, 100 files changed from the base.
    const serverGitDir = path.join(cloneDir(t.config.dataDir, repo.id), ".git");
    expect(await git(["--git-dir", serverGitDir, "rev-parse", `refs/heads/${r.branchName}`])).toBe(head);
    expect(await tree(serverGitDir, head)).toBe(await tree(workGitDir, head));
    const changed = (await git(["--git-dir", serverGitDir, "diff", "--name-status", main, head])).split("\n");
    expect(changed).toHaveLength(RESULT);
    expect(changed.filter((l) => l.startsWith("M\t"))).toHaveLength(RESULT / 2);
    expect(changed.filter((l) => l.startsWith("A\t"))).toHaveLength(RESULT / 2);
    for (const [file, content] of Object.entries(result)) {
      if (file.endsWith("new1.ts") || file === filePath(0)) expect(await git(["--git-dir", serverGitDir, "show", `${head}:${file}`])).toBe(content.trimEnd());
    }

    await worker.reportStatus({ sessionId: lease.sessionId, leaseToken: lease.leaseToken, state: SessionState.SUCCEEDED, errorMessage: "", headCommit: head });
    const done = unit((await tasks.getTask({ id: u.id })).task);
    expect(done.status).toBe(TaskStatus.IN_REVIEW);
    expect(done.baseCommit).toBe(main);
    expect(done.endCommit).toBe(head);
    // The upstream remote is untouched until approval.
    expect(Object.keys(await remote.refs(name)).filter((ref) => ref.startsWith("refs/heads/foreman/"))).toEqual([]);
  });
});
