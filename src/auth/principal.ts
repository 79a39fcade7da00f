// Who is calling. The auth interceptor puts a principal in each call's context values;
// handlers read it from there and never parse headers themselves.
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { foremanError } from "../core/errors.js";
import { Code } from "@connectrpc/connect";

export type Principal = { kind: "user"; userId: string } | { kind: "worker"; workerId: string };

export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "the caller" });

/** The calling user's id; Unauthenticated when the caller is not a user. */
export function requireUser(ctx: HandlerContext): string {
  const principal = ctx.values.get(principalKey);
  if (principal?.kind !== "user") {
    throw foremanError(Code.Unauthenticated, "UNAUTHENTICATED", "this call needs a signed-in user");
  }
  return principal.userId;
}
