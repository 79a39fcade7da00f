// A workspace's upstream credentials (issue 18), through the real server (remotes contacted)
// against a git remote that asks for basic auth, on both databases: a repository with none of
// its own is added and fetched with its workspace's, clearing them makes the next fetch refused,
// a repository's own win, and the values are in no answer, log line, database row in clear or
// clone. Another user's workspace is NotFound: test/integration/access-matrix.test.ts.
import { randomBytes, randomUUID } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import path from "node:path";
import { Code } from "@connectrpc/connect";
import { toJsonString } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { GetWorkspaceResponseSchema, ListWorkspacesResponseSchema, SetWorkspaceCredentialsResponseSchema } from "../../gen/foreman/v1/workspace_pb.js";
import { cloneDir } from "../../src/core/paths.js";
import { keyId } from "../../src/auth/secret-box.js";
import { DIALECTS, createTestDatabase, databaseText } from "../helpers/databases.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { git, startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { expectError } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

async function allText(dir: string): Promise<string> {
  const parts: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) parts.push((await readFile(path.join(entry.parentPath, entry.name))).toString("latin1"));
  }
  return parts.join("\n");
}

describe.each(DIALECTS)("workspace credentials on %s", (dialect) => {
  let t: TestServer;
  let c: Caller;
  let priv: GitRemote;
  const logLines: string[] = [];
  const password = `pw-${randomUUID()}`;
  const wrong = `wrong-${randomUUID()}`;
  const answers: string[] = [];

  beforeAll(async () => {
    priv = await startGitRemote({ auth: { username: "robot", password } });
    t = await startTestServer(dialect, { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_REMOTE_TIMEOUT_SECONDS: "3" }, undefined, { logLines });
    c = caller(t);
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await priv?.close();
  });

  const tasks = () => c.client(TaskService);
  const dirOf = (id: string) => cloneDir(t.config.dataDir, id);
  const originRef = (id: string, branch: string) => git(["--git-dir", path.join(dirOf(id), ".git"), "rev-parse", `refs/remotes/origin/${branch}`]);
  const basic = (pw: string) => ({ kind: { case: "usernamePassword" as const, value: { username: "robot", password: pw } } });

  it("reaches a repository without credentials of its own with its workspace's, until they are cleared", { timeout: 60_000 }, async () => {
    const name = `w-${randomUUID().slice(0, 8)}`;
    const url = await priv.createRepository(name);
    const ws = (await c.workspace()).id;
    const set = await c.workspaces.setWorkspaceCredentials({ id: ws, upstreamCredentials: basic(password) });
    answers.push(toJsonString(SetWorkspaceCredentialsResponseSchema, set));
    expect(set.workspace?.hasUpstreamCredentials).toBe(true);
    const got = await c.workspaces.getWorkspace({ id: ws });
    answers.push(toJsonString(GetWorkspaceResponseSchema, got));
    expect(got.workspace?.hasUpstreamCredentials).toBe(true);
    const listed = await c.workspaces.listWorkspaces({ pageSize: 1000 });
    answers.push(toJsonString(ListWorkspacesResponseSchema, listed));
    expect(listed.workspaces.find((w) => w.id === ws)?.hasUpstreamCredentials).toBe(true);

    // Added with none of its own: the remote is asked with the workspace's.
    const repo = await c.repository(ws, url);
    expect(repo.hasUpstreamCredentials).toBe(false);
    const group = await c.group(ws, [repo.id]);
    const head = await priv.commit(name, { files: { "n.txt": "n\n" } });
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "With the workspace's" });
    expect(unitTask?.id).toBeDefined();
    expect(await originRef(repo.id, "trunk")).toBe(head);
    const config = await readFile(path.join(dirOf(repo.id), ".git", "config"), "utf8");
    expect(config).not.toContain(password);
    const clone = await allText(dirOf(repo.id));
    expect(clone).not.toContain(password);
    expect(clone).not.toContain(Buffer.from(`robot:${password}`).toString("base64"));

    const cleared = await c.workspaces.clearWorkspaceCredentials({ id: ws });
    expect(cleared.workspace?.hasUpstreamCredentials).toBe(false);
    expect((await c.workspaces.getWorkspace({ id: ws })).workspace?.hasUpstreamCredentials).toBe(false);
    await expectError(tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Refused" }), {
      code: Code.PermissionDenied,
      reason: "REMOTE_ACCESS_DENIED",
      message: "SetWorkspaceCredentials",
    });
  });

  it("uses a repository's own credentials over its workspace's", { timeout: 60_000 }, async () => {
    const name = `o-${randomUUID().slice(0, 8)}`;
    const url = await priv.createRepository(name);
    const ws = (await c.workspace()).id;
    await c.workspaces.setWorkspaceCredentials({ id: ws, upstreamCredentials: basic(wrong) });
    const repo = await c.repository(ws, url, { upstreamCredentials: basic(password) });
    const group = await c.group(ws, [repo.id]);
    const head = await priv.commit(name, { files: { "o.txt": "o\n" } });
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "With its own" });
    expect(unitTask?.id).toBeDefined();
    expect(await originRef(repo.id, "trunk")).toBe(head);

    // Without its own, the workspace's wrong ones are refused.
    await c.repositories.clearRepositoryCredentials({ id: repo.id });
    await expectError(tasks().createUnitTask({ repositoryGroupId: group.id, prompt: "Refused" }), {
      code: Code.PermissionDenied,
      reason: "REMOTE_ACCESS_DENIED",
    });
  });

  it("refuses a workspace it does not know, and credentials missing", async () => {
    await expectError(c.workspaces.setWorkspaceCredentials({ id: randomUUID(), upstreamCredentials: basic(password) }), { code: Code.NotFound });
    await expectError(c.workspaces.clearWorkspaceCredentials({ id: randomUUID() }), { code: Code.NotFound });
    const ws = (await c.workspace()).id;
    await expectError(c.workspaces.setWorkspaceCredentials({ id: ws }), { code: Code.InvalidArgument });
  });

  it("reseals them under a new key at start; once no key opens them, a fetch says which workspace to set again", { timeout: 90_000 }, async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const database = await createTestDatabase(dialect);
    const env = { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_REMOTE_TIMEOUT_SECONDS: "3" };
    const withKeys = (current: Buffer, previous?: Buffer) => ({
      ...env,
      FOREMAN_SECRET_KEY: current.toString("base64"),
      ...(previous === undefined ? {} : { FOREMAN_SECRET_KEYS_PREVIOUS: previous.toString("hex") }),
    });
    let server = await startTestServer(dialect, withKeys(oldKey), database);
    try {
      const name = `k-${randomUUID().slice(0, 8)}`;
      const url = await priv.createRepository(name);
      const ws = (await caller(server).workspace()).id;
      await caller(server).workspaces.setWorkspaceCredentials({ id: ws, upstreamCredentials: basic(password) });
      const repo = await caller(server).repository(ws, url);
      const group = await caller(server).group(ws, [repo.id]);
      await server.close();

      const lines: string[] = [];
      server = await startTestServer(dialect, withKeys(newKey, oldKey), database, { logLines: lines });
      const stored = await server.server.db.kysely.selectFrom("workspaces").select("upstream_credentials").where("id", "=", ws).executeTakeFirstOrThrow();
      expect(stored.upstream_credentials?.startsWith(`v1:${keyId(newKey)}:`)).toBe(true);
      expect(lines.join("\n")).toContain("stored upstream credentials sealed with the current key");
      await server.close();

      // The old key gone, they open with the new one alone.
      server = await startTestServer(dialect, withKeys(newKey), database);
      const made = await caller(server).client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "After the rotation" });
      expect(made.unitTask).toBeDefined();
      await server.close();

      // With neither key, nothing opens them: the start says so, and a fetch names the workspace.
      const unreadable: string[] = [];
      server = await startTestServer(dialect, withKeys(randomBytes(32)), database, { logLines: unreadable });
      expect(unreadable.join("\n")).toContain("stored upstream credentials of workspaces that no configured key opens");
      await expectError(caller(server).client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "Key gone" }), {
        code: Code.FailedPrecondition,
        message: `workspace ${ws}'s upstream credentials do not open`,
      });
    } finally {
      await server.close();
      await database.drop();
    }
  });

  it("puts the values in no answer, no log line and not in the database in clear", async () => {
    for (const secret of [password, wrong]) {
      expect(answers.join("\n")).not.toContain(secret);
      expect(logLines.join("\n")).not.toContain(secret);
      expect(await databaseText(t.database)).not.toContain(secret);
    }
    expect(answers.length).toBeGreaterThan(0);
  });
});
