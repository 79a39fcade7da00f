// RepositoryService through the generated client over real HTTP (Connect, h2c), on a real
// server in process, once per database dialect. Each test makes its own workspaces, so tests
// do not see each other's repositories and groups.
import { randomUUID } from "node:crypto";
import { toJsonString } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ListRepositoriesResponseSchema,
  RepositorySchema,
  VcsProviderType,
  type Repository,
  type RepositoryGroup,
} from "../../gen/foreman/v1/repository_pb.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { UNKNOWN_ID, expectCode, expectInvalid } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe.each(DIALECTS)("RepositoryService on %s", (dialect) => {
  let t: TestServer;

  let local: Caller;

  beforeAll(async () => {
    t = await startTestServer(dialect);
    local = caller(t);
  });

  afterAll(async () => {
    await t?.close();
  });

  async function allGroups(workspaceId: string): Promise<RepositoryGroup[]> {
    const res = await t.repositories.listRepositoryGroups({ workspaceId, pageSize: 1000 });
    expect(res.nextPageToken).toBe("");
    return res.repositoryGroups;
  }

  async function allRepositories(workspaceId: string): Promise<Repository[]> {
    const res = await t.repositories.listRepositories({ workspaceId, pageSize: 1000 });
    expect(res.nextPageToken).toBe("");
    return res.repositories;
  }

  describe("AddRepository, GetRepository and ListRepositories", () => {
    it("adds a repository with defaults derived from the URL, and it round-trips", async () => {
      const { id: ws } = await local.workspace();
      const before = Date.now();
      const repo = await local.repository(ws, "https://github.com/acme/widgets.git");
      const after = Date.now();

      expect(repo.id).toMatch(UUID);
      expect(repo.workspaceId).toBe(ws);
      expect(repo.name).toBe("widgets");
      expect(repo.remoteUrl).toBe("https://github.com/acme/widgets.git");
      expect(repo.defaultBranch).toBe("main");
      expect(repo.vcsProviderType).toBe(VcsProviderType.GITHUB);
      expect(repo.hasWebhookSecret).toBe(false);
      expect(repo.updateTime).toEqual(repo.createTime);
      const createMs = timestampDate(repo.createTime!).getTime();
      expect(createMs).toBeGreaterThanOrEqual(before);
      expect(createMs).toBeLessThanOrEqual(after);

      expect((await t.repositories.getRepository({ id: repo.id })).repository).toEqual(repo);
      expect((await t.repositories.getRepository({ id: repo.id.toUpperCase() })).repository).toEqual(repo);
      expect(await allRepositories(ws)).toEqual([repo]);
    });

    it("keeps the given name, default branch and provider, and never returns the webhook secret", async () => {
      const { id: ws } = await local.workspace();
      const secret = "s3cr3t-webhook-value-0123456789";
      const { repository: repo } = await t.repositories.addRepository({
        workspaceId: ws,
        remoteUrl: "https://git.example.com/team/service.git",
        name: "  my-service_v2.0 ",
        defaultBranch: " develop ",
        vcsProviderType: VcsProviderType.GITLAB,
        webhookSecret: secret,
      });
      expect(repo?.name).toBe("my-service_v2.0");
      expect(repo?.defaultBranch).toBe("develop");
      expect(repo?.vcsProviderType).toBe(VcsProviderType.GITLAB);
      expect(repo?.hasWebhookSecret).toBe(true);

      const got = (await t.repositories.getRepository({ id: repo!.id })).repository!;
      expect(got.hasWebhookSecret).toBe(true);
      const listed = await t.repositories.listRepositories({ workspaceId: ws });
      expect(listed.repositories[0]?.hasWebhookSecret).toBe(true);
      for (const json of [
        toJsonString(RepositorySchema, repo!),
        toJsonString(RepositorySchema, got),
        toJsonString(ListRepositoriesResponseSchema, listed),
      ]) {
        expect(json).not.toContain(secret);
      }
    });

    it.each([
      ["https://github.com/acme/a.git", VcsProviderType.GITHUB, "a"],
      ["git@github.com:acme/b.git", VcsProviderType.GITHUB, "b"],
      ["https://gitlab.com/group/sub/c", VcsProviderType.GITLAB, "c"],
      ["ssh://git@gitlab.com:22/group/d.git", VcsProviderType.GITLAB, "d"],
      ["https://bitbucket.org/team/e.git", VcsProviderType.BITBUCKET, "e"],
      ["http://127.0.0.1:8418/git/f.git", VcsProviderType.GENERIC, "f"],
      ["git://git.example.org/g", VcsProviderType.GENERIC, "g"],
      ["https://GitHub.com/acme/h/", VcsProviderType.GITHUB, "h"],
    ])("derives provider and name from %s", async (remoteUrl, provider, name) => {
      const { id: ws } = await local.workspace();
      const repo = await local.repository(ws, remoteUrl);
      expect(repo.vcsProviderType).toBe(provider);
      expect(repo.name).toBe(name);
      expect(repo.remoteUrl).toBe(remoteUrl.replace(/\/+$/, ""));
    });

    it.each([
      ["https://bücher.de/acme/a.git", "https://xn--bcher-kva.de/acme/a.git"],
      ["ssh://git@bücher.de:2222/acme/b.git", "ssh://git@xn--bcher-kva.de:2222/acme/b.git"],
      ["git@bücher.de:acme/c.git", "git@xn--bcher-kva.de:acme/c.git"],
      ["git://bücher.de/acme/d", "git://xn--bcher-kva.de/acme/d"],
      ["http://2130706433/acme/e.git", "http://127.0.0.1/acme/e.git"],
      ["ssh://0x7f.1/acme/f.git", "ssh://127.0.0.1/acme/f.git"],
    ])("stores and shows %s with its host as git will connect to it", async (remoteUrl, stored) => {
      const { id: ws } = await local.workspace();
      const repo = await local.repository(ws, remoteUrl);
      expect(repo.remoteUrl).toBe(stored);
      expect((await t.repositories.getRepository({ id: repo.id })).repository?.remoteUrl).toBe(stored);
      // The same remote written either way is one remote.
      await expectCode(t.repositories.addRepository({ workspaceId: ws, remoteUrl: stored }), Code.AlreadyExists);
    });

    it.each([
      "http://127.0.0.1:8418/git/local.git",
      "https://[::1]/x/loop.git",
      "http://169.254.169.254/latest/meta.git",
      "http://10.0.0.5/git/private.git",
      "git@localhost:me/mine.git",
    ])("accepts the local or private remote %s in single-user mode", async (remoteUrl) => {
      const { id: ws } = await local.workspace();
      expect((await local.repository(ws, remoteUrl)).remoteUrl).toBe(remoteUrl);
    });

    it("stores the URL trimmed and without a trailing slash", async () => {
      const { id: ws } = await local.workspace();
      const repo = await local.repository(ws, "  https://github.com/acme/trailing///  ");
      expect(repo.remoteUrl).toBe("https://github.com/acme/trailing");
      expect(repo.name).toBe("trailing");
    });

    it("refuses a duplicate remote URL in the same workspace, also when written differently", async () => {
      const { id: ws } = await local.workspace();
      const first = await local.repository(ws, "https://github.com/acme/dup.git");
      const err = await expectCode(
        t.repositories.addRepository({ workspaceId: ws, remoteUrl: "https://github.com/acme/dup.git", name: "other" }),
        Code.AlreadyExists,
      );
      expect(err.rawMessage).toContain("https://github.com/acme/dup.git");
      await expectCode(
        t.repositories.addRepository({ workspaceId: ws, remoteUrl: " https://github.com/acme/dup.git/ " }),
        Code.AlreadyExists,
      );
      expect((await allRepositories(ws)).map((r) => r.id)).toEqual([first.id]);
    });

    it("lets exactly one of concurrent adds of the same URL succeed", async () => {
      const { id: ws } = await local.workspace();
      const attempts = 8;
      const results = await Promise.allSettled(
        Array.from({ length: attempts }, (_, i) =>
          t.repositories.addRepository({ workspaceId: ws, remoteUrl: "https://github.com/acme/race.git", name: `race-${i}` }),
        ),
      );
      const ok = results.filter((r) => r.status === "fulfilled");
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(ok).toHaveLength(1);
      for (const f of failed) await expectCode(Promise.reject(f.reason), Code.AlreadyExists);
      expect((await allRepositories(ws)).map((r) => r.id)).toEqual([ok[0]!.value.repository?.id]);
    });

    it("allows the same remote URL in another workspace", async () => {
      const { id: a } = await local.workspace();
      const { id: b } = await local.workspace();
      const inA = await local.repository(a, "https://github.com/acme/shared.git");
      const inB = await local.repository(b, "https://github.com/acme/shared.git");
      expect(inB.id).not.toBe(inA.id);
      expect(inB.workspaceId).toBe(b);
      expect((await allRepositories(a)).map((r) => r.id)).toEqual([inA.id]);
      expect((await allRepositories(b)).map((r) => r.id)).toEqual([inB.id]);
    });

    it.each([
      ["empty", ""],
      ["whitespace only", "  \t "],
      // A folder (file:///srv/git/repo.git) is a remote in single-user mode; a file:// URL naming a host is none.
      ["file:// with a host", "file://server/srv/git/repo.git"],
      ["ftp://", "ftp://example.com/repo.git"],
      ["credentials in an https URL", "https://user:password@github.com/acme/repo.git"],
      ["a token in an https URL", "https://ghp_abcdef@github.com/acme/repo.git"],
      ["no path", "https://github.com"],
      ["a '..' segment", "https://github.com/acme/../repo.git"],
      ["a query string", "https://github.com/acme/repo.git?ref=x"],
      ["a control character", "https://github.com/acme/re\u0000po.git"],
      ["malformed percent-encoding", "https://github.com/acme/%zz.git"],
      ["over 2048 characters", `https://github.com/acme/${"r".repeat(2048)}.git`],
      ["a leading dash, which git would read as an option", "-u@github.com:fuzz/a.git"],
      ["an ssh user name that is an option", "ssh://-oProxyCommand=touch@host.example/a.git"],
      ["%00 in the path", "https://github.com/acme/a%00b.git"],
      ["a percent-encoded line break in the path", "https://github.com/acme/a%0Ab.git"],
      ["a percent-encoded bidi override in the path", "https://github.com/acme/%E2%80%AEb.git"],
      ["a bidi override", "https://github.com/acme/\u202eb.git"],
      ["a percent-encoded host", "https://b%C3%BCcher.de/acme/a.git"],
    ])("refuses a remote_url with %s", async (_label, remoteUrl) => {
      const { id: ws } = await local.workspace();
      // An explicit name, so that only the URL is at fault.
      await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl, name: "repo" }), "remote_url");
      expect(await allRepositories(ws)).toEqual([]);
    });

    it("validates name, default branch and webhook secret", async () => {
      const { id: ws } = await local.workspace();
      const url = "https://github.com/acme/valid.git";
      await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, name: "has space" }), "name");
      await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, name: "a/b" }), "name");
      await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, name: "ü" }), "name");
      await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, name: "x".repeat(101) }), "name");
      await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, name: "a\u0007b" }), "name");
      for (const defaultBranch of ["a..b", "-main", "has space", "main.lock", "x\u0000"]) {
        await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, defaultBranch }), "default_branch");
      }
      await expectInvalid(
        t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, webhookSecret: "k".repeat(257) }),
        "webhook_secret",
      );
      await expectInvalid(
        t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, vcsProviderType: 99 as VcsProviderType }),
        "vcs_provider_type",
      );
      expect(await allRepositories(ws)).toEqual([]);

      // The limits themselves are fine.
      const ok = await local.repository(ws, url, { name: "x".repeat(100) });
      expect(ok.name).toBe("x".repeat(100));
      const { repository: withSecret } = await t.repositories.addRepository({
        workspaceId: ws,
        remoteUrl: "https://github.com/acme/valid2.git",
        webhookSecret: "k".repeat(256),
      });
      expect(withSecret?.hasWebhookSecret).toBe(true);
    });

    // Names will reach git's command line and may one day name a folder: nothing that could
    // be a path to another folder, git's own folder, or an option.
    it.each([
      [".", /"\."/],
      ["..", /"\."/],
      ["...", /only dots/],
      [".git", /\.git/],
      [".GIT", /\.git/],
      ["-rf", /option/],
      ["--help", /option/],
      ["-", /option/],
    ])("refuses the name %j, saying why", async (name, why) => {
      const { id: ws } = await local.workspace();
      const err = await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl: "https://github.com/acme/named.git", name }), "name");
      expect(err.rawMessage).toMatch(why);
      expect(await allRepositories(ws)).toEqual([]);
    });

    it.each([
      ["https://github.com/o/..git", "."],
      ["https://github.com/o/...git", ".."],
      ["https://github.com/o/.git.git", ".git"],
      ["https://github.com/o/-rf.git", "-rf"],
      ["git@github.com:o/--help.git", "--help"],
      ["ssh://git@host.example/srv/-x", "-x"],
    ])("refuses %s, whose derived name %j is unsafe, unless a name is given", async (remoteUrl) => {
      const { id: ws } = await local.workspace();
      const err = await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl }), "name");
      expect(err.rawMessage).toMatch(/taken from remote_url/);
      expect(err.rawMessage).toMatch(/give a name/);
      expect(await allRepositories(ws)).toEqual([]);
      // The URL itself is fine: with a safe name it is added, as given.
      const repo = await local.repository(ws, remoteUrl, { name: "safe-name" });
      expect(repo.name).toBe("safe-name");
      expect(repo.remoteUrl).toBe(remoteUrl);
    });

    it("keeps names that only look alike: .github, a.git-like, dots and dashes inside", async () => {
      const { id: ws } = await local.workspace();
      expect((await local.repository(ws, "https://github.com/acme/.github.git")).name).toBe(".github");
      for (const name of [".dotfiles", "a.git", "my-repo", "v1..2", "x-", "_private"]) {
        expect((await local.repository(ws, `https://github.com/acme/n-${randomUUID().slice(0, 8)}.git`, { name })).name).toBe(name);
      }
    });

    it("validates the webhook secret without ever echoing it", async () => {
      const { id: ws } = await local.workspace();
      const url = "https://github.com/acme/hooked.git";
      const refused = ["nul\u0000secret-value", "bell\u0007secret-value", "line\nbreak-secret-value", "tab\tsecret-value", "nel\u0085secret-value", "rlo\u202esecret-value"];
      for (const webhookSecret of refused) {
        const err = await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, webhookSecret }), "webhook_secret");
        expect(err.rawMessage).not.toContain("secret-value");
      }
      const long = `${"q".repeat(250)}-tail-${"q".repeat(10)}`;
      const err = await expectInvalid(t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, webhookSecret: long }), "webhook_secret");
      expect(err.rawMessage).not.toContain("-tail-");
      expect(await allRepositories(ws)).toEqual([]);

      // Counted in characters: 256 four-byte characters are within the limit, 257 are not.
      await expectInvalid(
        t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, webhookSecret: "🔑".repeat(257) }),
        "webhook_secret",
      );
      const { repository } = await t.repositories.addRepository({ workspaceId: ws, remoteUrl: url, webhookSecret: "🔑".repeat(256) });
      expect(repository?.hasWebhookSecret).toBe(true);
    });

    it("names every invalid field at once", async () => {
      await expectInvalid(
        t.repositories.addRepository({ workspaceId: "nope", remoteUrl: "", name: "bad name", defaultBranch: "a..b" }),
        "workspace_id",
        "remote_url",
        "name",
        "default_branch",
      );
    });

    it("refuses an empty or malformed workspace_id and answers an unknown one with NotFound", async () => {
      const url = "https://github.com/acme/x.git";
      await expectInvalid(t.repositories.addRepository({ workspaceId: "", remoteUrl: url }), "workspace_id");
      await expectInvalid(t.repositories.addRepository({ workspaceId: "   ", remoteUrl: url }), "workspace_id");
      await expectInvalid(t.repositories.addRepository({ workspaceId: "ws-1", remoteUrl: url }), "workspace_id");
      const err = await expectCode(t.repositories.addRepository({ workspaceId: UNKNOWN_ID, remoteUrl: url }), Code.NotFound);
      expect(err.rawMessage).toContain(UNKNOWN_ID);
    });

    it("refuses a malformed id on Get and answers an unknown one with NotFound", async () => {
      await expectInvalid(t.repositories.getRepository({ id: "" }), "id");
      await expectInvalid(t.repositories.getRepository({ id: "repo-1" }), "id");
      await expectCode(t.repositories.getRepository({ id: UNKNOWN_ID }), Code.NotFound);
    });

    it("refuses a malformed workspace_id on List and answers an unknown one with NotFound", async () => {
      await expectInvalid(t.repositories.listRepositories({ workspaceId: "" }), "workspace_id");
      await expectInvalid(t.repositories.listRepositories({ workspaceId: "x" }), "workspace_id");
      await expectCode(t.repositories.listRepositories({ workspaceId: UNKNOWN_ID }), Code.NotFound);
    });
  });

  describe("ListRepositories paging", () => {
    it("pages through 25 repositories 10 at a time, oldest first, with nothing repeated or missing", async () => {
      const { id: ws } = await local.workspace();
      const { id: other } = await local.workspace();
      await local.repository(other, "https://github.com/acme/elsewhere.git");
      const created: Repository[] = [];
      for (let i = 0; i < 25; i++) created.push(await local.repository(ws, `https://github.com/acme/repo-${String(i).padStart(2, "0")}.git`));

      const pages: Repository[][] = [];
      const tokens: string[] = [];
      let pageToken = "";
      do {
        const res = await t.repositories.listRepositories({ workspaceId: ws, pageSize: 10, pageToken });
        pages.push(res.repositories);
        tokens.push(res.nextPageToken);
        pageToken = res.nextPageToken;
      } while (pageToken !== "" && pages.length < 10);
      expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
      expect(tokens.map((x) => x !== "")).toEqual([true, true, false]);
      const listed = pages.flat();
      expect(new Set(listed.map((r) => r.id)).size).toBe(25);
      expect(listed).toEqual(created);
    });

    it("refuses a token from another workspace's list, from the group list, garbage and negative sizes", async () => {
      const { id: a } = await local.workspace();
      const { id: b } = await local.workspace();
      for (let i = 0; i < 3; i++) {
        await local.repository(a, `https://github.com/acme/a${i}.git`);
        await local.repository(b, `https://github.com/acme/b${i}.git`);
      }
      const fromA = await t.repositories.listRepositories({ workspaceId: a, pageSize: 1 });
      expect(fromA.nextPageToken).not.toBe("");
      // The token still works for its own list...
      const nextA = await t.repositories.listRepositories({ workspaceId: a, pageSize: 1, pageToken: fromA.nextPageToken });
      expect(nextA.repositories[0]?.workspaceId).toBe(a);
      // ...but not for another workspace's, nor for the group list of the same workspace.
      await expectInvalid(t.repositories.listRepositories({ workspaceId: b, pageToken: fromA.nextPageToken }), "page_token");
      await expectInvalid(t.repositories.listRepositoryGroups({ workspaceId: a, pageToken: fromA.nextPageToken }), "page_token");
      await expectInvalid(t.repositories.listRepositories({ workspaceId: a, pageToken: "%%%not-a-token" }), "page_token");
      await expectInvalid(t.repositories.listRepositories({ workspaceId: a, pageSize: -5 }), "page_size");
      await expectInvalid(
        t.repositories.listRepositories({ workspaceId: "bad", pageSize: -1, pageToken: "garbage" }),
        "workspace_id",
        "page_size",
        "page_token",
      );
    });

    it("caps page_size at 1000", { timeout: 120_000 }, async () => {
      const { id: ws } = await local.workspace();
      const total = 1001;
      for (let start = 0; start < total; start += 25) {
        await Promise.all(
          Array.from({ length: Math.min(25, total - start) }, (_, k) =>
            t.repositories.addRepository({ workspaceId: ws, remoteUrl: `https://github.com/bulk/r${start + k}.git` }),
          ),
        );
      }
      const first = await t.repositories.listRepositories({ workspaceId: ws, pageSize: 1001 });
      expect(first.repositories).toHaveLength(1000);
      expect(first.nextPageToken).not.toBe("");
      const second = await t.repositories.listRepositories({ workspaceId: ws, pageSize: 5000, pageToken: first.nextPageToken });
      expect(second.repositories).toHaveLength(1);
      expect(second.nextPageToken).toBe("");
      expect(new Set([...first.repositories, ...second.repositories].map((r) => r.id)).size).toBe(total);
    });
  });

  describe("RemoveRepository", () => {
    it("removes a repository, and its URL can be added again", async () => {
      const { id: ws } = await local.workspace();
      const kept = await local.repository(ws, "https://github.com/acme/kept.git");
      const repo = await local.repository(ws, "https://github.com/acme/removed.git");
      await t.repositories.removeRepository({ id: repo.id });
      await expectCode(t.repositories.getRepository({ id: repo.id }), Code.NotFound);
      await expectCode(t.repositories.removeRepository({ id: repo.id }), Code.NotFound);
      expect((await allRepositories(ws)).map((r) => r.id)).toEqual([kept.id]);
      const again = await local.repository(ws, "https://github.com/acme/removed.git");
      expect(again.id).not.toBe(repo.id);
    });

    it("refuses a malformed id and answers an unknown one with NotFound", async () => {
      await expectInvalid(t.repositories.removeRepository({ id: "" }), "id");
      await expectInvalid(t.repositories.removeRepository({ id: "42" }), "id");
      await expectCode(t.repositories.removeRepository({ id: UNKNOWN_ID }), Code.NotFound);
    });

    it("refuses to remove a repository in a named group until it is taken out of the group", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const g = await local.group(ws, [a.id, b.id], "frontend");
      const err = await expectCode(t.repositories.removeRepository({ id: a.id }), Code.FailedPrecondition);
      expect(err.rawMessage).toContain("frontend");
      expect((await t.repositories.getRepository({ id: a.id })).repository?.id).toBe(a.id);
      expect((await allGroups(ws)).map((x) => x.repositoryIds)).toEqual([[a.id, b.id]]);

      await t.repositories.updateRepositoryGroup({ id: g.id, repositoryIds: { ids: [b.id] } });
      await t.repositories.removeRepository({ id: a.id });
      await expectCode(t.repositories.getRepository({ id: a.id }), Code.NotFound);
      expect((await allGroups(ws)).map((x) => [x.id, x.repositoryIds])).toEqual([[g.id, [b.id]]]);

      // Names in the message are quoted and escaped, and only the first few groups are named.
      const c = await local.repository(ws, "https://github.com/acme/c.git");
      for (let i = 0; i < 5; i++) await local.group(ws, [b.id, c.id], `say "hi" ${i}`);
      const many = await expectCode(t.repositories.removeRepository({ id: c.id }), Code.FailedPrecondition);
      expect(many.rawMessage.match(/"say \\"hi\\" \d"/g)).toHaveLength(3);
      expect(many.rawMessage).toContain("2 more");
      const taken = await expectCode(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: 'say "hi" 0', repositoryIds: [b.id] }),
        Code.AlreadyExists,
      );
      expect(taken.rawMessage).toContain('named "say \\"hi\\" 0"');
    });

    it("removes a repository's unnamed single-repository group with it, and no other group", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const single = await local.group(ws, [a.id], "");
      const otherSingle = await local.group(ws, [b.id], "");
      expect(single.name).toBe("");
      expect((await allGroups(ws)).map((x) => x.id)).toEqual([single.id, otherSingle.id]);

      await t.repositories.removeRepository({ id: a.id });
      await expectCode(t.repositories.getRepository({ id: a.id }), Code.NotFound);
      expect((await allGroups(ws)).map((x) => x.id)).toEqual([otherSingle.id]);
      await expectCode(t.repositories.deleteRepositoryGroup({ id: single.id }), Code.NotFound);
      expect((await t.repositories.getRepository({ id: b.id })).repository?.id).toBe(b.id);
    });
  });

  describe("repository groups", () => {
    it("creates a named group that keeps the order given, and lists it", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const c = await local.repository(ws, "https://github.com/acme/c.git");
      const before = Date.now();
      const g = await local.group(ws, [c.id, a.id.toUpperCase(), b.id], "  full stack ");
      const after = Date.now();
      expect(g.id).toMatch(UUID);
      expect(g.workspaceId).toBe(ws);
      expect(g.name).toBe("full stack");
      expect(g.repositoryIds).toEqual([c.id, a.id, b.id]);
      expect(g.updateTime).toEqual(g.createTime);
      const createMs = timestampDate(g.createTime!).getTime();
      expect(createMs).toBeGreaterThanOrEqual(before);
      expect(createMs).toBeLessThanOrEqual(after);
      expect(await allGroups(ws)).toEqual([g]);
    });

    it("creates unnamed groups of exactly one repository, several per workspace", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const ga = await local.group(ws, [a.id], "");
      const gb = await local.group(ws, [b.id], "   ");
      expect(ga.name).toBe("");
      expect(gb.name).toBe("");
      expect(ga.repositoryIds).toEqual([a.id]);
      expect(await allGroups(ws)).toEqual([ga, gb]);
    });

    it("refuses an unnamed group of two repositories and a group of none", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      await expectInvalid(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: "", repositoryIds: [a.id, b.id] }),
        "repository_ids",
      );
      await expectInvalid(t.repositories.createRepositoryGroup({ workspaceId: ws, name: "empty", repositoryIds: [] }), "repository_ids");
      await expectInvalid(t.repositories.createRepositoryGroup({ workspaceId: ws, name: "", repositoryIds: [] }), "repository_ids");
      expect(await allGroups(ws)).toEqual([]);
    });

    it("names the repeated and the malformed entries of repository_ids", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const err = await expectInvalid(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: "dups", repositoryIds: [a.id, b.id, a.id] }),
        "repository_ids[2]",
      );
      expect(err.rawMessage).toContain(a.id);
      // The same id in another case is the same id.
      await expectInvalid(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: "dups", repositoryIds: [a.id, a.id.toUpperCase()] }),
        "repository_ids[1]",
      );
      await expectInvalid(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: "bad", repositoryIds: [a.id, "not-an-id", ""] }),
        "repository_ids[1]",
        "repository_ids[2]",
      );
      expect(await allGroups(ws)).toEqual([]);
    });

    it("answers repositories that are unknown or in another workspace with NotFound", async () => {
      const { id: ws } = await local.workspace();
      const { id: other } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const foreign = await local.repository(other, "https://github.com/acme/foreign.git");
      const err = await expectCode(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: "mixed", repositoryIds: [a.id, foreign.id] }),
        Code.NotFound,
      );
      expect(err.rawMessage).toContain(foreign.id);
      await expectCode(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: "ghost", repositoryIds: [a.id, UNKNOWN_ID] }),
        Code.NotFound,
      );
      expect(await allGroups(ws)).toEqual([]);
      expect(await allGroups(other)).toEqual([]);
    });

    it("validates workspace_id and name", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      await expectInvalid(t.repositories.createRepositoryGroup({ workspaceId: "", name: "g", repositoryIds: [a.id] }), "workspace_id");
      await expectInvalid(t.repositories.createRepositoryGroup({ workspaceId: "w", name: "g", repositoryIds: [a.id] }), "workspace_id");
      await expectCode(
        t.repositories.createRepositoryGroup({ workspaceId: UNKNOWN_ID, name: "g", repositoryIds: [a.id] }),
        Code.NotFound,
      );
      await expectInvalid(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: "é".repeat(101), repositoryIds: [a.id] }),
        "name",
      );
      await expectInvalid(t.repositories.createRepositoryGroup({ workspaceId: ws, name: "a\u001bb", repositoryIds: [a.id] }), "name");
      expect(await allGroups(ws)).toEqual([]);
      const long = await local.group(ws, [a.id], "é".repeat(100));
      expect(long.name).toBe("é".repeat(100));
    });

    it("refuses a duplicate group name in a workspace, but allows it in another", async () => {
      const { id: ws } = await local.workspace();
      const { id: other } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const c = await local.repository(other, "https://github.com/acme/c.git");
      const first = await local.group(ws, [a.id], "backend");
      const err = await expectCode(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: "backend", repositoryIds: [b.id] }),
        Code.AlreadyExists,
      );
      expect(err.rawMessage).toContain("backend");
      await expectCode(
        t.repositories.createRepositoryGroup({ workspaceId: ws, name: " backend ", repositoryIds: [b.id] }),
        Code.AlreadyExists,
      );
      expect((await allGroups(ws)).map((g) => g.id)).toEqual([first.id]);
      const elsewhere = await local.group(other, [c.id], "backend");
      expect(elsewhere.name).toBe("backend");
    });

    it("lets exactly one of concurrent creates of a group name succeed", async () => {
      const { id: ws } = await local.workspace();
      const repos: Repository[] = [];
      for (let i = 0; i < 8; i++) repos.push(await local.repository(ws, `https://github.com/acme/c${i}.git`));
      const results = await Promise.allSettled(
        repos.map((r) => t.repositories.createRepositoryGroup({ workspaceId: ws, name: "contested", repositoryIds: [r.id] })),
      );
      const ok = results.filter((r) => r.status === "fulfilled");
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(ok).toHaveLength(1);
      expect(failed).toHaveLength(7);
      for (const f of failed) await expectCode(Promise.reject(f.reason), Code.AlreadyExists);
      expect((await allGroups(ws)).map((g) => g.id)).toEqual([ok[0]!.value.repositoryGroup?.id]);
    });

    it("updates the name only, leaving the repositories as they are", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const g = await local.group(ws, [b.id, a.id], "old");
      const { repositoryGroup: updated } = await t.repositories.updateRepositoryGroup({ id: g.id, name: " new " });
      expect(updated?.id).toBe(g.id);
      expect(updated?.name).toBe("new");
      expect(updated?.repositoryIds).toEqual([b.id, a.id]);
      expect(updated?.createTime).toEqual(g.createTime);
      expect(timestampDate(updated!.updateTime!).getTime()).toBeGreaterThanOrEqual(timestampDate(g.createTime!).getTime());
      expect(await allGroups(ws)).toEqual([updated]);
    });

    it("updates the repositories only, in the new order, leaving the name as it is", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const c = await local.repository(ws, "https://github.com/acme/c.git");
      const g = await local.group(ws, [a.id, b.id], "kept");
      const { repositoryGroup: updated } = await t.repositories.updateRepositoryGroup({
        id: g.id,
        repositoryIds: { ids: [c.id, a.id] },
      });
      expect(updated?.name).toBe("kept");
      expect(updated?.repositoryIds).toEqual([c.id, a.id]);
      expect(await allGroups(ws)).toEqual([updated]);
      // b is no longer in a named group, so it can be removed.
      await t.repositories.removeRepository({ id: b.id });
    });

    it("leaves a group as it was when no field is set, and updates both at once", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const g = await local.group(ws, [a.id, b.id], "same");
      const { repositoryGroup: unchanged } = await t.repositories.updateRepositoryGroup({ id: g.id });
      expect(unchanged?.name).toBe("same");
      expect(unchanged?.repositoryIds).toEqual([a.id, b.id]);
      const { repositoryGroup: both } = await t.repositories.updateRepositoryGroup({
        id: g.id,
        name: "renamed",
        repositoryIds: { ids: [b.id] },
      });
      expect(both?.name).toBe("renamed");
      expect(both?.repositoryIds).toEqual([b.id]);
    });

    it("validates updates and changes nothing when they are refused", async () => {
      const { id: ws } = await local.workspace();
      const { id: other } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const foreign = await local.repository(other, "https://github.com/acme/f.git");
      const g = await local.group(ws, [a.id, b.id], "pair");
      const taken = await local.group(ws, [a.id], "taken");

      // A present but empty list means "no repositories", not "unchanged".
      await expectInvalid(t.repositories.updateRepositoryGroup({ id: g.id, repositoryIds: { ids: [] } }), "repository_ids");
      await expectInvalid(
        t.repositories.updateRepositoryGroup({ id: g.id, repositoryIds: { ids: [a.id, b.id, b.id] } }),
        "repository_ids[2]",
      );
      await expectInvalid(t.repositories.updateRepositoryGroup({ id: g.id, repositoryIds: { ids: ["x"] } }), "repository_ids[0]");
      // Clearing the name of a two-repository group would make an unnamed group of two.
      await expectInvalid(t.repositories.updateRepositoryGroup({ id: g.id, name: "" }), "repository_ids");
      await expectInvalid(t.repositories.updateRepositoryGroup({ id: g.id, name: "x".repeat(101) }), "name");
      await expectCode(t.repositories.updateRepositoryGroup({ id: g.id, repositoryIds: { ids: [a.id, foreign.id] } }), Code.NotFound);
      await expectCode(t.repositories.updateRepositoryGroup({ id: g.id, name: "taken" }), Code.AlreadyExists);
      await expectInvalid(t.repositories.updateRepositoryGroup({ id: "", name: "x" }), "id");
      await expectInvalid(t.repositories.updateRepositoryGroup({ id: "group-1", name: "x" }), "id");
      await expectCode(t.repositories.updateRepositoryGroup({ id: UNKNOWN_ID, name: "x" }), Code.NotFound);

      expect(await allGroups(ws)).toEqual([g, taken]);

      // Clearing the name of a single-repository group is fine: it becomes unnamed.
      const { repositoryGroup: unnamed } = await t.repositories.updateRepositoryGroup({ id: taken.id, name: "" });
      expect(unnamed?.name).toBe("");
      expect(unnamed?.repositoryIds).toEqual([a.id]);
    });

    it("deletes a group and keeps its repositories", async () => {
      const { id: ws } = await local.workspace();
      const a = await local.repository(ws, "https://github.com/acme/a.git");
      const b = await local.repository(ws, "https://github.com/acme/b.git");
      const kept = await local.group(ws, [b.id], "kept");
      const g = await local.group(ws, [a.id, b.id], "doomed");
      await t.repositories.deleteRepositoryGroup({ id: g.id });
      expect((await allGroups(ws)).map((x) => x.id)).toEqual([kept.id]);
      expect((await allRepositories(ws)).map((r) => r.id)).toEqual([a.id, b.id]);
      await expectCode(t.repositories.deleteRepositoryGroup({ id: g.id }), Code.NotFound);
      await expectCode(t.repositories.updateRepositoryGroup({ id: g.id, name: "back" }), Code.NotFound);
      // a is in no named group now.
      await t.repositories.removeRepository({ id: a.id });
    });

    it("refuses a malformed id on delete and answers an unknown one with NotFound", async () => {
      await expectInvalid(t.repositories.deleteRepositoryGroup({ id: "" }), "id");
      await expectInvalid(t.repositories.deleteRepositoryGroup({ id: "g" }), "id");
      await expectCode(t.repositories.deleteRepositoryGroup({ id: UNKNOWN_ID }), Code.NotFound);
    });

    it("validates List and answers an unknown workspace with NotFound", async () => {
      await expectInvalid(t.repositories.listRepositoryGroups({ workspaceId: "" }), "workspace_id");
      await expectInvalid(t.repositories.listRepositoryGroups({ workspaceId: "w" }), "workspace_id");
      await expectCode(t.repositories.listRepositoryGroups({ workspaceId: UNKNOWN_ID }), Code.NotFound);
      const { id: ws } = await local.workspace();
      await expectInvalid(t.repositories.listRepositoryGroups({ workspaceId: ws, pageSize: -1 }), "page_size");
      await expectInvalid(t.repositories.listRepositoryGroups({ workspaceId: ws, pageToken: "garbage" }), "page_token");
    });

    it("pages through 25 groups 10 at a time, oldest first, with nothing repeated or missing", async () => {
      const { id: ws } = await local.workspace();
      const { id: other } = await local.workspace();
      const repos: Repository[] = [];
      for (let i = 0; i < 25; i++) repos.push(await local.repository(ws, `https://github.com/acme/g${i}.git`));
      const foreignRepo = await local.repository(other, "https://github.com/acme/other.git");
      await local.group(other, [foreignRepo.id], "elsewhere");
      const created: RepositoryGroup[] = [];
      for (let i = 0; i < 25; i++) created.push(await local.group(ws, [repos[i]!.id], i % 2 === 0 ? "" : `group-${i}`));

      const pages: RepositoryGroup[][] = [];
      const tokens: string[] = [];
      let pageToken = "";
      do {
        const res = await t.repositories.listRepositoryGroups({ workspaceId: ws, pageSize: 10, pageToken });
        pages.push(res.repositoryGroups);
        tokens.push(res.nextPageToken);
        pageToken = res.nextPageToken;
      } while (pageToken !== "" && pages.length < 10);
      expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
      expect(tokens.map((x) => x !== "")).toEqual([true, true, false]);
      expect(new Set(pages.flat().map((g) => g.id)).size).toBe(25);
      expect(pages.flat()).toEqual(created);

      // A group-list token from one workspace is refused for another.
      const first = await t.repositories.listRepositoryGroups({ workspaceId: ws, pageSize: 10 });
      await expectInvalid(t.repositories.listRepositoryGroups({ workspaceId: other, pageToken: first.nextPageToken }), "page_token");
      await expectInvalid(t.repositories.listRepositories({ workspaceId: ws, pageToken: first.nextPageToken }), "page_token");
    });
  });
});
