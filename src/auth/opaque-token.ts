// Opaque bearer secrets (refresh tokens, worker registration tokens, worker credentials): 256
// random bits behind a prefix that says what the secret is. Only a SHA-256 hash is stored; a
// lookup by the hash of a secret this random leaks nothing through timing.
import { createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";

export const REFRESH_TOKEN_PREFIX = "frt_";
export const WORKER_REGISTRATION_TOKEN_PREFIX = "fwr_";
export const WORKER_CREDENTIAL_PREFIX = "fwk_";

export function newOpaqueToken(prefix: string): string {
  return prefix + randomBytes(32).toString("base64url");
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** Compares two secrets in constant time (for a configured secret, not looked up by hash). */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(Buffer.from(hashToken(a), "hex"), Buffer.from(hashToken(b), "hex"));
}

/**
 * The refresh token that replaces `token` when it is rotated: an HMAC of the old token under a
 * key derived from the server's signing secret (FOREMAN_JWT_SECRET, which every replica shares).
 *
 * Why derived rather than random: a rotated token presented again within the grace must get
 * the same new token back, on whichever replica it reaches. A random successor would have to be
 * kept somewhere to be handed out again, and the database keeps only hashes of tokens; stored
 * encrypted it would be a live credential that the database and the key together give away.
 * Derived, nothing is stored: the caller proves it holds the old token, and only the server can
 * compute what follows it. Someone who knows the secret can compute successors of tokens they
 * hold, but with the secret they can sign access tokens for anyone already. The HMAC output
 * carries the old token's 256 random bits on; each login's first token is random.
 */
export function successorToken(serverSecret: string, token: string): string {
  const key = Buffer.from(hkdfSync("sha256", serverSecret, "", "foreman refresh-token successor v1", 32));
  return REFRESH_TOKEN_PREFIX + createHmac("sha256", key).update(token, "utf8").digest("base64url");
}
