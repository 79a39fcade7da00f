// Login rules for multi-user mode: the OIDC authorization-code flow with PKCE, Foreman's access
// and refresh tokens, rotation with reuse detection (reusing a rotated refresh token revokes the
// whole login, after a short grace that answers a repeated refresh with the same pair), logout,
// and checking an access token on each call.
import { hashToken, newOpaqueToken, REFRESH_TOKEN_PREFIX, successorToken } from "../auth/opaque-token.js";
import { OidcError } from "../auth/oidc.js";
import { newId } from "../store/codec.js";
import * as store from "../store/logins.js";
import { getUser, upsertUserByIdentity } from "../store/users.js";
import type { Logger } from "../logger.js";
import type { Core } from "./context.js";
import { failedPrecondition, invalidArgument, notFound, providerUnavailable, resourceExhausted, unauthenticated } from "./errors.js";
import type { User } from "../model/users.js";
import { Violations } from "./validation.js";

export type { User };

export interface TokenSet {
  accessToken: string;
  accessTokenExpiresAt: Date;
  refreshToken: string;
  refreshTokenExpiresAt: Date;
}

/** Logins started and neither finished nor expired, across all users (see startLogin). */
export const MAX_LOGINS_IN_PROGRESS = 10_000;

function requireLogin(core: Core): NonNullable<Core["auth"]["login"]> {
  if (core.auth.login === undefined) {
    throw failedPrecondition("this server runs in single-user mode, which has no login: every call acts as the local user");
  }
  return core.auth.login;
}

function providerError(error: unknown): Error {
  if (!(error instanceof OidcError)) return error as Error;
  return error.unavailable
    ? providerUnavailable(error.message, error)
    : unauthenticated(error.message, error);
}

/** Starts a login: the provider URL to send the browser to, and the state it will come back with. */
export async function startLogin(core: Core, log: Logger, redirectUri: string): Promise<{ url: string; state: string; expiresAt: Date }> {
  const login = requireLogin(core);
  const v = new Violations();
  if (redirectUri === "") v.add("redirect_uri", "is required");
  else if (!core.auth.config.oidc!.redirectUris.includes(redirectUri)) {
    v.add("redirect_uri", "is not one of the server's allowed redirect URIs (FOREMAN_OIDC_REDIRECT_URIS)");
  }
  v.throwIfAny();
  // Anyone may start a login, and each one is a row until it expires: bound them, so a flood of
  // GetLoginUrl calls cannot fill the database.
  const now = core.now();
  if ((await store.countLiveAuthStates(core.db, now)) >= MAX_LOGINS_IN_PROGRESS) {
    log.warn({ limit: MAX_LOGINS_IN_PROGRESS }, "too many logins in progress; refusing GetLoginUrl");
    throw resourceExhausted("too many logins are in progress on this server; try again in a few minutes");
  }
  let request;
  try {
    request = await login.oidc.startLogin(redirectUri);
  } catch (error) {
    throw providerError(error);
  }
  const expiresAt = new Date(now.getTime() + core.auth.config.loginTtlSeconds * 1000);
  await store.insertAuthState(core.db, { ...request, redirectUri, expiresAt }, now);
  // Abandoned logins would pile up; a day's grace keeps "already used" answers meaningful.
  await store.deleteAuthStatesExpiredBefore(core.db, new Date(now.getTime() - 86_400_000));
  return { url: request.url, state: request.state, expiresAt };
}

/** Finishes a login: one use per state, the code exchanged with the PKCE verifier, the ID token checked. */
export async function finishLogin(
  core: Core,
  log: Logger,
  input: { code: string; state: string; redirectUri: string },
): Promise<{ tokens: TokenSet; user: User }> {
  const login = requireLogin(core);
  const v = new Violations();
  v.text("code", input.code, { required: true, max: 4096 });
  v.text("state", input.state, { required: true, max: 512 });
  v.text("redirect_uri", input.redirectUri, { required: true, max: 2048 });
  v.throwIfAny();
  const now = core.now();
  const pending = await store.consumeAuthState(core.db, input.state, now);
  if (pending === undefined) throw unauthenticated("unknown or already used login state; start the login again");
  if (pending.expiresAt <= now) throw unauthenticated("the login took too long and its state expired; start the login again");
  if (pending.redirectUri !== input.redirectUri) {
    throw unauthenticated("redirect_uri differs from the one the login started with; start the login again");
  }
  let identity;
  try {
    identity = await login.oidc.finishLogin({ ...input, codeVerifier: pending.codeVerifier, nonce: pending.nonce });
  } catch (error) {
    throw providerError(error);
  }
  const user = await upsertUserByIdentity(
    core.db,
    { id: newId(now.getTime()), issuer: identity.issuer, subject: identity.subject, email: identity.email, name: identity.name },
    now,
  );
  log.info({ user_id: user.id, issuer: user.issuer }, "user logged in");
  return { tokens: await issueTokens(core, user.id, newId(now.getTime()), now), user };
}

async function issueTokens(
  core: Core,
  userId: string,
  familyId: string,
  now: Date,
  refreshToken = newOpaqueToken(REFRESH_TOKEN_PREFIX),
  db = core.db,
): Promise<TokenSet> {
  const id = newId(now.getTime());
  const refreshTokenExpiresAt = new Date(now.getTime() + core.auth.config.refreshTokenTtlSeconds * 1000);
  await store.insertRefreshToken(db, { id, userId, familyId, tokenHash: hashToken(refreshToken), expiresAt: refreshTokenExpiresAt }, now);
  // The access token's id is its refresh token's, so that sameTokens can sign it again.
  const access = await requireLogin(core).accessTokens.issue({ userId, familyId }, now, id);
  return { accessToken: access.token, accessTokenExpiresAt: access.expiresAt, refreshToken, refreshTokenExpiresAt };
}

