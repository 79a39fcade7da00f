// Remote URLs that point at the server itself, a link-local or private network, or a reserved
// address: the server will fetch them, so in multi-user mode AddRepository refuses them unless
// FOREMAN_ALLOW_PRIVATE_REMOTES=true, and single-user mode takes them unless it is false.
// Through the real server over HTTP with the generated client, on both databases.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIALECTS } from "../helpers/databases.js";
import { caller, signIn, type Caller } from "../helpers/fixtures.js";
import { startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { expectInvalid } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const PRIVATE: [string, RegExp][] = [
  ["http://127.0.0.1:8418/git/a.git", /loopback/],
  ["https://[::1]/x/b.git", /loopback/],
  ["http://localhost/x/c.git", /loopback/],
  ["ssh://git@build.localhost/x/d.git", /loopback/],
  ["http://169.254.169.254/latest/meta-data", /link-local/],
  ["https://[fe80::1]/x/e.git", /link-local/],
  ["http://10.1.2.3/x/f.git", /private/],
  ["http://172.16.0.1/x/g.git", /private/],
  ["git@192.168.1.1:x/h.git", /private/],
  ["http://100.64.0.1/x/i.git", /private/],
  ["https://[fd00::1]/x/j.git", /private/],
  ["http://0.0.0.0/x/k.git", /reserved/],
  ["https://[::ffff:127.0.0.1]/x/l.git", /loopback/],
  ["http://2130706433/x/m.git", /loopback/],
  ["http://0x7f.1/x/n.git", /loopback/],
  ["ssh://017700000001/x/o.git", /loopback/],
];

describe.each(DIALECTS)("private remotes on %s", (dialect) => {
  let provider: TestProvider;
  const servers: TestServer[] = [];

  beforeAll(async () => {
    provider = await startOidcProvider();
  });

  afterAll(async () => {
    for (const server of servers) await server.close();
    await provider?.close();
  });

  async function multiUser(extra: Record<string, string> = {}): Promise<Caller> {
    const t = await startMultiUserServer(dialect, provider, extra);
    servers.push(t);
    return signIn(t, provider, { sub: `user-${randomUUID()}` });
  }

  async function singleUser(extra: Record<string, string> = {}): Promise<Caller> {
    const t = await startTestServer(dialect, extra);
    servers.push(t);
    return caller(t);
  }

  describe("multi-user mode", () => {
    let c: Caller;
    beforeAll(async () => {
      c = await multiUser();
    });

    it.each(PRIVATE)("refuses %s, saying why and how to allow it", async (remoteUrl, why) => {
      const { id: ws } = await c.workspace();
      const err = await expectInvalid(c.repositories.addRepository({ workspaceId: ws, remoteUrl, name: "r" }), "remote_url");
      expect(err.rawMessage).toMatch(why);
      expect(err.rawMessage).toContain("FOREMAN_ALLOW_PRIVATE_REMOTES=true");
      expect((await c.repositories.listRepositories({ workspaceId: ws })).repositories).toEqual([]);
    });

    it("refuses a folder on the server's machine, even with FOREMAN_ALLOW_PRIVATE_REMOTES=true", async () => {
      const open = await multiUser({ FOREMAN_ALLOW_PRIVATE_REMOTES: "true" });
      for (const who of [c, open]) {
        const { id: ws } = await who.workspace();
        for (const remoteUrl of ["/srv/git/repo.git", "file:///srv/git/repo.git"]) {
          const err = await expectInvalid(who.repositories.addRepository({ workspaceId: ws, remoteUrl }), "remote_url");
          expect(err.rawMessage).toContain("only single-user mode");
        }
        expect((await who.repositories.listRepositories({ workspaceId: ws })).repositories).toEqual([]);
      }
    });

    it("accepts public hosts, also as addresses", async () => {
      const { id: ws } = await c.workspace();
      for (const remoteUrl of ["https://github.com/acme/a.git", "http://8.8.8.8/x/b.git", "https://[2606:4700::1111]/x/c.git", "git@gitlab.com:acme/d.git"]) {
        const { repository } = await c.repositories.addRepository({ workspaceId: ws, remoteUrl });
        expect(repository?.remoteUrl).toBe(remoteUrl);
      }
    });
  });

  it("multi-user mode with FOREMAN_ALLOW_PRIVATE_REMOTES=true accepts them", async () => {
    const c = await multiUser({ FOREMAN_ALLOW_PRIVATE_REMOTES: "true" });
    const { id: ws } = await c.workspace();
    for (const [remoteUrl] of PRIVATE) {
      const { repository } = await c.repositories.addRepository({ workspaceId: ws, remoteUrl, name: `r-${randomUUID().slice(0, 8)}` });
      expect(repository).toBeDefined();
    }
  });

  it("single-user mode accepts them, and refuses them with FOREMAN_ALLOW_PRIVATE_REMOTES=false", async () => {
    const open = await singleUser();
    const { id: ws } = await open.workspace();
    for (const [remoteUrl] of PRIVATE) {
      const { repository } = await open.repositories.addRepository({ workspaceId: ws, remoteUrl, name: `r-${randomUUID().slice(0, 8)}` });
      expect(repository).toBeDefined();
    }
    const closed = await singleUser({ FOREMAN_ALLOW_PRIVATE_REMOTES: "false" });
    const { id: other } = await closed.workspace();
    for (const [remoteUrl, why] of PRIVATE) {
      const err = await expectInvalid(closed.repositories.addRepository({ workspaceId: other, remoteUrl, name: "r" }), "remote_url");
      expect(err.rawMessage).toMatch(why);
    }
  });
});
