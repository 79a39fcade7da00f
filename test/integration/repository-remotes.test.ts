// AddRepository asks the remote before it stores anything, one repository per remote, and upstream
// credentials, through the real server in process (remote checks on) against real git remotes
// (test/helpers/git-remote.ts: git http-backend over HTTP, public and basic-auth), on both
// databases: the default branch the remote names is recorded; a missing branch, refused or
// missing credentials, and a remote that is down or hangs are clear errors that store nothing;
// every spelling of one remote is one repository; credentials are stored sealed and appear in
// no answer, no log line and nowhere in the database in clear.
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { symlink } from "node:fs/promises";
import path from "node:path";
import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RepositorySchema, type Repository } from "../../gen/foreman/v1/repository_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { cloneDir } from "../../src/core/paths.js";
import { parseRemoteUrl, type ParsedRemote } from "../../src/core/remote-url.js";
import { fetchUrl } from "../../src/core/upstream.js";
import { readRemoteHead, RemoteError } from "../../src/git/remote.js";
import { DIALECTS, databaseText } from "../helpers/databases.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { expectError, expectInvalid, rpcError } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const CHECKED = { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_REMOTE_TIMEOUT_SECONDS: "2" };
const SEALED = /^v1:[0-9a-f]{12}:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]{22,}$/;

/** Everything a client was told, as text: answers and error messages with their details. */
function told(value: Repository | ConnectError | undefined): string {
  if (value === undefined) return "";
  if (value instanceof ConnectError) {
    return `${value.rawMessage} ${JSON.stringify(value.findDetails(ErrorInfoSchema).map((i) => i.metadata))}`;
  }
  return toJsonString(RepositorySchema, value);
}

