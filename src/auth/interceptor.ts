// Puts the caller's principal in the call's context. Single-user mode: every call is the local
// user. Multi-user login (OIDC, JWT) and worker credentials come with the auth issue; until
// then a multi-user server refuses every non-public call.
import { Code, type Interceptor } from "@connectrpc/connect";
import { foremanError } from "../core/errors.js";
import { LOCAL_USER_ID } from "../store/users.js";
import { principalKey } from "./principal.js";

/** Procedures anyone may call: health, reflection and the start of a login. */
const PUBLIC_SERVICES = new Set(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]);
const PUBLIC_METHODS = new Set([
  "foreman.v1.AuthService/GetLoginUrl",
  "foreman.v1.AuthService/HandleCallback",
  "foreman.v1.AuthService/RefreshToken",
]);

export function isPublic(serviceTypeName: string, methodName: string): boolean {
  return PUBLIC_SERVICES.has(serviceTypeName) || PUBLIC_METHODS.has(`${serviceTypeName}/${methodName}`);
}

export function authInterceptor(options: { singleUserMode: boolean }): Interceptor {
  return (next) => async (req) => {
    if (isPublic(req.service.typeName, req.method.name)) return next(req);
    if (options.singleUserMode) {
      // Workers in single-user mode still authenticate with their credential (auth issue);
      // everything else is the local user.
      req.contextValues.set(principalKey, { kind: "user", userId: LOCAL_USER_ID });
      return next(req);
    }
    throw foremanError(Code.Unauthenticated, "UNAUTHENTICATED", "authentication required: multi-user login is not enabled on this server yet");
  };
}
