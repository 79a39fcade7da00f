// Worker identity: registration tokens (AuthService), their exchange for a worker credential
// (WorkerService.RegisterWorker), what that credential may call, and what the database keeps of
// either secret — in multi-user mode with an OpenID provider, and in single-user mode, on both
// databases.
import { randomBytes } from "node:crypto";
import { toJsonString } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AuthService,
  ListWorkerRegistrationTokensResponseSchema,
  type WorkerRegistrationToken,
} from "../../gen/foreman/v1/auth_pb.js";
import { AgentType } from "../../gen/foreman/v1/common_pb.js";
import { WorkerService, type RegisterWorkerResponse } from "../../gen/foreman/v1/worker_pb.js";
import { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import { hashToken } from "../../src/auth/opaque-token.js";
import { LOCAL_USER_ID } from "../../src/model/users.js";
import { DIALECTS } from "../helpers/databases.js";
import { registerWorker, signIn as signInAs, type RegisterInit, type User } from "../helpers/fixtures.js";
import { clientWith, startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { UNKNOWN_ID, expectCode, expectInvalid } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** The server's configured worker registration token (48 characters). */
const CONFIGURED_REGISTRATION_TOKEN = "configured-worker-registration-token-0123456789a";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_TTL_SECONDS = 365 * 86_400;


/** A call that passed authentication: a heartbeat that holds no leases. */
async function expectAuthenticated(worker: Client<typeof WorkerService>): Promise<void> {
  const res = await worker.heartbeat({});
  expect(res.lostSessionIds).toEqual([]);
  expect(res.heartbeatIntervalSeconds).toBeGreaterThan(0);
}

describe.each(DIALECTS)("worker identity on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  /** Every plaintext secret handed out, to look for in the database. */
  const secrets = new Set<string>([CONFIGURED_REGISTRATION_TOKEN]);

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startMultiUserServer(dialect, provider, { FOREMAN_WORKER_REGISTRATION_TOKEN: CONFIGURED_REGISTRATION_TOKEN });
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  const db = () => t.server.db.kysely;

  const signIn = (sub: string): Promise<User> => signInAs(t, provider, sub);

  /** A registration token of the user's, its secret noted to look for in the database. */
  async function createToken(user: User, name: string, ttlSeconds = 0): Promise<{ token: WorkerRegistrationToken; secret: string }> {
    const made = await user.registrationToken(name, ttlSeconds);
    secrets.add(made.secret);
    return made;
  }

  async function tokenOf(user: User, id: string): Promise<WorkerRegistrationToken | undefined> {
    const { tokens } = await user.auth.listWorkerRegistrationTokens({ pageSize: 1000 });
    return tokens.find((token) => token.id === id);
  }

  /** RegisterWorker the way a worker daemon calls it: no Authorization header. */
  const registerCall = (registrationToken: string, init: RegisterInit = {}): Promise<RegisterWorkerResponse> =>
    registerWorker(t, registrationToken, init);

  /** A registered worker, its credential noted to look for in the database. */
  async function register(registrationToken: string, init: RegisterInit = {}): Promise<RegisterWorkerResponse> {
    const res = await registerCall(registrationToken, init);
    secrets.add(res.workerToken);
    return res;
  }

  async function workerRow(id: string) {
    return db().selectFrom("workers").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
  }

  async function workerCount(): Promise<number> {
    return (await db().selectFrom("workers").select("id").execute()).length;
  }

  describe("registration tokens", () => {
    it("returns the secret once, at creation; List shows the token with its times and without the secret", async () => {
      const alice = await signIn("alice-create");
      const before = Date.now();
      const { token, secret } = await createToken(alice, "  build box  ", 3600);
      const after = Date.now();

      expect(secret).toMatch(/^fwr_[A-Za-z0-9_-]{43}$/);
      expect(token.id).toMatch(UUID);
      expect(token.name).toBe("build box");
      const created = timestampDate(token.createTime!).getTime();
      expect(created).toBeGreaterThanOrEqual(before);
      expect(created).toBeLessThanOrEqual(after);
      expect(timestampDate(token.expireTime!).getTime() - created).toBe(3600 * 1000);
      expect(token.revokeTime).toBeUndefined();
      expect(token.lastUseTime).toBeUndefined();

      const { token: forever, secret: other } = await createToken(alice, "no expiry");
      expect(forever.expireTime).toBeUndefined();
      expect(other).not.toBe(secret);

      const list = await alice.auth.listWorkerRegistrationTokens({});
      expect(list.tokens).toEqual([token, forever]);
      expect(list.nextPageToken).toBe("");
      const json = toJsonString(ListWorkerRegistrationTokensResponseSchema, list);
      for (const s of [secret, other]) {
        expect(json).not.toContain(s);
        expect(json).not.toContain(s.slice("fwr_".length));
      }
    });

    it("accepts a name of 100 characters and a ttl of a year", async () => {
      const user = await signIn("boundaries");
      const { token } = await createToken(user, "é".repeat(100), MAX_TTL_SECONDS);
      expect(token.name).toBe("é".repeat(100));
      expect(timestampDate(token.expireTime!).getTime() - timestampDate(token.createTime!).getTime()).toBe(MAX_TTL_SECONDS * 1000);
    });

    it("pages through a user's tokens oldest first, and each user sees and revokes only their own", async () => {
      const alice = await signIn("alice-pages");
      const bob = await signIn("bob-pages");
      const mine: WorkerRegistrationToken[] = [];
      for (let i = 0; i < 5; i++) mine.push((await createToken(alice, `token ${i}`)).token);
      const { token: bobs, secret: bobSecret } = await createToken(bob, "bob's");

      const pages: WorkerRegistrationToken[][] = [];
      let pageToken = "";
      do {
        const res = await alice.auth.listWorkerRegistrationTokens({ pageSize: 2, pageToken });
        pages.push(res.tokens);
        pageToken = res.nextPageToken;
        expect(pages.length).toBeLessThan(10);
      } while (pageToken !== "");
      expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
      expect(pages.flat()).toEqual(mine);

      expect((await bob.auth.listWorkerRegistrationTokens({})).tokens).toEqual([bobs]);
      await expectCode(bob.auth.revokeWorkerRegistrationToken({ id: mine[0]!.id }), Code.NotFound);
      await expectCode(alice.auth.revokeWorkerRegistrationToken({ id: bobs.id }), Code.NotFound);
      expect((await tokenOf(alice, mine[0]!.id))?.revokeTime).toBeUndefined();
      expect((await tokenOf(bob, bobs.id))?.revokeTime).toBeUndefined();
      // Bob's token still registers workers, for bob.
      const worker = await register(bobSecret);
      expect((await workerRow(worker.workerId)).owner_id).toBe(bob.id);

      await expectInvalid(alice.auth.listWorkerRegistrationTokens({ pageToken: "not-a-page-token" }), "page_token");
      await expectInvalid(alice.auth.listWorkerRegistrationTokens({ pageSize: -1 }), "page_size");
    });

    describe("refuses an invalid CreateWorkerRegistrationToken, naming the field", () => {
      let user: User;
      beforeAll(async () => {
        user = await signIn("create-validation");
      });

      it.each([
        ["an empty name", { name: "" }, ["name"]],
        ["a blank name", { name: " \t " }, ["name"]],
        ["a name of 101 characters", { name: "x".repeat(101) }, ["name"]],
        ["a name of two lines", { name: "two\nlines" }, ["name"]],
        ["a name with a tab", { name: "a\tb" }, ["name"]],
        ["a control character in the name", { name: "bell\u0007" }, ["name"]],
        ["a negative ttl", { name: "ok", ttlSeconds: -1 }, ["ttl_seconds"]],
        ["a ttl over a year", { name: "ok", ttlSeconds: MAX_TTL_SECONDS + 1 }, ["ttl_seconds"]],
        ["both at once", { name: "", ttlSeconds: -5 }, ["name", "ttl_seconds"]],
      ])("%s", async (_label, request, fields) => {
        await expectInvalid(user.auth.createWorkerRegistrationToken(request), ...fields);
        expect((await user.auth.listWorkerRegistrationTokens({})).tokens).toEqual([]);
      });
    });

    it("revokes by id once (a second revoke keeps the first time), and refuses a malformed id", async () => {
      const user = await signIn("revoker");
      const { token } = await createToken(user, "to revoke");
      await expectInvalid(user.auth.revokeWorkerRegistrationToken({ id: "not-a-uuid" }), "id");
      await expectInvalid(user.auth.revokeWorkerRegistrationToken({ id: "" }), "id");
      await expectCode(user.auth.revokeWorkerRegistrationToken({ id: UNKNOWN_ID }), Code.NotFound);
      expect((await tokenOf(user, token.id))?.revokeTime).toBeUndefined();

      await user.auth.revokeWorkerRegistrationToken({ id: token.id.toUpperCase() });
      const revoked = await tokenOf(user, token.id);
      expect(revoked?.revokeTime).toBeDefined();
      await user.auth.revokeWorkerRegistrationToken({ id: token.id });
      expect((await tokenOf(user, token.id))?.revokeTime).toEqual(revoked?.revokeTime);
    });
  });

  describe("RegisterWorker", () => {
    it("exchanges a user's registration token for a worker credential, and records the token's use", async () => {
      const alice = await signIn("alice-register");
      const { token, secret } = await createToken(alice, "laptop");
      const res = await register(secret, {
        name: " builder-1 ",
        hostname: "box.local",
        version: "1.2.3",
        agentTypes: [AgentType.CLAUDE_CODE, AgentType.CODEX, AgentType.CLAUDE_CODE],
        labels: { gpu: "a100", "zone/eu.west_1-b": "yes" },
        maxConcurrentSessions: 0,
      });

      expect(res.workerId).toMatch(UUID);
      expect(res.workerToken).toMatch(/^fwk_[A-Za-z0-9_-]{43}$/);
      expect(res.heartbeatIntervalSeconds).toBeGreaterThan(0);
      expect(res.maxPollSeconds).toBeGreaterThan(0);

      const row = await workerRow(res.workerId);
      expect(row.owner_id).toBe(alice.id);
      expect(row.registration_token_id).toBe(token.id);
      expect(row.name).toBe("builder-1");
      expect(row.hostname).toBe("box.local");
      expect(row.version).toBe("1.2.3");
      expect(row.status).toBe("active");
      const json = (v: unknown) => (typeof v === "string" ? JSON.parse(v) : v);
      expect(json(row.agent_types)).toEqual(["claude_code", "codex"]);
      expect(json(row.labels)).toEqual({ gpu: "a100", "zone/eu.west_1-b": "yes" });
      expect(row.max_concurrent_sessions).toBe(1);

      const used = await tokenOf(alice, token.id);
      expect(used?.lastUseTime).toBeDefined();
      const lastUse = timestampDate(used!.lastUseTime!).getTime();
      expect(lastUse).toBeGreaterThanOrEqual(timestampDate(token.createTime!).getTime());
      expect(lastUse).toBeLessThanOrEqual(Date.now());

      // A second registration moves last_use_time on (or keeps it, within one millisecond).
      await register(secret, { name: "builder-2" });
      const usedAgain = await tokenOf(alice, token.id);
      expect(timestampDate(usedAgain!.lastUseTime!).getTime()).toBeGreaterThanOrEqual(lastUse);
    });

    it("accepts the server's configured registration token; such a worker has no owner", async () => {
      const res = await register(CONFIGURED_REGISTRATION_TOKEN, { name: "shared" });
      expect(res.workerToken).toMatch(/^fwk_/);
      const row = await workerRow(res.workerId);
      expect(row.owner_id).toBeNull();
      expect(row.registration_token_id).toBeNull();
      await expectAuthenticated(clientWith(t, WorkerService, res.workerToken));
    });

    it("accepts names, labels and sessions at their limits", async () => {
      const user = await signIn("register-limits");
      const { secret } = await createToken(user, "limits");
      const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, "v".repeat(255)]));
      labels["x".repeat(63)] = "long key";
      delete labels.k0;
      const res = await register(secret, {
        name: "😀".repeat(100),
        hostname: "h".repeat(255),
        version: "v".repeat(100),
        agentTypes: Object.values(AgentType).filter((v): v is AgentType => typeof v === "number" && v !== AgentType.UNSPECIFIED),
        labels,
        maxConcurrentSessions: 64,
      });
      const row = await workerRow(res.workerId);
      expect(row.max_concurrent_sessions).toBe(64);
      expect(row.name).toBe("😀".repeat(100));
      const agentTypes: unknown = typeof row.agent_types === "string" ? JSON.parse(row.agent_types) : row.agent_types;
      expect(agentTypes).toEqual(["claude_code", "codex", "gemini_cli", "opencode", "aider", "amp", "command"]);
    });

    describe("refuses a registration token that is not live, with Unauthenticated and no worker", () => {
      let user: User;
      beforeAll(async () => {
        user = await signIn("dead-tokens");
      });

      async function refused(registrationToken: string): Promise<void> {
        const before = await workerCount();
        const error = await expectCode(registerCall(registrationToken), Code.Unauthenticated);
        expect(error.rawMessage).toContain("registration");
        expect(await workerCount()).toBe(before);
      }

      it("a revoked token", async () => {
        const { token, secret } = await createToken(user, "revoked");
        await user.auth.revokeWorkerRegistrationToken({ id: token.id });
        await refused(secret);
        expect((await tokenOf(user, token.id))?.lastUseTime).toBeUndefined();
      });

      it("an expired token", async () => {
        const { token, secret } = await createToken(user, "expired", 3600);
        await register(secret, { name: "while it lived" });
        const expiredAt = new Date(Date.now() - 60_000).toISOString();
        await db().updateTable("worker_registration_tokens").set({ expires_at: expiredAt }).where("id", "=", token.id).execute();
        await refused(secret);
        expect(timestampDate((await tokenOf(user, token.id))!.expireTime!).toISOString()).toBe(expiredAt);
      });

      it.each([
        ["an unknown token", () => `fwr_${randomBytes(32).toString("base64url")}`],
        ["an empty token", () => ""],
        ["a string that is no Foreman token", () => "hello"],
        ["the configured token with one more character", () => `${CONFIGURED_REGISTRATION_TOKEN}x`],
        ["the configured token with one less character", () => CONFIGURED_REGISTRATION_TOKEN.slice(0, -1)],
      ])("%s", async (_label, token) => {
        await refused(token());
      });

      it("a worker credential or a user's access token in place of a registration token", async () => {
        const { secret } = await createToken(user, "live");
        const worker = await register(secret);
        await refused(worker.workerToken);
        await refused(user.accessToken);
      });
    });

    describe("refuses an invalid registration with InvalidArgument naming the field, and no worker", () => {
      let user: User;
      let live: { token: WorkerRegistrationToken; secret: string };
      beforeAll(async () => {
        user = await signIn("register-validation");
        live = await createToken(user, "validation");
      });

      const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
      it.each<[string, RegisterInit, string[]]>([
        ["an empty name", { name: "" }, ["name"]],
        ["a blank name", { name: "   " }, ["name"]],
        ["a name of two lines", { name: "two\nlines" }, ["name"]],
        ["a name of 101 characters", { name: "n".repeat(101) }, ["name"]],
        ["a hostname of two lines", { hostname: "a\nb" }, ["hostname"]],
        ["a version of 101 characters", { version: "v".repeat(101) }, ["version"]],
        ["a label key with a space", { labels: { "bad key": "v" } }, ["labels"]],
        ["an empty label key", { labels: { "": "v" } }, ["labels"]],
        ["a label key starting with '-'", { labels: { "-lead": "v" } }, ["labels"]],
        ["a label key of 64 characters", { labels: { ["k".repeat(64)]: "v" } }, ["labels"]],
        ["a label value of two lines", { labels: { ok: "two\nlines" } }, ["labels"]],
        ["a label value of 256 characters", { labels: { ok: "v".repeat(256) } }, ["labels"]],
        ["65 labels", { labels: many }, ["labels"]],
        ["AGENT_TYPE_UNSPECIFIED", { agentTypes: [AgentType.UNSPECIFIED] }, ["agent_types"]],
        ["an agent type the enum does not have", { agentTypes: [AgentType.CODEX, 99 as AgentType] }, ["agent_types"]],
        ["negative max_concurrent_sessions", { maxConcurrentSessions: -1 }, ["max_concurrent_sessions"]],
        ["max_concurrent_sessions over 64", { maxConcurrentSessions: 65 }, ["max_concurrent_sessions"]],
        [
          "several at once",
          { name: "", maxConcurrentSessions: -1, agentTypes: [AgentType.UNSPECIFIED] },
          ["agent_types", "max_concurrent_sessions", "name"],
        ],
      ])("%s", async (_label, init, fields) => {
        const before = await workerCount();
        await expectInvalid(registerCall(live.secret, init), ...fields);
        expect(await workerCount()).toBe(before);
      });

      it("used the token for none of them", async () => {
        expect((await tokenOf(user, live.token.id))?.lastUseTime).toBeUndefined();
        const rows = await db().selectFrom("workers").select("id").where("registration_token_id", "=", live.token.id).execute();
        expect(rows).toEqual([]);
      });
    });

    it("registers 10 workers at once with one token, each with its own id and credential", async () => {
      const user = await signIn("concurrent");
      const { token, secret } = await createToken(user, "fleet");
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => register(secret, { name: `fleet-${i}` })));
      expect(new Set(results.map((r) => r.workerId)).size).toBe(10);
      expect(new Set(results.map((r) => r.workerToken)).size).toBe(10);
      const rows = await db().selectFrom("workers").select(["id", "name"]).where("registration_token_id", "=", token.id).execute();
      expect(rows.map((r) => r.id).sort()).toEqual(results.map((r) => r.workerId).sort());
      expect(rows.map((r) => r.name).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `fleet-${i}`).sort());
      for (const r of results) await expectAuthenticated(clientWith(t, WorkerService, r.workerToken));
    });
  });

  describe("worker credentials", () => {
    it("call WorkerService only, until UnregisterWorker ends them", async () => {
      const user = await signIn("credential");
      const { secret } = await createToken(user, "credential");
      const res = await register(secret, { name: "short-lived" });
      const sibling = await register(secret, { name: "sibling" });
      const worker = clientWith(t, WorkerService, res.workerToken);

      await expectAuthenticated(worker);
      await worker.acknowledgeCommands({});
      await expectCode(clientWith(t, WorkspaceService, res.workerToken).listWorkspaces({}), Code.PermissionDenied);
      await expectCode(clientWith(t, AuthService, res.workerToken).getCurrentUser({}), Code.PermissionDenied);

      await worker.unregisterWorker({});
      const row = await workerRow(res.workerId);
      expect(row.status).toBe("unregistered");
      expect(row.unregistered_at).not.toBeNull();

      await expectCode(worker.getTask({}), Code.Unauthenticated);
      await expectCode(worker.unregisterWorker({}), Code.Unauthenticated);
      await expectCode(clientWith(t, WorkspaceService, res.workerToken).listWorkspaces({}), Code.Unauthenticated);
      // Only that worker: another one from the same token keeps working.
      await expectAuthenticated(clientWith(t, WorkerService, sibling.workerToken));

      // A worker that registers again while still sending its old credential is let through, and
      // since that credential was unregistered, which ends an identity, it is a new worker.
      const again = await worker.registerWorker({ registrationToken: secret, name: "short-lived" });
      secrets.add(again.workerToken);
      expect(again.workerId).not.toBe(res.workerId);
      await expectAuthenticated(clientWith(t, WorkerService, again.workerToken));
    });

    it("refuses an unknown or malformed credential, and a missing one", async () => {
      await expectCode(clientWith(t, WorkerService, `fwk_${randomBytes(32).toString("base64url")}`).getTask({}), Code.Unauthenticated);
      await expectCode(clientWith(t, WorkerService, "two words").getTask({}), Code.Unauthenticated);
      await expectCode(clientWith(t, WorkerService, undefined).getTask({}), Code.Unauthenticated);
      await expectCode(clientWith(t, WorkerService, undefined).unregisterWorker({}), Code.Unauthenticated);
    });

    it("keep working after their registration token is revoked (current design); the token registers no more", async () => {
      const user = await signIn("revoke-keeps-workers");
      const { token, secret } = await createToken(user, "to revoke");
      const res = await register(secret);
      await user.auth.revokeWorkerRegistrationToken({ id: token.id });

      await expectAuthenticated(clientWith(t, WorkerService, res.workerToken));
      expect((await workerRow(res.workerId)).status).toBe("active");
      await expectCode(registerCall(secret), Code.Unauthenticated);
    });
  });

  it("stores only hashes: no row of workers or worker_registration_tokens holds a secret in plain text", async () => {
    const user = await signIn("at-rest");
    const { token, secret } = await createToken(user, "at rest");
    const res = await register(secret);
    const tokenRow = await db().selectFrom("worker_registration_tokens").selectAll().where("id", "=", token.id).executeTakeFirstOrThrow();
    expect(tokenRow.token_hash).toBe(hashToken(secret));
    expect((await workerRow(res.workerId)).credential_hash).toBe(hashToken(res.workerToken));

    const rows = [
      ...(await db().selectFrom("worker_registration_tokens").selectAll().execute()),
      ...(await db().selectFrom("workers").selectAll().execute()),
    ];
    expect(rows.length).toBeGreaterThan(20);
    expect(secrets.size).toBeGreaterThan(20);
    const leaks: string[] = [];
    for (const row of rows) {
      const text = JSON.stringify(row);
      for (const s of secrets) {
        // The random part alone too: a prefix stripped before storing would hide nothing.
        if (text.includes(s) || text.includes(s.replace(/^fw[rk]_/, ""))) leaks.push(`${row.id}: ${s.slice(0, 8)}…`);
      }
    }
    expect(leaks).toEqual([]);
  });

  describe("in single-user mode", () => {
    let single: TestServer;
    beforeAll(async () => {
      single = await startTestServer(dialect);
    });
    afterAll(async () => {
      await single?.close();
    });

    it("WorkerService needs a worker credential, and WorkspaceService none", async () => {
      const anonymous = clientWith(single, WorkerService, undefined);
      await expectCode(anonymous.getTask({}), Code.Unauthenticated);
      await expectCode(anonymous.heartbeat({}), Code.Unauthenticated);
      await expectCode(anonymous.unregisterWorker({}), Code.Unauthenticated);
      // There are no user credentials to check here, so any other bearer is not a worker's.
      await expectCode(clientWith(single, WorkerService, "anything").getTask({}), Code.PermissionDenied);
      await expectCode(clientWith(single, WorkerService, "fwk_unknown").getTask({}), Code.Unauthenticated);

      const { workspace } = await single.workspaces.createWorkspace({ name: "local" });
      expect((await single.workspaces.listWorkspaces({})).workspaces.map((w) => w.id)).toContain(workspace!.id);
    });

    it("a token the local user creates registers a worker whose credential works", async () => {
      const auth = clientWith(single, AuthService, undefined);
      const { token, secret } = await auth.createWorkerRegistrationToken({ name: "local" });
      expect(secret).toMatch(/^fwr_/);
      const res = await clientWith(single, WorkerService, undefined).registerWorker({ registrationToken: secret, name: "local worker" });
      const row = await single.server.db.kysely.selectFrom("workers").selectAll().where("id", "=", res.workerId).executeTakeFirstOrThrow();
      expect(row.owner_id).toBe(LOCAL_USER_ID);
      expect(row.registration_token_id).toBe(token!.id);

      const worker = clientWith(single, WorkerService, res.workerToken);
      await expectAuthenticated(worker);
      await expectCode(clientWith(single, WorkspaceService, res.workerToken).listWorkspaces({}), Code.PermissionDenied);
      await worker.unregisterWorker({});
      await expectCode(worker.getTask({}), Code.Unauthenticated);
    });
  });
});
