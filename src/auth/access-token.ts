// Foreman's own access tokens: short-lived HS256 JWTs naming the user and the login (family)
// they belong to. Verification pins the algorithm, issuer and audience, so "alg": "none", a
// token from another issuer or for another audience, and a tampered signature are refused.
import { errors, jwtVerify, SignJWT } from "jose";

export const ACCESS_TOKEN_ISSUER = "foreman";
export const ACCESS_TOKEN_AUDIENCE = "foreman-api";
const ALGORITHM = "HS256";
/**
 * How far in the future a token's `iat` may lie: replicas' clocks differ a little, but a token
 * "issued" later than that was not issued by a replica with a sane clock (a forged or
 * mis-clocked token, which would otherwise also outlive its login's TTL).
 */
export const MAX_CLOCK_SKEW_SECONDS = 60;

export interface AccessClaims {
  userId: string;
  /** The refresh-token family (one login); revoking it ends the login's access tokens too. */
  familyId: string;
}

/** How many verified tokens to remember; a client reuses its token for every call. */
const VERIFIED_CACHE_SIZE = 10_000;

export class AccessTokens {
  private readonly key: Uint8Array;
  /**
   * Tokens whose signature and claims were verified, with their expiry: jose's HS256 check costs
   * about 100 µs of CPU, which every call would pay again for the same token. Insertion order
   * makes the Map a FIFO for eviction.
   */
  private readonly verified = new Map<string, { claims: AccessClaims; expiresAtMs: number }>();

  constructor(
    secret: string,
    private readonly ttlSeconds: number,
  ) {
    this.key = new TextEncoder().encode(secret);
  }

  /**
   * Signs an access token. HS256 over the same claims gives the same token, so issuing again
   * with the same time and tokenId (the id of the refresh token issued with it) reproduces it:
   * that is how a refresh retried within the grace gets the very access token it was given.
   */
  async issue(claims: AccessClaims, now: Date, tokenId: string): Promise<{ token: string; expiresAt: Date }> {
    const issuedAt = Math.floor(now.getTime() / 1000);
    const expiresAt = new Date((issuedAt + this.ttlSeconds) * 1000);
    const token = await new SignJWT({ fam: claims.familyId })
      .setProtectedHeader({ alg: ALGORITHM, typ: "JWT" })
      .setIssuer(ACCESS_TOKEN_ISSUER)
      .setAudience(ACCESS_TOKEN_AUDIENCE)
      .setSubject(claims.userId)
      .setJti(tokenId)
      .setIssuedAt(issuedAt)
      .setExpirationTime(Math.floor(expiresAt.getTime() / 1000))
      .sign(this.key);
    return { token, expiresAt };
  }

  /** The token's claims, or a reason it is refused (never the token itself). */
  async verify(token: string, now: Date): Promise<AccessClaims | { refused: string }> {
    const known = this.verified.get(token);
    if (known !== undefined) {
      if (known.expiresAtMs > now.getTime()) return known.claims;
      this.verified.delete(token);
    }
    try {
      const { payload } = await jwtVerify(token, this.key, {
        algorithms: [ALGORITHM],
        issuer: ACCESS_TOKEN_ISSUER,
        audience: ACCESS_TOKEN_AUDIENCE,
        requiredClaims: ["sub", "exp", "iat", "fam"],
        currentDate: now,
      });
      if (typeof payload.sub !== "string" || typeof payload.fam !== "string") return { refused: "malformed claims" };
      // jose checks iat only when asked for a maximum age; a future one is refused here.
      if (typeof payload.iat !== "number" || payload.iat > Math.floor(now.getTime() / 1000) + MAX_CLOCK_SKEW_SECONDS) {
        return { refused: "access token issued in the future (check the clocks of the servers)" };
      }
      const claims = { userId: payload.sub, familyId: payload.fam };
      if (this.verified.size >= VERIFIED_CACHE_SIZE) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(token, { claims, expiresAtMs: payload.exp! * 1000 });
      return claims;
    } catch (error) {
      if (error instanceof errors.JWTExpired) return { refused: "access token expired" };
      if (error instanceof errors.JOSEError) return { refused: `invalid access token (${error.code})` };
      throw error;
    }
  }
}
