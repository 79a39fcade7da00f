// Logins: OIDC authorization requests in flight (auth_states) and refresh tokens, hashed, in
// families (one family per login, one token per rotation).
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { fromDbTime, toDbTime } from "./codec.js";

export interface AuthState {
  state: string;
  codeVerifier: string;
  nonce: string;
  redirectUri: string;
  expiresAt: Date;
}

export async function insertAuthState(db: Kysely<Database>, s: AuthState, now: Date): Promise<void> {
  await db
    .insertInto("auth_states")
    .values({
      state: s.state,
      code_verifier: s.codeVerifier,
      nonce: s.nonce,
      redirect_uri: s.redirectUri,
      created_at: toDbTime(now),
      expires_at: toDbTime(s.expiresAt),
    })
    .execute();
}

/**
 * Marks the state used and returns it, once: a second call for the same state, from any
 * replica, gets undefined. Expiry is the caller's to check, so it can say why it refuses.
 */
export async function consumeAuthState(db: Kysely<Database>, state: string, now: Date): Promise<AuthState | undefined> {
  const row = await db
    .updateTable("auth_states")
    .set({ used_at: toDbTime(now) })
    .where("state", "=", state)
    .where("used_at", "is", null)
    .returningAll()
    .executeTakeFirst();
  return (
    row && {
      state: row.state,
      codeVerifier: row.code_verifier,
      nonce: row.nonce,
      redirectUri: row.redirect_uri,
      expiresAt: fromDbTime(row.expires_at),
    }
  );
}

/** Logins started, not yet finished and not expired. */
export async function countLiveAuthStates(db: Kysely<Database>, now: Date): Promise<number> {
  const row = await db
    .selectFrom("auth_states")
    .select((eb) => eb.fn.countAll<string | number>().as("n"))
    .where("used_at", "is", null)
    .where("expires_at", ">", toDbTime(now))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Forgets logins that ended before `before`, used or not. */
export async function deleteAuthStatesExpiredBefore(db: Kysely<Database>, before: Date): Promise<void> {
  await db.deleteFrom("auth_states").where("expires_at", "<", toDbTime(before)).execute();
}

export interface RefreshToken {
  id: string;
  userId: string;
  familyId: string;
  createdAt: Date;
  expiresAt: Date;
  usedAt: Date | null;
  revokedAt: Date | null;
}

export async function insertRefreshToken(
  db: Kysely<Database>,
  t: { id: string; userId: string; familyId: string; tokenHash: string; expiresAt: Date },
  now: Date,
): Promise<void> {
  await db
    .insertInto("refresh_tokens")
    .values({
      id: t.id,
      user_id: t.userId,
      family_id: t.familyId,
      token_hash: t.tokenHash,
      created_at: toDbTime(now),
      expires_at: toDbTime(t.expiresAt),
    })
    .execute();
}

/**
 * Marks a live, unused token used and returns it. Of two concurrent rotations of one token,
 * exactly one gets it; the other gets undefined and looks the token up to learn why. On
 * PostgreSQL the other's UPDATE waits for the first's transaction to end (the row lock), so by
 * then the first's successor is committed and visible to the lookup; SQLite serialises them.
 */
export async function useRefreshToken(db: Kysely<Database>, tokenHash: string, now: Date): Promise<RefreshToken | undefined> {
  const row = await db
    .updateTable("refresh_tokens")
    .set({ used_at: toDbTime(now) })
    .where("token_hash", "=", tokenHash)
    .where("used_at", "is", null)
    .where("revoked_at", "is", null)
    .where("expires_at", ">", toDbTime(now))
    .returning(["id", "user_id", "family_id", "created_at", "expires_at", "used_at", "revoked_at"])
    .executeTakeFirst();
  return row && toRefreshToken(row);
}

export async function findRefreshToken(db: Kysely<Database>, tokenHash: string): Promise<RefreshToken | undefined> {
  const row = await db
    .selectFrom("refresh_tokens")
    .select(["id", "user_id", "family_id", "created_at", "expires_at", "used_at", "revoked_at"])
    .where("token_hash", "=", tokenHash)
    .executeTakeFirst();
  return row && toRefreshToken(row);
}

function toRefreshToken(row: {
  id: string;
  user_id: string;
  family_id: string;
  created_at: Date | string;
  expires_at: Date | string;
  used_at: Date | string | null;
  revoked_at: Date | string | null;
}): RefreshToken {
  return {
    id: row.id,
    userId: row.user_id,
    familyId: row.family_id,
    createdAt: fromDbTime(row.created_at),
    expiresAt: fromDbTime(row.expires_at),
    usedAt: row.used_at === null ? null : fromDbTime(row.used_at),
    revokedAt: row.revoked_at === null ? null : fromDbTime(row.revoked_at),
  };
}

/** Revokes every token of the family; returns how many were still live. */
export async function revokeRefreshFamily(db: Kysely<Database>, familyId: string, now: Date): Promise<number> {
  const result = await db
    .updateTable("refresh_tokens")
    .set({ revoked_at: toDbTime(now) })
    .where("family_id", "=", familyId)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export async function revokeRefreshFamiliesOfUser(db: Kysely<Database>, userId: string, now: Date): Promise<void> {
  await db
    .updateTable("refresh_tokens")
    .set({ revoked_at: toDbTime(now) })
    .where("user_id", "=", userId)
    .where("revoked_at", "is", null)
    .execute();
}

/** The user a login belongs to while it is live (its family has an unrevoked, unexpired token), else undefined. */
export async function liveRefreshFamilyUser(db: Kysely<Database>, familyId: string, now: Date): Promise<string | undefined> {
  const row = await db
    .selectFrom("refresh_tokens")
    .select("user_id")
    .where("family_id", "=", familyId)
    .where("revoked_at", "is", null)
    .where("expires_at", ">", toDbTime(now))
    .limit(1)
    .executeTakeFirst();
  return row?.user_id;
}