/** The pair a rotation issued, again: the successor's own token, and the access token signed then. */
async function sameTokens(core: Core, successor: store.RefreshToken, refreshToken: string): Promise<TokenSet> {
  const access = await requireLogin(core).accessTokens.issue({ userId: successor.userId, familyId: successor.familyId }, successor.createdAt, successor.id);
  return { accessToken: access.token, accessTokenExpiresAt: access.expiresAt, refreshToken, refreshTokenExpiresAt: successor.expiresAt };
}

/**
 * Rotates a refresh token. A token used before means it leaked, and the whole login is revoked,
 * except within FOREMAN_REFRESH_REUSE_GRACE_SECONDS of its rotation: two tabs refreshing at
 * once, or a client retrying a refresh whose answer it lost, get the same rotated pair (as
 * Auth0's and Okta's grace periods do). The successor is derived from the token
 * (auth/opaque-token.ts successorToken), so any replica can answer with it while the database
 * keeps only hashes; one rotation is recorded however many answers it gets.
 */
export async function refresh(core: Core, log: Logger, refreshToken: string): Promise<TokenSet> {
  const login = requireLogin(core);
  const v = new Violations();
  v.text("refresh_token", refreshToken, { required: true, max: 512 });
  v.throwIfAny();
  if (!refreshToken.startsWith(REFRESH_TOKEN_PREFIX)) throw unauthenticated("not a Foreman refresh token");
  const tokenHash = hashToken(refreshToken);
  const successor = successorToken(core.auth.config.jwtSecret!, refreshToken);
  const now = core.now();
  const rotated = await core.adapter.transaction(core.db, async (trx) => {
    const used = await store.useRefreshToken(trx, tokenHash, now);
    return used && (await issueTokens(core, used.userId, used.familyId, now, successor, trx));
  });
  if (rotated !== undefined) return rotated;

  const known = await store.findRefreshToken(core.db, tokenHash);
  if (known === undefined) throw unauthenticated("unknown refresh token");
  if (known.revokedAt !== null) throw unauthenticated("this refresh token was revoked; log in again");
  if (known.usedAt !== null) {
    // Within the grace (a replica's clock a little behind counts as within), the rotation this
    // token made is answered again while its successor lives. A token rotated before the
    // successor was derived has none to find, and counts as reused.
    if (now.getTime() - known.usedAt.getTime() <= core.auth.config.refreshReuseGraceSeconds * 1000) {
      const next = await store.findRefreshToken(core.db, hashToken(successor));
      if (next !== undefined && next.familyId === known.familyId && next.revokedAt === null && next.expiresAt > now) {
        log.info({ user_id: known.userId, family_id: known.familyId }, "refresh token presented again within the grace: same rotation answered");
        return sameTokens(core, next, successor);
      }
    }
    const revoked = await store.revokeRefreshFamily(core.db, known.familyId, now);
    login.liveLogins.forget(known.familyId);
    log.warn({ user_id: known.userId, family_id: known.familyId, revoked }, "refresh token reused: login revoked");
    throw unauthenticated("this refresh token was already used, so it may have leaked: every token of this login is revoked; log in again");
  }
  throw unauthenticated("this refresh token expired; log in again");
}

/** Ends the login the refresh token belongs to, or every login of the user when it is empty. */
export async function logout(core: Core, userId: string, refreshToken: string): Promise<void> {
  const login = requireLogin(core);
  const now = core.now();
  if (refreshToken === "") {
    await store.revokeRefreshFamiliesOfUser(core.db, userId, now);
    login.liveLogins.forgetAll();
    return;
  }
  const known = await store.findRefreshToken(core.db, hashToken(refreshToken));
  // Another user's token is as unknown as a made-up one.
  if (known === undefined || known.userId !== userId) {
    throw invalidArgument([{ field: "refresh_token", description: "is not a refresh token of yours" }]);
  }
  await store.revokeRefreshFamily(core.db, known.familyId, now);
  login.liveLogins.forget(known.familyId);
}

/** The user an access token names, while its login lives. */
export async function authenticateAccessToken(core: Core, token: string): Promise<string> {
  const login = requireLogin(core);
  const now = core.now();
  const claims = await login.accessTokens.verify(token, now);
  if ("refused" in claims) throw unauthenticated(claims.refused);
  let owner = login.liveLogins.liveUser(claims.familyId, core.now().getTime());
  if (owner === undefined) {
    owner = await store.liveRefreshFamilyUser(core.db, claims.familyId, now);
    if (owner === undefined) throw unauthenticated("this login has ended (logged out or revoked); log in again");
    login.liveLogins.remember(claims.familyId, owner, core.now().getTime());
  }
  // Only a token signed with the server's secret gets here, so this takes a leaked secret or a
  // bug; the login id and the subject must still agree, or one user's login would vouch for another.
  if (owner !== claims.userId) throw unauthenticated("this access token's login belongs to another user");
  return claims.userId;
}

export async function currentUser(core: Core, userId: string): Promise<User> {
  const user = await getUser(core.db, userId);
  if (user === undefined) throw notFound("user", userId);
  return user;
}
