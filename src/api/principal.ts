// Who is calling. The auth interceptor (server/) puts a principal in each call's context values;
// handlers read it from there and never parse headers themselves.
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { unauthenticated } from "../core/errors.js";
import type { CredentialOwner } from "../core/worker-credentials.js";

export type Principal =
  | { kind: "user"; userId: string }
  /** ownerId null: registered with the server's configured token, serves every user. */
  | ({ kind: "worker" } & CallingWorker);

/**
 * The calling worker as its credential says: what it serves, which only a new registration
 * (with a new credential) changes. Its status is read by the calls that depend on it.
 */
export type CallingWorker = CredentialOwner;

export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "the caller" });

/** The calling user's id; the interceptor has already refused anyone else. */
export function requireUser(ctx: HandlerContext): string {
  const principal = ctx.values.get(principalKey);
  if (principal?.kind !== "user") {
    throw unauthenticated("this call needs a signed-in user");
  }
  return principal.userId;
}

/** The calling worker; the interceptor has already refused anyone else. */
export function requireWorker(ctx: HandlerContext): CallingWorker {
  const principal = ctx.values.get(principalKey);
  if (principal?.kind !== "worker") {
    throw unauthenticated("this call needs a worker credential");
  }
  return principal;
}

/**
 * The worker credential the call carries (Authorization: Bearer fwk_…), or undefined. On a
 * WorkerService call past RegisterWorker the interceptor has checked it already; dispatch
 * derives lease tokens from it. On RegisterWorker it is the worker's previous identity, which
 * core checks.
 */
export function presentedWorkerCredential(ctx: HandlerContext): string | undefined {
  const match = /^Bearer +(fwk_\S+)$/i.exec(ctx.requestHeader.get("authorization")?.trim() ?? "");
  return match === null ? undefined : match[1];
}
