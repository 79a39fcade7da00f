// Opaque bearer secrets (refresh tokens, worker registration tokens, worker credentials): 256
// random bits behind a prefix that says what the secret is. Only a SHA-256 hash is stored; a
// lookup by the hash of a secret this random leaks nothing through timing.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

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
