// The server's clone of each repository, through the real server in process (remotes contacted)
// against real git remotes (test/helpers/git-remote.ts), on both databases: made in the data
// folder when a repository is added, fetched before each new task (a task on a remote that is
// down is not created), with the repository's credentials and none of them written into the
// clone, and removed with the repository.
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { cloneDir } from "../../src/core/paths.js";
import { syncClone } from "../../src/git/clone.js";
import { RemoteError } from "../../src/git/remote.js";
import { keyId } from "../../src/auth/secret-box.js";
import { DIALECTS, createTestDatabase } from "../helpers/databases.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { git, startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { expectError } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** Every file under dir, recursively, as one text (to look for what must not be there). */
async function allText(dir: string): Promise<string> {
  const parts: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) parts.push((await readFile(path.join(entry.parentPath, entry.name))).toString("latin1"));
  }
  return parts.join("\n");
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe.each(DIALECTS)("repository clones on %s", (dialect) => {
  let t: TestServer;
  let c: Caller;
  let pub: GitRemote;
  let priv: GitRemote;

  beforeAll(async () => {
    pub = await startGitRemote();
    priv = await startGitRemote({ auth: { username: "robot", password: `pw-${randomUUID()}` } });
    t = await startTestServer(dialect, { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_REMOTE_TIMEOUT_SECONDS: "3" });
    c = caller(t);
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await pub?.close();
    await priv?.close();
  });

  const tasks = () => c.client(TaskService);
  const dirOf = (id: string) => cloneDir(t.config.dataDir, id);
  const originRef = (id: string, branch: string) => git(["--git-dir", path.join(dirOf(id), ".git"), "rev-parse", `refs/remotes/origin/${branch}`]);

  it("clones a repository when it is added, and fetches it before each new task", { timeout: 60_000 }, async () => {
    const name = `c-${randomUUID().slice(0, 8)}`;
    const url = await pub.createRepository(name, { defaultBranch: "trunk", files: { "a.txt": "a\n" } });
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url);
    const group = await c.group(ws, [repo.id]);
    await until("the clone", () => existsSync(path.join(dirOf(repo.id), ".git", "config")));
    // No work tree files: the server's clone holds git's objects and refs only.
    expect(existsSync(path.join(dirOf(repo.id), "a.txt"))).toBe(false);

    const second = await pub.commit(name, { files: { "b.txt": "b\n" }, message: "Second" });
    await pub.commit(name, { branch: "feature", from: "trunk", files: { "f.txt": "f\n" } });
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Use the new commit" });
    expect(unitTask?.id).toBeDefined();
    expect(await originRef(repo.id, "trunk")).toBe(second);
    expect(await originRef(repo.id, "feature")).toBe((await pub.refs(name))["refs/heads/feature"]);
  });

  it("runs many tasks' fetches of one repository one at a time, and each task sees the remote", { timeout: 60_000 }, async () => {
    const name = `m-${randomUUID().slice(0, 8)}`;
    const url = await pub.createRepository(name);
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url);
    const group = await c.group(ws, [repo.id]);
    const head = await pub.commit(name, { files: { "n.txt": "n\n" } });
    const made = await Promise.all(Array.from({ length: 6 }, (_, i) => tasks().createUnitTask({ repositoryGroupId: group.id, prompt: `Task ${i}` })));
    expect(made.every((m) => m.unitTask !== undefined)).toBe(true);
    expect(await originRef(repo.id, "trunk")).toBe(head);
    // No clone was left half-made beside the clone.
    expect((await readdir(path.dirname(dirOf(repo.id)))).filter((f) => f.includes(".cloning-"))).toEqual([]);
  });

  it("clones with the repository's credentials and writes none of them into the clone", { timeout: 60_000 }, async () => {
    const name = `p-${randomUUID().slice(0, 8)}`;
    const url = await priv.createRepository(name);
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url, {
      upstreamCredentials: { kind: { case: "usernamePassword", value: { username: "robot", password: priv.auth!.password } } },
    });
    const group = await c.group(ws, [repo.id]);
    await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Private" });
    expect(await originRef(repo.id, "trunk")).toBe((await priv.refs(name))["refs/heads/trunk"]);
    const config = await readFile(path.join(dirOf(repo.id), ".git", "config"), "utf8");
    expect(config).toContain(url);
    const everything = await allText(dirOf(repo.id));
    expect(everything).not.toContain(priv.auth!.password);
    expect(everything).not.toContain(Buffer.from(`robot:${priv.auth!.password}`).toString("base64"));

    // Credentials cleared: the next fetch is refused, and no task is made.
    await c.repositories.clearRepositoryCredentials({ id: repo.id });
    await expectError(tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Refused" }), {
      code: Code.PermissionDenied,
      reason: "REMOTE_ACCESS_DENIED",
      message: "SetRepositoryCredentials",
    });
    const { tasks: listed } = await tasks().listTasks({ workspaceId: ws });
    expect(listed.map((x) => x.task.value?.title)).toEqual(["Private"]);
  });

  it("creates no task while the remote is down, and says so", { timeout: 60_000 }, async () => {
    const gone = await startGitRemote();
    try {
      const url = await gone.createRepository("gone");
      const ws = (await c.workspace()).id;
      const repo = await c.repository(ws, url);
      const group = await c.group(ws, [repo.id]);
      await gone.stop();
      await expectError(tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Nothing" }), {
        code: Code.Unavailable,
        reason: "REMOTE_UNAVAILABLE",
      });
      const { tasks: listed } = await tasks().listTasks({ workspaceId: ws });
      expect(listed).toEqual([]);
    } finally {
      await gone.close();
    }
  });

  it("reseals credentials under a new key at start, and fetches with them after the rotation", { timeout: 60_000 }, async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const database = await createTestDatabase(dialect);
    const env = { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_SECRET_KEY: oldKey.toString("base64") };
    const first = await startTestServer(dialect, env, database);
    let second: TestServer | undefined;
    try {
      const name = `k-${randomUUID().slice(0, 8)}`;
      const url = await priv.createRepository(name);
      const ws = (await caller(first).workspace()).id;
      const repo = await caller(first).repository(ws, url, {
        upstreamCredentials: { kind: { case: "usernamePassword", value: { username: "robot", password: priv.auth!.password } } },
      });
      const group = await caller(first).group(ws, [repo.id]);
      await first.close();
      const lines: string[] = [];
      second = await startTestServer(
        dialect,
        { ...env, FOREMAN_SECRET_KEY: newKey.toString("base64"), FOREMAN_SECRET_KEYS_PREVIOUS: oldKey.toString("hex") },
        database,
        { logLines: lines },
      );
      const { upstream_credentials: stored } = await second.server.db.kysely
        .selectFrom("repositories")
        .select("upstream_credentials")
        .where("id", "=", repo.id)
        .executeTakeFirstOrThrow();
      expect(stored?.startsWith(`v1:${keyId(newKey)}:`)).toBe(true);
      expect(lines.join("\n")).toContain("stored upstream credentials sealed with the current key");
      await second.close();
      // The old key is gone now; the credentials open with the new one alone.
      second = await startTestServer(dialect, { ...env, FOREMAN_SECRET_KEY: newKey.toString("base64") }, database);
      const made = await caller(second).client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "After the rotation" });
      expect(made.unitTask).toBeDefined();
    } finally {
      await second?.close();
      await first.close();
      await database.drop();
    }
  });

  it("keeps the clone as it was when the remote goes away mid-fetch, and fetches again once it is back", { timeout: 60_000 }, async () => {
    const name = `cut-${randomUUID().slice(0, 8)}`;
    const url = await pub.createRepository(name);
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url);
    const group = await c.group(ws, [repo.id]);
    await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "First" });
    const before = await originRef(repo.id, "trunk");
    const next = await pub.commit(name, { files: { "later.txt": "later\n" } });
    pub.misbehave("cut-off");
    try {
      await expectError(tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Cut off" }), { code: Code.Unavailable, reason: "REMOTE_UNAVAILABLE" });
    } finally {
      pub.misbehave("none");
    }
    expect(await originRef(repo.id, "trunk")).toBe(before);
    await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Back" });
    expect(await originRef(repo.id, "trunk")).toBe(next);
  });

  it("leaves nothing behind when a clone is cut off midway", { timeout: 60_000 }, async () => {
    const remote = await startGitRemote();
    const parent = await mkdtemp(path.join(os.tmpdir(), "foreman-clone-cut-"));
    try {
      const url = await remote.createRepository("big", { files: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`f${i}.txt`, `${i}\n`.repeat(50)])) });
      const dir = path.join(parent, "clone");
      remote.misbehave("cut-off");
      const error = await syncClone(dir, url, { timeoutMs: 5000 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RemoteError);
      expect((error as RemoteError).problem).toBe("unreachable");
      expect(await readdir(parent)).toEqual([]);
      remote.misbehave("none");
      const done = await syncClone(dir, url, { timeoutMs: 5000 });
      expect(done.cloned).toBe(true);
      expect(done.branches.get("trunk")).toBe((await remote.refs("big"))["refs/heads/trunk"]);
    } finally {
      await remote.close();
      await rm(parent, { recursive: true, force: true });
    }
  });

  it("clones and fetches a folder on the server's machine", { timeout: 60_000 }, async () => {
    const name = `lf-${randomUUID().slice(0, 8)}`;
    await pub.createRepository(name);
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, `file://${pub.gitDir(name)}`);
    const group = await c.group(ws, [repo.id]);
    const next = await pub.commit(name, { files: { "l.txt": "l\n" } });
    await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Local" });
    expect(await originRef(repo.id, "trunk")).toBe(next);
    const later = await pub.commit(name, { files: { "m.txt": "m\n" } });
    await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Local again" });
    expect(await originRef(repo.id, "trunk")).toBe(later);
  });

  it("removes the clone with the repository", { timeout: 60_000 }, async () => {
    const url = await pub.createRepository(`r-${randomUUID().slice(0, 8)}`);
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url);
    await until("the clone", () => existsSync(path.join(dirOf(repo.id), ".git", "config")));
    await c.repositories.removeRepository({ id: repo.id });
    expect(existsSync(dirOf(repo.id))).toBe(false);
  });
});
