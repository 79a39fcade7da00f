// Multi-user login through a real OpenID provider (oauth2-mock-server) and the real server over
// HTTP with the generated client, once per database dialect: the authorization-code flow with
// PKCE, Foreman's access and refresh tokens, rotation with reuse detection, logout, refused
// tokens and logins, what is stored and logged, an unreachable provider, and single-user mode.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import { OAuth2Server } from "oauth2-mock-server";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AuthService, type TokenSet, type User } from "../../gen/foreman/v1/auth_pb.js";
import { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import type { DialectName } from "../../src/db/dialect.js";
import { DIALECTS } from "../helpers/databases.js";
import {
  authorize,
  clientWith,
  login,
  movableClock,
  multiUserEnv,
  REDIRECT_URI,
  startMultiUserServer,
  startOidcProvider,
  TEST_JWT_SECRET,
  type Identity,
  type TestProvider,
} from "../helpers/oidc.js";
import { expectCode, expectError, expectInvalid, rpcError } from "../helpers/rpc-errors.js";
import { MAX_LOGINS_IN_PROGRESS } from "../../src/core/logins.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Expects Unauthenticated (reason UNAUTHENTICATED) with a message containing `fragment`. */
function expectUnauthenticated(call: Promise<unknown>, fragment: string): Promise<ConnectError> {
  return expectError(call, { code: Code.Unauthenticated, reason: "UNAUTHENTICATED", message: fragment });
}

/** A fresh identity at the provider: a `sub` no other test uses. */
let people = 0;
function person(label: string): Identity {
  people += 1;
  return { sub: `${label}-${people}-${randomUUID()}`, email: `${label}.${people}@example.com`, name: `${label} ${people}` };
}

function sha256(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

function ms(timestamp: Timestamp | undefined): number {
  expect(timestamp).toBeDefined();
  return timestampDate(timestamp!).getTime();
}

/** An access token signed like the server's, with the claims changed as asked. */
async function forgeAccessToken(
  claims: { sub: string; fam: string },
  change: { iss?: string; aud?: string; iat?: number; exp?: number; secret?: string; now?: number } = {},
): Promise<string> {
  const now = change.now ?? Math.floor(Date.now() / 1000);
  return new SignJWT({ fam: claims.fam })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(change.iss ?? "foreman")
    .setAudience(change.aud ?? "foreman-api")
    .setSubject(claims.sub)
    .setJti(randomUUID())
    .setIssuedAt(change.iat ?? now)
    .setExpirationTime(change.exp ?? now + 600)
    .sign(new TextEncoder().encode(change.secret ?? TEST_JWT_SECRET));
}

describe.each(DIALECTS)("login through the OpenID provider on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  // The server's clock: the wall clock until a test moves it past the refresh-token grace.
  const clock = movableClock();
  /** The server's time in whole seconds, as access tokens count it. */
  const seconds = () => Math.floor(clock.now().getTime() / 1000);
  const forge = (claims: { sub: string; fam: string }, change: Parameters<typeof forgeAccessToken>[1] = {}) =>
    forgeAccessToken(claims, { now: seconds(), ...change });

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startMultiUserServer(dialect, provider, {}, { clock: clock.now });
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  afterEach(() => {
    provider.tamperIdToken = undefined;
  });

  const auth = (token?: string) => clientWith(t, AuthService, token);
  const workspaces = (token?: string) => clientWith(t, WorkspaceService, token);

  /** Logs in as `identity`; a new login (refresh-token family) each time. */
  async function signIn(identity: Identity): Promise<{ user: User; tokens: TokenSet }> {
    const res = await login(t, provider, identity);
    expect(res.user).toBeDefined();
    expect(res.tokens).toBeDefined();
    return { user: res.user!, tokens: res.tokens! };
  }

  /** GetLoginUrl and the provider's redirect, stopping before HandleCallback. */
  async function beginLogin(identity: Identity): Promise<{ code: string; state: string }> {
    provider.identity = identity;
    const { url, state } = await auth().getLoginUrl({ redirectUri: REDIRECT_URI });
    const back = await authorize(url);
    expect(back.state).toBe(state);
    expect(back.code).not.toBe("");
    return { code: back.code, state };
  }

  async function rotate(refreshToken: string): Promise<TokenSet> {
    const { tokens } = await auth().refreshToken({ refreshToken });
    expect(tokens).toBeDefined();
    return tokens!;
  }

  /** Resolves when the access token is accepted. */
  async function accepted(accessToken: string): Promise<void> {
    await workspaces(accessToken).listWorkspaces({});
  }

  const usersWithSubject = async (sub: string) =>
    (await t.server.db.kysely.selectFrom("users").select("id").where("subject", "=", sub).execute()).length;

  const refreshTokenRows = async () =>
    Number((await t.server.db.kysely.selectFrom("refresh_tokens").select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);

  describe("the whole login", () => {
    it("sends the browser to the provider with PKCE (S256), state, nonce, redirect_uri and scopes", async () => {
      const before = Date.now();
      const res = await auth().getLoginUrl({ redirectUri: REDIRECT_URI });
      const after = Date.now();

      const url = new URL(res.url);
      expect(`${url.origin}${url.pathname}`).toBe(`${provider.issuer}/authorize`);
      const q = url.searchParams;
      expect(q.get("response_type")).toBe("code");
      expect(q.get("client_id")).toBe("foreman-web");
      expect(q.get("redirect_uri")).toBe(REDIRECT_URI);
      expect(q.get("scope")?.split(" ").sort()).toEqual(["email", "openid", "profile"]);
      expect(q.get("state")).toBe(res.state);
      expect(res.state.length).toBeGreaterThanOrEqual(22);
      expect(q.get("nonce")).toMatch(/^[A-Za-z0-9_-]{22,}$/);
      expect(q.get("code_challenge_method")).toBe("S256");
      expect(q.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/);

      const ttl = t.config.auth.loginTtlSeconds * 1000;
      expect(ms(res.expireTime)).toBeGreaterThanOrEqual(before + ttl);
      expect(ms(res.expireTime)).toBeLessThanOrEqual(after + ttl);

      // The challenge is S256 of the verifier the server kept, which never leaves it.
      const pending = await t.server.db.kysely.selectFrom("auth_states").selectAll().where("state", "=", res.state).executeTakeFirstOrThrow();
      expect(q.get("code_challenge")).toBe(createHash("sha256").update(pending.code_verifier).digest("base64url"));
      expect(q.get("nonce")).toBe(pending.nonce);
      expect(pending.redirect_uri).toBe(REDIRECT_URI);
      expect(res.url).not.toContain(pending.code_verifier);
    });

    it("returns the user and tokens that work on the API, and GetCurrentUser names the same user", async () => {
      const alice = person("alice");
      const { code, state } = await beginLogin(alice);
      const before = Date.now();
      const res = await auth().handleCallback({ code, state, redirectUri: REDIRECT_URI });
      const after = Date.now();

      const user = res.user!;
      expect(user.id).toMatch(UUID);
      expect(user.email).toBe(alice.email);
      expect(user.name).toBe(alice.name);
      expect(user.issuer).toBe(provider.issuer);
      expect(ms(user.createTime)).toBeGreaterThanOrEqual(before);
      expect(ms(user.createTime)).toBeLessThanOrEqual(after);

      const tokens = res.tokens!;
      expect(tokens.refreshToken).toMatch(/^frt_[A-Za-z0-9_-]{43}$/);
      const accessTtl = t.config.auth.accessTokenTtlSeconds * 1000;
      // Access token times are whole seconds.
      expect(ms(tokens.accessTokenExpireTime)).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + accessTtl);
      expect(ms(tokens.accessTokenExpireTime)).toBeLessThanOrEqual(after + accessTtl);
      const refreshTtl = t.config.auth.refreshTokenTtlSeconds * 1000;
      expect(ms(tokens.refreshTokenExpireTime)).toBeGreaterThanOrEqual(before + refreshTtl);
      expect(ms(tokens.refreshTokenExpireTime)).toBeLessThanOrEqual(after + refreshTtl);

      expect(decodeProtectedHeader(tokens.accessToken).alg).toBe("HS256");
      const claims = decodeJwt(tokens.accessToken);
      expect(claims).toMatchObject({ iss: "foreman", aud: "foreman-api", sub: user.id });
      expect(claims.fam).toMatch(UUID);
      expect(claims.exp! * 1000).toBe(ms(tokens.accessTokenExpireTime));

      const { workspace } = await workspaces(tokens.accessToken).createWorkspace({ name: "Alice's" });
      const { workspaces: listed } = await workspaces(tokens.accessToken).listWorkspaces({});
      expect(listed).toEqual([workspace]);

      const { user: current } = await auth(tokens.accessToken).getCurrentUser({});
      expect(current).toEqual(user);
    });

    it("gives the same user for the same sub on the next login, with a changed email and name updated", async () => {
      const bob = person("bob");
      const first = await signIn(bob);
      const renamed = { sub: bob.sub, email: `renamed.${bob.email}`, name: `${bob.name} Renamed` };
      const second = await signIn(renamed);

      expect(second.user.id).toBe(first.user.id);
      expect(second.user.email).toBe(renamed.email);
      expect(second.user.name).toBe(renamed.name);
      expect(second.user.createTime).toEqual(first.user.createTime);
      expect(await usersWithSubject(bob.sub)).toBe(1);
      // Two logins, two families; the first login sees the update too.
      expect(decodeJwt(second.tokens.accessToken).fam).not.toBe(decodeJwt(first.tokens.accessToken).fam);
      const { user } = await auth(first.tokens.accessToken).getCurrentUser({});
      expect(user).toEqual(second.user);
    });
  });

  it("keeps one user's workspaces from another (NotFound, and absent from the list)", async () => {
    const alice = await signIn(person("alice"));
    const bob = await signIn(person("bob"));
    const { workspace } = await workspaces(alice.tokens.accessToken).createWorkspace({ name: "Private" });
    const id = workspace!.id;

    const asBob = workspaces(bob.tokens.accessToken);
    await expectCode(asBob.getWorkspace({ id }), Code.NotFound);
    await expectCode(asBob.updateWorkspace({ id, name: "Taken" }), Code.NotFound);
    await expectCode(asBob.deleteWorkspace({ id, force: true }), Code.NotFound);
    const { workspace: bobs } = await asBob.createWorkspace({ name: "Private" });
    expect((await asBob.listWorkspaces({})).workspaces).toEqual([bobs]);

    const { workspace: still } = await workspaces(alice.tokens.accessToken).getWorkspace({ id });
    expect(still).toEqual(workspace);
  });

  describe("RefreshToken", () => {
    const grace = () => t.config.auth.refreshReuseGraceSeconds;

    /** The refresh-token rows of the login the access token belongs to. */
    const familyRows = async (accessToken: string) =>
      t.server.db.kysely
        .selectFrom("refresh_tokens")
        .selectAll()
        .where("family_id", "=", decodeJwt(accessToken).fam as string)
        .orderBy("created_at")
        .execute();

    it("rotates; reusing a rotated token after the grace revokes the whole login but not the user's other logins", async () => {
      const carol = person("carol");
      const first = await signIn(carol);
      const other = await signIn(carol);

      const second = await rotate(first.tokens.refreshToken);
      expect(second.accessToken).not.toBe(first.tokens.accessToken);
      expect(second.refreshToken).not.toBe(first.tokens.refreshToken);
      expect(decodeJwt(second.accessToken)).toMatchObject({ sub: first.user.id, fam: decodeJwt(first.tokens.accessToken).fam });
      await accepted(second.accessToken);
      const third = await rotate(second.refreshToken);
      await accepted(third.accessToken);
      // Rotation alone does not end the login's earlier access tokens.
      await accepted(first.tokens.accessToken);

      clock.advance(grace() + 1);
      await expectUnauthenticated(auth().refreshToken({ refreshToken: first.tokens.refreshToken }), "already used");

      await expectUnauthenticated(auth().refreshToken({ refreshToken: third.refreshToken }), "revoked");
      for (const accessToken of [first.tokens.accessToken, second.accessToken, third.accessToken]) {
        await expectUnauthenticated(workspaces(accessToken).listWorkspaces({}), "this login has ended");
      }
      await expectUnauthenticated(auth().refreshToken({ refreshToken: first.tokens.refreshToken }), "revoked");

      await accepted(other.tokens.accessToken);
      const otherRotated = await rotate(other.tokens.refreshToken);
      await accepted(otherRotated.accessToken);
    });

    it("answers the same token presented again within the grace with the same rotated pair, and the login lives on", async () => {
      const { tokens } = await signIn(person("gwen"));
      const rotated = await rotate(tokens.refreshToken);
      // A client that lost the answer retries a little later, still within the grace.
      clock.advance(grace() - 1);
      const again = await rotate(tokens.refreshToken);
      expect(again).toEqual(rotated);
      // One rotation recorded: the login's first token and its one successor.
      const rows = await familyRows(tokens.accessToken);
      expect(rows.map((r) => r.token_hash)).toEqual([sha256(tokens.refreshToken), sha256(rotated.refreshToken)]);
      expect(rows[1]!.used_at).toBeNull();

      await accepted(rotated.accessToken);
      await accepted(tokens.accessToken);
      const next = await rotate(again.refreshToken);
      await accepted(next.accessToken);
      expect(next.refreshToken).not.toBe(rotated.refreshToken);
    });

    it("revokes the login when the rotated token comes back after the grace, even once it was answered within it", async () => {
      const { tokens } = await signIn(person("hank"));
      const rotated = await rotate(tokens.refreshToken);
      expect(await rotate(tokens.refreshToken)).toEqual(rotated);
      clock.advance(grace() + 1);
      await expectUnauthenticated(auth().refreshToken({ refreshToken: tokens.refreshToken }), "already used");
      await expectUnauthenticated(workspaces(rotated.accessToken).listWorkspaces({}), "this login has ended");
      await expectUnauthenticated(auth().refreshToken({ refreshToken: rotated.refreshToken }), "revoked");
      // Revoked stays revoked, within a grace or not.
      await expectUnauthenticated(auth().refreshToken({ refreshToken: tokens.refreshToken }), "revoked");
    });

    it("gives two concurrent rotations of one token the same new pair, recording one rotation", async () => {
      const dave = person("dave");
      const { tokens } = await signIn(dave);
      const other = await signIn(dave);

      const results = await Promise.all(
        Array.from({ length: 4 }, () => auth().refreshToken({ refreshToken: tokens.refreshToken })),
      );
      const pairs = results.map((r) => r.tokens!);
      for (const pair of pairs) expect(pair).toEqual(pairs[0]);
      const rows = await familyRows(tokens.accessToken);
      expect(rows.map((r) => r.token_hash)).toEqual([sha256(tokens.refreshToken), sha256(pairs[0]!.refreshToken)]);

      await accepted(pairs[0]!.accessToken);
      await accepted(other.tokens.accessToken);
      await accepted((await rotate(pairs[0]!.refreshToken)).accessToken);
    });

    it("does not answer within the grace once the login was logged out", async () => {
      const { tokens } = await signIn(person("ivy"));
      const rotated = await rotate(tokens.refreshToken);
      await auth(rotated.accessToken).logout({ refreshToken: rotated.refreshToken });
      await expectUnauthenticated(auth().refreshToken({ refreshToken: tokens.refreshToken }), "revoked");
    });

    it("counts any second use as reuse when FOREMAN_REFRESH_REUSE_GRACE_SECONDS is 0", async () => {
      const strict = await startMultiUserServer(dialect, provider, { FOREMAN_REFRESH_REUSE_GRACE_SECONDS: "0" });
      try {
        const { tokens } = (await login(strict, provider, person("jade"))) as { tokens: TokenSet };
        const strictAuth = clientWith(strict, AuthService, undefined);
        const rotated = (await strictAuth.refreshToken({ refreshToken: tokens.refreshToken })).tokens!;
        await expectUnauthenticated(strictAuth.refreshToken({ refreshToken: tokens.refreshToken }), "already used");
        await expectUnauthenticated(clientWith(strict, WorkspaceService, rotated.accessToken).listWorkspaces({}), "this login has ended");
      } finally {
        await strict.close();
      }
    });

    it("refuses an unknown, foreign or empty refresh token", async () => {
      await expectUnauthenticated(auth().refreshToken({ refreshToken: `frt_${randomBytes(32).toString("base64url")}` }), "unknown refresh token");
      const { tokens } = await signIn(person("erin"));
      await expectUnauthenticated(auth().refreshToken({ refreshToken: tokens.accessToken }), "not a Foreman refresh token");
      await expectInvalid(auth().refreshToken({ refreshToken: "" }), "refresh_token");
      // None of that touched the real login.
      await accepted((await rotate(tokens.refreshToken)).accessToken);
    });
  });

  describe("Logout", () => {
    it("with a refresh token ends that login only", async () => {
      const frank = person("frank");
      const ending = await signIn(frank);
      const staying = await signIn(frank);

      await auth(ending.tokens.accessToken).logout({ refreshToken: ending.tokens.refreshToken });

      await expectUnauthenticated(workspaces(ending.tokens.accessToken).listWorkspaces({}), "this login has ended");
      await expectUnauthenticated(auth().refreshToken({ refreshToken: ending.tokens.refreshToken }), "revoked");
      await accepted(staying.tokens.accessToken);
      await accepted((await rotate(staying.tokens.refreshToken)).accessToken);
    });

    it("may end another login of the caller's, named by its refresh token", async () => {
      const gina = person("gina");
      const caller = await signIn(gina);
      const elsewhere = await signIn(gina);
      await auth(caller.tokens.accessToken).logout({ refreshToken: elsewhere.tokens.refreshToken });
      await expectUnauthenticated(workspaces(elsewhere.tokens.accessToken).listWorkspaces({}), "this login has ended");
      await accepted(caller.tokens.accessToken);
    });

    it("with an empty refresh token ends every login of the caller and no one else's", async () => {
      const hank = person("hank");
      const logins = [await signIn(hank), await signIn(hank), await signIn(hank)];
      const rotated = await rotate(logins[1]!.tokens.refreshToken);
      const bystander = await signIn(person("ivy"));

      await auth(logins[0]!.tokens.accessToken).logout({ refreshToken: "" });

      for (const { tokens } of logins) {
        await expectUnauthenticated(workspaces(tokens.accessToken).listWorkspaces({}), "this login has ended");
      }
      await expectUnauthenticated(workspaces(rotated.accessToken).listWorkspaces({}), "this login has ended");
      await expectUnauthenticated(auth().refreshToken({ refreshToken: rotated.refreshToken }), "revoked");
      await expectUnauthenticated(auth().refreshToken({ refreshToken: logins[2]!.tokens.refreshToken }), "revoked");
      await accepted(bystander.tokens.accessToken);
      // The user can log in again.
      await accepted((await signIn(hank)).tokens.accessToken);
    });

    it("refuses another user's refresh token as InvalidArgument and revokes nothing", async () => {
      const jack = await signIn(person("jack"));
      const kate = await signIn(person("kate"));

      const error = await expectInvalid(auth(jack.tokens.accessToken).logout({ refreshToken: kate.tokens.refreshToken }), "refresh_token");
      expect(error.rawMessage).toContain("not a refresh token of yours");
      await expectInvalid(auth(jack.tokens.accessToken).logout({ refreshToken: `frt_${randomBytes(32).toString("base64url")}` }), "refresh_token");

      await accepted(kate.tokens.accessToken);
      await accepted(jack.tokens.accessToken);
      await accepted((await rotate(kate.tokens.refreshToken)).accessToken);
      await accepted((await rotate(jack.tokens.refreshToken)).accessToken);
    });

    it("needs an access token", async () => {
      const { tokens } = await signIn(person("liam"));
      await expectUnauthenticated(auth().logout({ refreshToken: tokens.refreshToken }), "authentication required");
      await accepted(tokens.accessToken);
    });
  });

  describe("refused access tokens", () => {
    /** A WorkspaceService client that sends this Authorization header as is. */
    function withAuthorization(value: string) {
      const transport = createConnectTransport({
        baseUrl: t.url,
        httpVersion: "2",
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", value);
            return next(req);
          },
        ],
      });
      return createClient(WorkspaceService, transport);
    }

    let real: { token: string; sub: string; fam: string };

    beforeAll(async () => {
      const { tokens } = await signIn(person("mallory"));
      const claims = decodeJwt(tokens.accessToken);
      real = { token: tokens.accessToken, sub: claims.sub!, fam: claims.fam as string };
    });

    it("accepts the real token and one forged with the server's secret and live claims (the control)", async () => {
      await accepted(real.token);
      await accepted(await forge(real));
      await withAuthorization(`bearer   ${real.token}`).listWorkspaces({});
    });

    it("refuses a call with no Authorization header", async () => {
      await expectUnauthenticated(workspaces().listWorkspaces({}), "authentication required");
    });

    it.each(["Basic x", "Bearer", "Bearer a b", "Token abc"])("refuses the malformed header %j", async (value) => {
      await expectUnauthenticated(withAuthorization(value).listWorkspaces({}), 'must be "Bearer <token>"');
    });

    it("refuses the real token without the Bearer scheme", async () => {
      await expectUnauthenticated(withAuthorization(real.token).listWorkspaces({}), 'must be "Bearer <token>"');
    });

    it("refuses a token longer than 4096 characters", async () => {
      await expectUnauthenticated(workspaces("x".repeat(5000)).listWorkspaces({}), 'must be "Bearer <token>"');
    });

    it("refuses a token whose signature was tampered with", async () => {
      const [header, payload, signature] = real.token.split(".") as [string, string, string];
      // A character in the middle: the last one may only carry padding bits.
      const i = 10;
      const flipped = signature.slice(0, i) + (signature[i] === "A" ? "B" : "A") + signature.slice(i + 1);
      await expectUnauthenticated(workspaces(`${header}.${payload}.${flipped}`).listWorkspaces({}), "invalid access token");
    });

    it('refuses "alg": "none" with the same claims', async () => {
      const payload = real.token.split(".")[1]!;
      const none = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url");
      await expectUnauthenticated(workspaces(`${none}.${payload}.`).listWorkspaces({}), "invalid access token");
    });

    it("refuses an expired token of a live login", async () => {
      const now = seconds();
      const expired = await forge(real, { iat: now - 7200, exp: now - 3600 });
      await expectUnauthenticated(workspaces(expired).listWorkspaces({}), "access token expired");
    });

    it.each([
      ["another issuer", { iss: "https://evil.example.com" }],
      ["another audience", { aud: "someone-else" }],
      ["another secret", { secret: "another-secret-that-is-long-enough-0123456789" }],
    ])("refuses a token with %s", async (_label, change) => {
      await expectUnauthenticated(workspaces(await forge(real, change)).listWorkspaces({}), "invalid access token");
    });

    it("refuses a token of an unknown login and one without a login", async () => {
      await expectUnauthenticated(workspaces(await forge({ sub: real.sub, fam: randomUUID() })).listWorkspaces({}), "this login has ended");
      const noFamily = await new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setIssuer("foreman")
        .setAudience("foreman-api")
        .setSubject(real.sub)
        .setIssuedAt()
        .setExpirationTime("10m")
        .sign(new TextEncoder().encode(TEST_JWT_SECRET));
      await expectUnauthenticated(workspaces(noFamily).listWorkspaces({}), "invalid access token");
    });

    it("refuses a token issued in the future beyond the allowed clock skew, and accepts one within it", async () => {
      const now = seconds();
      const ahead = await forge(real, { iat: now + 3600, exp: now + 4000 });
      await expectUnauthenticated(workspaces(ahead).listWorkspaces({}), "issued in the future");
      const slightlyAhead = await forge(real, { iat: now + 90, exp: now + 600 });
      await expectUnauthenticated(workspaces(slightlyAhead).listWorkspaces({}), "issued in the future");
      // Another machine's clock a little ahead of this one's is no reason to refuse.
      await accepted(await forge(real, { iat: now + 30, exp: now + 600 }));
    });

    it("refuses a token whose login belongs to another user than its subject", async () => {
      const { tokens } = await signIn(person("trudy"));
      const trudy = decodeJwt(tokens.accessToken);
      await accepted(tokens.accessToken);
      // Mallory's subject with Trudy's live login, and the other way round; either order of
      // first sight (a login already remembered as live, or not yet).
      await expectUnauthenticated(workspaces(await forge({ sub: real.sub, fam: trudy.fam as string })).listWorkspaces({}), "another user");
      await expectUnauthenticated(workspaces(await forge({ sub: trudy.sub!, fam: real.fam })).listWorkspaces({}), "another user");
      const fresh = decodeJwt((await signIn(person("uma"))).tokens.accessToken);
      await expectUnauthenticated(workspaces(await forge({ sub: real.sub, fam: fresh.fam as string })).listWorkspaces({}), "another user");
      // Both real logins still work.
      await accepted(tokens.accessToken);
      await accepted(real.token);
    });

    it("refuses garbage and a refresh token", async () => {
      await expectUnauthenticated(workspaces("not-a-jwt").listWorkspaces({}), "invalid access token");
      await expectUnauthenticated(workspaces("a.b.c").listWorkspaces({}), "invalid access token");
      const { tokens } = await signIn(person("nina"));
      await expectUnauthenticated(workspaces(tokens.refreshToken).listWorkspaces({}), "invalid access token");
    });
  });

  describe("refused logins", () => {
    it("refuses a replayed state", async () => {
      const { code, state } = await beginLogin(person("oscar"));
      await auth().handleCallback({ code, state, redirectUri: REDIRECT_URI });
      await expectUnauthenticated(auth().handleCallback({ code, state, redirectUri: REDIRECT_URI }), "unknown or already used login state");
    });

    it("refuses an unknown state without using up the real one", async () => {
      const pat = person("pat");
      const { code, state } = await beginLogin(pat);
      await expectUnauthenticated(
        auth().handleCallback({ code, state: randomBytes(32).toString("base64url"), redirectUri: REDIRECT_URI }),
        "unknown or already used login state",
      );
      const { user } = await auth().handleCallback({ code, state, redirectUri: REDIRECT_URI });
      expect(user?.email).toBe(pat.email);
    });

    it("refuses an expired state", async () => {
      const quinn = person("quinn");
      const { code, state } = await beginLogin(quinn);
      await t.server.db.kysely
        .updateTable("auth_states")
        .set({ expires_at: new Date(Date.now() - 60_000).toISOString() })
        .where("state", "=", state)
        .execute();
      await expectUnauthenticated(auth().handleCallback({ code, state, redirectUri: REDIRECT_URI }), "state expired");
      expect(await usersWithSubject(quinn.sub)).toBe(0);
    });

    it("refuses a code exchanged with the wrong PKCE verifier, creating no user", async () => {
      const rosa = person("rosa");
      const { code, state } = await beginLogin(rosa);
      const rows = await refreshTokenRows();
      await t.server.db.kysely
        .updateTable("auth_states")
        .set({ code_verifier: randomBytes(48).toString("base64url") })
        .where("state", "=", state)
        .execute();
      const error = await expectUnauthenticated(
        auth().handleCallback({ code, state, redirectUri: REDIRECT_URI }),
        "the OpenID provider refused the login",
      );
      expect(error.rawMessage).toContain("code_verifier"); // the provider's reason
      expect(await usersWithSubject(rosa.sub)).toBe(0);
      expect(await refreshTokenRows()).toBe(rows);
    });

    it.each([
      ["audience", (p: Record<string, unknown>) => void (p.aud = "someone-else")],
      ["issuer", (p: Record<string, unknown>) => void (p.iss = "https://evil.example.com")],
      ["nonce", (p: Record<string, unknown>) => void (p.nonce = "not-the-nonce-of-this-login")],
      [
        "expiry (in the past)",
        (p: Record<string, unknown>) => {
          const now = Math.floor(Date.now() / 1000);
          Object.assign(p, { iat: now - 7200, nbf: now - 7200, exp: now - 3600 });
        },
      ],
    ])("refuses an ID token with the wrong %s, issuing no tokens", async (_label, tamper) => {
      const sam = person("sam");
      const rows = await refreshTokenRows();
      const { code, state } = await beginLogin(sam);
      provider.tamperIdToken = tamper;
      await expectUnauthenticated(auth().handleCallback({ code, state, redirectUri: REDIRECT_URI }), "the OpenID provider refused the login");
      expect(provider.tamperIdToken).toBeUndefined(); // the provider did sign a tampered ID token
      expect(await usersWithSubject(sam.sub)).toBe(0);
      expect(await refreshTokenRows()).toBe(rows);
    });

    it("refuses a redirect_uri that is not on the allow-list, or none", async () => {
      const error = await expectInvalid(auth().getLoginUrl({ redirectUri: "http://127.0.0.1:5173/elsewhere" }), "redirect_uri");
      expect(error.rawMessage).toContain("redirect_uri");
      expect(error.rawMessage).toContain("FOREMAN_OIDC_REDIRECT_URIS");
      await expectInvalid(auth().getLoginUrl({ redirectUri: `${REDIRECT_URI}?next=/admin` }), "redirect_uri");
      await expectInvalid(auth().getLoginUrl({ redirectUri: "" }), "redirect_uri");
    });

    it("refuses a callback whose redirect_uri differs from the login's, which uses up the state", async () => {
      const { code, state } = await beginLogin(person("tess"));
      await expectUnauthenticated(
        auth().handleCallback({ code, state, redirectUri: "http://127.0.0.1:5173/other/callback" }),
        "redirect_uri differs",
      );
      await expectUnauthenticated(auth().handleCallback({ code, state, redirectUri: REDIRECT_URI }), "unknown or already used login state");
    });

    it("refuses an empty code, state or redirect_uri as InvalidArgument", async () => {
      const { code, state } = await beginLogin(person("uma"));
      await expectInvalid(auth().handleCallback({ code: "", state, redirectUri: REDIRECT_URI }), "code");
      await expectInvalid(auth().handleCallback({ code, state: "", redirectUri: REDIRECT_URI }), "state");
      await expectInvalid(auth().handleCallback({ code: "", state: "", redirectUri: "" }), "code", "redirect_uri", "state");
      // Refused before the state was looked at: the login can still finish.
      await auth().handleCallback({ code, state, redirectUri: REDIRECT_URI });
    });
  });

  it("bounds the logins in progress: past the limit GetLoginUrl is ResourceExhausted until they expire", async () => {
    const db = t.server.db.kysely;
    const now = Date.now();
    const live = Array.from({ length: MAX_LOGINS_IN_PROGRESS }, (_, i) => ({
      state: `flood-${i}-${now}`,
      code_verifier: "v",
      nonce: "n",
      redirect_uri: REDIRECT_URI,
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + 600_000).toISOString(),
    }));
    try {
      for (let i = 0; i < live.length; i += 1000) await db.insertInto("auth_states").values(live.slice(i, i + 1000)).execute();
      const err = await rpcError(auth().getLoginUrl({ redirectUri: REDIRECT_URI }));
      expect(Code[err.code]).toBe("ResourceExhausted");
      expect(err.rawMessage).toContain("too many logins");
      // Once those expire, logins start again.
      await db.updateTable("auth_states").set({ expires_at: new Date(now - 1000).toISOString() }).where("state", "like", `flood-%-${now}`).execute();
      expect((await auth().getLoginUrl({ redirectUri: REDIRECT_URI })).state).not.toBe("");
    } finally {
      await db.deleteFrom("auth_states").where("state", "like", `flood-%-${now}`).execute();
    }
  });

  it("stores refresh tokens only as SHA-256 hashes", async () => {
    const { user, tokens } = await signIn(person("vera"));
    const rotated = await rotate(tokens.refreshToken);
    const rows = await t.server.db.kysely.selectFrom("refresh_tokens").selectAll().where("user_id", "=", user.id).execute();
    expect(rows).toHaveLength(2);
    for (const row of rows) expect(row.token_hash).toMatch(SHA256_HEX);
    expect(rows.map((r) => r.token_hash).sort()).toEqual([sha256(tokens.refreshToken), sha256(rotated.refreshToken)].sort());
    const stored = JSON.stringify(rows);
    for (const secret of [tokens.refreshToken, rotated.refreshToken, tokens.accessToken, rotated.accessToken]) {
      expect(stored).not.toContain(secret);
      expect(stored).not.toContain(secret.replace(/^frt_/, ""));
    }
  });

  it("logs logins and reuse but never a token, code or verifier", async () => {
    const lines: string[] = [];
    const loggedClock = movableClock();
    const logged = await startTestServer(dialect, multiUserEnv(provider), undefined, { logLines: lines, clock: loggedClock.now });
    try {
      const client = (token?: string) => clientWith(logged, AuthService, token);
      const walt = person("walt");
      provider.identity = walt;
      const { url, state } = await client().getLoginUrl({ redirectUri: REDIRECT_URI });
      const { code } = await authorize(url);
      const { code_verifier: verifier } = await logged.server.db.kysely
        .selectFrom("auth_states")
        .select("code_verifier")
        .where("state", "=", state)
        .executeTakeFirstOrThrow();
      const { tokens } = await client().handleCallback({ code, state, redirectUri: REDIRECT_URI });
      const rotated = (await client().refreshToken({ refreshToken: tokens!.refreshToken })).tokens!;
      expect((await client().refreshToken({ refreshToken: tokens!.refreshToken })).tokens).toEqual(rotated);
      loggedClock.advance(logged.config.auth.refreshReuseGraceSeconds + 1);
      await expectUnauthenticated(client().refreshToken({ refreshToken: tokens!.refreshToken }), "already used");
      await expectUnauthenticated(client(rotated.accessToken).getCurrentUser({}), "this login has ended");
      const again = (await login(logged, provider, walt)).tokens!;
      await client(again.accessToken).logout({ refreshToken: again.refreshToken });

      const text = lines.join("");
      expect(text).toContain("user logged in");
      expect(text).toContain("refresh token presented again within the grace");
      expect(text).toContain("refresh token reused");
      const secrets = [code, verifier, tokens!.accessToken, tokens!.refreshToken, rotated.accessToken, rotated.refreshToken, again.refreshToken];
      for (const secret of secrets) expect(text).not.toContain(secret);
    } finally {
      await logged.close();
    }
  });
});