describe.each(DIALECTS)("repository remotes on %s", (dialect) => {
  let t: TestServer;
  let c: Caller;
  let pub: GitRemote;
  let priv: GitRemote;
  const logLines: string[] = [];
  /** Everything any call of this file was answered, for the credential checks at the end. */
  const answers: string[] = [];
  /** Every credential this file sent. */
  const secrets: string[] = [];

  beforeAll(async () => {
    pub = await startGitRemote();
    priv = await startGitRemote({ auth: { username: "robot", password: `pw-${randomUUID()}` } });
    secrets.push(priv.auth!.password);
    t = await startTestServer(dialect, CHECKED, undefined, { logLines });
    c = caller(t);
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await pub?.close();
    await priv?.close();
  });

  async function add(workspaceId: string, remoteUrl: string, init: Parameters<Caller["repositories"]["addRepository"]>[0] = {}): Promise<Repository> {
    const { repository } = await c.repositories.addRepository({ ...init, workspaceId, remoteUrl });
    answers.push(told(repository));
    return repository!;
  }

  async function failure(call: Promise<unknown>): Promise<ConnectError> {
    const error = await rpcError(call);
    answers.push(told(error));
    return error;
  }

  async function repositoriesIn(workspaceId: string): Promise<Repository[]> {
    const { repositories } = await c.repositories.listRepositories({ workspaceId, pageSize: 1000 });
    for (const r of repositories) answers.push(told(r));
    return repositories;
  }

  async function rowCount(workspaceId: string): Promise<number> {
    const rows = await t.server.db.kysely.selectFrom("repositories").select("id").where("workspace_id", "=", workspaceId).execute();
    return rows.length;
  }

  it("records the default branch a public remote's HEAD names, and takes a branch it has", { timeout: 60_000 }, async () => {
    const url = await pub.createRepository(`app-${randomUUID().slice(0, 8)}`, { defaultBranch: "trunk" });
    const ws = (await c.workspace()).id;
    const repo = await add(ws, url);
    expect(repo.defaultBranch).toBe("trunk");
    expect(repo.remoteUrl).toBe(url);
    expect(repo.hasUpstreamCredentials).toBe(false);

    const name = `b-${randomUUID().slice(0, 8)}`;
    const other = await pub.createRepository(name, { defaultBranch: "trunk" });
    await pub.commit(name, { branch: "release", from: "trunk", files: { "r.txt": "r\n" } });
    expect((await add(ws, other, { defaultBranch: "release" })).defaultBranch).toBe("release");
  });

  it("refuses a branch the remote does not have, naming its default branch, and stores nothing", { timeout: 60_000 }, async () => {
    const url = await pub.createRepository(`nb-${randomUUID().slice(0, 8)}`, { defaultBranch: "trunk" });
    const ws = (await c.workspace()).id;
    const error = await expectInvalid(c.repositories.addRepository({ workspaceId: ws, remoteUrl: url, defaultBranch: "main" }), "default_branch");
    answers.push(told(error));
    expect(error.rawMessage).toContain("no branch with this name");
    expect(error.rawMessage).toContain("trunk");
    expect(await repositoriesIn(ws)).toEqual([]);
    expect(await rowCount(ws)).toBe(0);
  });

  it("refuses a URL with no repository behind it (404) as an invalid remote_url", { timeout: 60_000 }, async () => {
    const ws = (await c.workspace()).id;
    const error = await expectInvalid(c.repositories.addRepository({ workspaceId: ws, remoteUrl: pub.url("no-such-repository") }), "remote_url");
    answers.push(told(error));
    expect(await rowCount(ws)).toBe(0);
  });

  it("adds a basic-auth remote with the right user and password, and records that it has credentials", { timeout: 60_000 }, async () => {
    const url = await priv.createRepository(`p-${randomUUID().slice(0, 8)}`, { defaultBranch: "trunk" });
    const ws = (await c.workspace()).id;
    const repo = await add(ws, url, {
      upstreamCredentials: { kind: { case: "usernamePassword", value: { username: "robot", password: priv.auth!.password } } },
    });
    expect(repo.defaultBranch).toBe("trunk");
    expect(repo.hasUpstreamCredentials).toBe(true);
    const { repository: got } = await c.repositories.getRepository({ id: repo.id });
    answers.push(told(got));
    expect(got?.hasUpstreamCredentials).toBe(true);

    const { upstream_credentials: stored } = await t.server.db.kysely
      .selectFrom("repositories")
      .select("upstream_credentials")
      .where("id", "=", repo.id)
      .executeTakeFirstOrThrow();
    expect(stored).toMatch(SEALED);
  });

  it("is PermissionDenied for wrong credentials and for none, storing nothing", { timeout: 60_000 }, async () => {
    const url = await priv.createRepository(`w-${randomUUID().slice(0, 8)}`);
    const ws = (await c.workspace()).id;
    const wrong = `wrong-${randomUUID()}`;
    secrets.push(wrong);
    const refused = await failure(
      c.repositories.addRepository({
        workspaceId: ws,
        remoteUrl: url,
        upstreamCredentials: { kind: { case: "usernamePassword", value: { username: "robot", password: wrong } } },
      }),
    );
    await expectError(Promise.reject(refused), { code: Code.PermissionDenied, reason: "REMOTE_ACCESS_DENIED", message: "refused the upstream credentials" });
    const token = `tok-${randomUUID()}`;
    secrets.push(token);
    const refusedToken = await failure(c.repositories.addRepository({ workspaceId: ws, remoteUrl: url, upstreamCredentials: { kind: { case: "token", value: token } } }));
    expect(refusedToken.code).toBe(Code.PermissionDenied);
    const none = await failure(c.repositories.addRepository({ workspaceId: ws, remoteUrl: url }));
    await expectError(Promise.reject(none), { code: Code.PermissionDenied, reason: "REMOTE_ACCESS_DENIED", message: "asks for credentials" });
    expect(await repositoriesIn(ws)).toEqual([]);
    expect(await rowCount(ws)).toBe(0);
  });

  it("sends a token as the password of basic auth", { timeout: 60_000 }, async () => {
    const token = `ghp_${randomUUID().replace(/-/g, "")}`;
    secrets.push(token);
    // A generic host takes a token beside the user name "token".
    const tokenRemote = await startGitRemote({ auth: { username: "token", password: token } });
    try {
      const url = await tokenRemote.createRepository("tokened");
      const ws = (await c.workspace()).id;
      const repo = await add(ws, url, { upstreamCredentials: { kind: { case: "token", value: token } } });
      expect(repo.hasUpstreamCredentials).toBe(true);
    } finally {
      await tokenRemote.close();
    }
  });

  it("is Unavailable when the remote is down or does not answer in time, storing nothing", { timeout: 60_000 }, async () => {
    const ws = (await c.workspace()).id;
    const gone = await startGitRemote();
    const url = await gone.createRepository("gone");
    gone.misbehave("hang");
    const hung = await failure(c.repositories.addRepository({ workspaceId: ws, remoteUrl: url }));
    await expectError(Promise.reject(hung), { code: Code.Unavailable, reason: "REMOTE_UNAVAILABLE", message: "did not answer" });
    gone.misbehave("cut-off");
    const cut = await failure(c.repositories.addRepository({ workspaceId: ws, remoteUrl: url }));
    expect(Code[cut.code], cut.rawMessage).toBe(Code[Code.Unavailable]);
    gone.misbehave("none");
    await gone.close();
    const down = await failure(c.repositories.addRepository({ workspaceId: ws, remoteUrl: url }));
    await expectError(Promise.reject(down), { code: Code.Unavailable, reason: "REMOTE_UNAVAILABLE", message: "connection was refused" });
    expect(await repositoriesIn(ws)).toEqual([]);
    expect(await rowCount(ws)).toBe(0);
  });

  it("takes each remote once per workspace, in any spelling, naming the repository that has it", { timeout: 60_000 }, async () => {
    const name = `one-${randomUUID().slice(0, 8)}`;
    const url = await pub.createRepository(name);
    const ws = (await c.workspace()).id;
    const first = await add(ws, url);
    const port = new URL(pub.baseUrl).port;
    // The server clones a repository it added in the background: once the clone is in place,
    // it asks this remote nothing more.
    const clone = path.join(cloneDir(t.config.dataDir, first.id), ".git", "config");
    for (let waited = 0; !existsSync(clone); waited += 25) {
      if (waited > 30_000) throw new Error("the background clone did not finish");
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const requestsBefore = pub.requests;
    for (const spelling of [url, `http://127.0.0.1:${port}/${name}`, `http://127.0.0.1:${port}/${name}.git/`, `HTTP://127.0.0.1:${port}//${name}.git`, `https://127.0.0.1:${port}/${name}`]) {
      const error = await failure(c.repositories.addRepository({ workspaceId: ws, remoteUrl: spelling }));
      await expectError(Promise.reject(error), { code: Code.AlreadyExists, message: first.id });
      expect(error.findDetails(ErrorInfoSchema)[0]?.metadata.id).toBe(first.id);
    }
    // A second spelling is refused before the remote is asked.
    expect(pub.requests).toBe(requestsBefore);
    expect((await repositoriesIn(ws)).map((r) => r.id)).toEqual([first.id]);
    // Another workspace may have it too.
    expect((await add((await c.workspace()).id, `http://127.0.0.1:${port}/${name}`)).remoteUrl).toBe(`http://127.0.0.1:${port}/${name}`);
  });

  it("sets credentials only once the remote accepts them, and clears them", { timeout: 60_000 }, async () => {
    const name = `cred-${randomUUID().slice(0, 8)}`;
    const url = await priv.createRepository(name);
    const ws = (await c.workspace()).id;
    const good = { kind: { case: "usernamePassword" as const, value: { username: "robot", password: priv.auth!.password } } };
    const repo = await add(ws, url, { upstreamCredentials: good });
    const sealedBefore = await storedCredentials(repo.id);

    const wrong = `wrong-${randomUUID()}`;
    secrets.push(wrong);
    const refused = await failure(
      c.repositories.setRepositoryCredentials({ id: repo.id, upstreamCredentials: { kind: { case: "usernamePassword", value: { username: "robot", password: wrong } } } }),
    );
    expect(Code[refused.code]).toBe(Code[Code.PermissionDenied]);
    expect(await storedCredentials(repo.id)).toBe(sealedBefore);

    const set = await c.repositories.setRepositoryCredentials({ id: repo.id, upstreamCredentials: good });
    answers.push(told(set.repository));
    expect(set.repository?.hasUpstreamCredentials).toBe(true);
    expect(await storedCredentials(repo.id)).not.toBe(sealedBefore);
    await expectInvalid(c.repositories.setRepositoryCredentials({ id: repo.id }), "upstream_credentials");

    const cleared = await c.repositories.clearRepositoryCredentials({ id: repo.id });
    answers.push(told(cleared.repository));
    expect(cleared.repository?.hasUpstreamCredentials).toBe(false);
    expect(await storedCredentials(repo.id)).toBeNull();
  });

  async function storedCredentials(id: string): Promise<string | null> {
    const row = await t.server.db.kysely.selectFrom("repositories").select("upstream_credentials").where("id", "=", id).executeTakeFirstOrThrow();
    return row.upstream_credentials;
  }

  it("refuses an ssh remote on a host it cannot reach over https (GitHub's ssh spellings it reaches at https)", { timeout: 60_000 }, async () => {
    for (const ssh of ["git@github.com:Acme/App.git", "ssh://git@github.com/acme/app", "git://github.com/acme/app.git"]) {
      expect(fetchUrl(parseRemoteUrl(ssh) as ParsedRemote), ssh).toBe("https://github.com/acme/app.git");
    }
    expect(fetchUrl(parseRemoteUrl("http://127.0.0.1:9/x.git") as ParsedRemote)).toBe("http://127.0.0.1:9/x.git");
    expect(fetchUrl(parseRemoteUrl("ssh://git@git.example.com/x.git") as ParsedRemote)).toBeUndefined();
    const ws = (await c.workspace()).id;
    const error = await expectInvalid(c.repositories.addRepository({ workspaceId: ws, remoteUrl: "git@git.example.com:acme/app.git" }), "remote_url");
    expect(error.rawMessage).toContain("http(s) only");
    expect(await rowCount(ws)).toBe(0);
  });

  it("takes a folder on the server's machine as a remote in single-user mode, by path or file:/// URL", { timeout: 60_000 }, async () => {
    const name = `local-${randomUUID().slice(0, 8)}`;
    await pub.createRepository(name, { defaultBranch: "trunk" });
    const folder = pub.gitDir(name);
    const ws = (await c.workspace()).id;
    const repo = await add(ws, folder);
    expect(repo.defaultBranch).toBe("trunk");
    expect(repo.remoteUrl).toBe(folder);
    // Every spelling git reads as this folder: a file:/// URL, a trailing slash, no ".git", a link to it.
    const link = path.join(path.dirname(folder), `link-${name}`);
    await symlink(folder, link);
    for (const spelling of [`file://${folder}/`, folder.replace(/\.git$/, ""), link]) {
      await expectError(c.repositories.addRepository({ workspaceId: ws, remoteUrl: spelling }), { code: Code.AlreadyExists, message: repo.id });
    }
    await expectInvalid(c.repositories.addRepository({ workspaceId: ws, remoteUrl: `${folder}-x`, defaultBranch: "nope" }), "remote_url");
    const other = (await c.workspace()).id;
    await expectInvalid(
      c.repositories.addRepository({ workspaceId: other, remoteUrl: folder, upstreamCredentials: { kind: { case: "token", value: "t" } } }),
      "upstream_credentials",
    );
    await expectInvalid(c.repositories.addRepository({ workspaceId: other, remoteUrl: folder, defaultBranch: "missing" }), "default_branch");
    await expectInvalid(c.repositories.setRepositoryCredentials({ id: repo.id, upstreamCredentials: { kind: { case: "token", value: "t" } } }), "upstream_credentials");
    expect(await rowCount(other)).toBe(0);
  });

  it("never shows a credential: not in any answer, not in the log, not in the database in clear", { timeout: 60_000 }, async () => {
    expect(secrets.length).toBeGreaterThan(3);
    const everything = answers.join("\n");
    const logs = logLines.join("\n");
    const stored = await databaseText(t.database);
    for (const secret of secrets) {
      expect(everything).not.toContain(secret);
      expect(logs).not.toContain(secret);
      expect(stored).not.toContain(secret);
      expect(stored).not.toContain(Buffer.from(`robot:${secret}`).toString("base64"));
    }
    // The log did see the failed calls (so it was looked at, not empty).
    expect(logs).toContain('"code":"PermissionDenied"');
  });
});

describe.each(DIALECTS)("one repository per remote, without asking remotes, on %s", (dialect) => {
  let t: TestServer;
  let c: Caller;

  beforeAll(async () => {
    t = await startTestServer(dialect);
    c = caller(t);
  }, 60_000);

  afterAll(async () => {
    await t?.close();
  });

  it("treats the https, ssh, scp-like, upper-case, no-.git and trailing-slash spellings of a GitHub repository as one", async () => {
    const name = `r-${randomUUID().slice(0, 8)}`;
    const ws = (await c.workspace()).id;
    const first = await c.repository(ws, `https://github.com/acme/${name}.git`);
    for (const spelling of [
      `https://github.com/acme/${name}`,
      `https://github.com/acme/${name}/`,
      `https://GitHub.com/ACME/${name.toUpperCase()}.git`,
      `git@github.com:acme/${name}.git`,
      `git@github.com:Acme/${name}`,
      `ssh://git@github.com/acme/${name}.git`,
      `ssh://git@github.com:22/acme/${name}`,
    ]) {
      const error = await expectError(c.repositories.addRepository({ workspaceId: ws, remoteUrl: spelling }), { code: Code.AlreadyExists, message: first.id });
      expect(error.rawMessage).toContain(first.remoteUrl);
    }
    const { repositories } = await c.repositories.listRepositories({ workspaceId: ws });
    expect(repositories.map((r) => r.remoteUrl)).toEqual([`https://github.com/acme/${name}.git`]);
    // Not the same remote: another owner, another host.
    await c.repository(ws, `https://github.com/other/${name}.git`);
    await c.repository(ws, `https://gitlab.com/acme/${name}.git`);
  });

  it("gives repositories from before one-per-remote their keys at start: the oldest keeps the remote, later copies stay", { timeout: 60_000 }, async () => {
    const name = `old-${randomUUID().slice(0, 8)}`;
    const ws = (await c.workspace()).id;
    const db = t.server.db.kysely;
    // As a database migrated from before 0008 holds them: two spellings of one remote, no keys.
    const a = await c.repository(ws, `https://github.com/acme/${name}.git`);
    await db.updateTable("repositories").set({ remote_key: null }).where("id", "=", a.id).execute();
    const b = await c.repository(ws, `git@github.com:acme/${name}.git`);
    await db.updateTable("repositories").set({ remote_key: null }).where("id", "in", [a.id, b.id]).execute();

    const again = await startTestServer(dialect, {}, t.database);
    try {
      const keys = await again.server.db.kysely.selectFrom("repositories").select(["id", "remote_key"]).where("id", "in", [a.id, b.id]).orderBy("id").execute();
      expect(keys).toEqual([
        { id: a.id, remote_key: `github.com/acme/${name}` },
        { id: b.id, remote_key: `github.com/acme/${name}#${b.id}` },
      ]);
      const error = await expectError(caller(again).repositories.addRepository({ workspaceId: ws, remoteUrl: `https://github.com/acme/${name}` }), {
        code: Code.AlreadyExists,
        message: a.id,
      });
      expect(error.rawMessage).not.toContain(b.id);
    } finally {
      await again.close();
    }
  });
});

describe("the remote check's address guard", () => {
  it("refuses a host name that resolves to an address the server may not reach, before connecting", { timeout: 30_000 }, async () => {
    const remote = await startGitRemote();
    try {
      await remote.createRepository("guarded");
      const port = new URL(remote.baseUrl).port;
      const before = remote.requests;
      const error = await readRemoteHead(`http://localhost:${port}/guarded.git`, undefined, {
        timeoutMs: 5000,
        addressProblem: (address) => (address === "127.0.0.1" || address === "::1" ? "is loopback" : undefined),
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RemoteError);
      expect((error as RemoteError).problem).toBe("address");
      expect(remote.requests).toBe(before);
      // Without the guard the same name answers.
      expect((await readRemoteHead(`http://localhost:${port}/guarded.git`, undefined, { timeoutMs: 5000 })).defaultBranch).toBe("trunk");
    } finally {
      await remote.close();
    }
  });
});