describe.each(DIALECTS)("an unreachable OpenID provider on %s", (dialect) => {
  it("makes GetLoginUrl and HandleCallback Unavailable, and discovery is retried once it is back", async () => {
    const gone = await startOidcProvider();
    await gone.close();
    const t = await startMultiUserServer(dialect, gone);
    try {
      const auth = clientWith(t, AuthService, undefined);
      await expectError(auth.getLoginUrl({ redirectUri: REDIRECT_URI }), {
        code: Code.Unavailable,
        reason: "PROVIDER_UNAVAILABLE",
        message: "cannot reach the OpenID provider",
      });

      // The provider comes back on the same address: the next login discovers it.
      const back = new OAuth2Server();
      await back.issuer.keys.generate("RS256");
      await back.start(Number(new URL(gone.issuer).port), "127.0.0.1");
      let pending: { code: string; state: string };
      try {
        expect(back.issuer.url).toBe(gone.issuer);
        const { url } = await auth.getLoginUrl({ redirectUri: REDIRECT_URI });
        expect(url.startsWith(`${gone.issuer}/authorize?`)).toBe(true);
        pending = await authorize(url);
      } finally {
        await back.stop();
      }

      // Gone again between the redirect and the callback: the code cannot be exchanged.
      await expectError(auth.handleCallback({ ...pending, redirectUri: REDIRECT_URI }), {
        code: Code.Unavailable,
        reason: "PROVIDER_UNAVAILABLE",
        message: "could not reach the OpenID provider to finish the login",
      });
    } finally {
      await t.close();
    }
  });
});

describe.each(DIALECTS)("single-user mode on %s", (dialect: DialectName) => {
  let t: TestServer;

  beforeAll(async () => {
    t = await startTestServer(dialect);
  });

  afterAll(async () => {
    await t?.close();
  });

  it("has no login: every login method is FailedPrecondition naming single-user mode", async () => {
    const auth = clientWith(t, AuthService, undefined);
    const calls = [
      () => auth.getLoginUrl({ redirectUri: REDIRECT_URI }),
      () => auth.handleCallback({ code: "code", state: "state", redirectUri: REDIRECT_URI }),
      () => auth.refreshToken({ refreshToken: `frt_${randomBytes(32).toString("base64url")}` }),
      () => auth.logout({ refreshToken: "" }),
    ];
    for (const call of calls) {
      const error = await expectCode(call(), Code.FailedPrecondition);
      expect(error.rawMessage).toContain("single-user mode");
    }
  });

  it("answers GetCurrentUser with the local user, with no credential", async () => {
    const { user } = await clientWith(t, AuthService, undefined).getCurrentUser({});
    expect(user).toMatchObject({ id: "00000000-0000-7000-8000-000000000001", issuer: "", email: "", name: "Local user" });
    expect(user?.createTime).toBeDefined();
  });
});
