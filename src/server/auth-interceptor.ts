// Authenticates every call but the public ones and puts the principal in the call's context.
//  - WorkerService takes only a worker credential (RegisterWorker: the registration token in
//    its body); a user's credential there is PermissionDenied.
//  - Every other service takes a user: in single-user mode the local user, with nothing to
//    check; in multi-user mode Foreman's access token. A worker credential there is
//    PermissionDenied.
import type { DescMethod } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { AuthService } from "../../gen/foreman/v1/auth_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import type { Core } from "../core/context.js";
import { permissionDenied, unauthenticated } from "../core/errors.js";
import { authenticateAccessToken } from "../core/logins.js";
import { authenticateWorker } from "../core/workers.js";
import { LOCAL_USER_ID } from "../model/users.js";
import { WORKER_CREDENTIAL_PREFIX } from "../auth/opaque-token.js";
import { principalKey, type Principal } from "../api/principal.js";

/** Procedures anyone may call: health, reflection and the steps of a login. */
const PUBLIC_SERVICES = new Set(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);
const PUBLIC_METHODS = new Set<DescMethod>([AuthService.method.getLoginUrl, AuthService.method.handleCallback, AuthService.method.refreshToken]);

function isPublic(method: DescMethod): boolean {
  return PUBLIC_METHODS.has(method) || PUBLIC_SERVICES.has(method.parent.typeName);
}

const MAX_CREDENTIAL_LENGTH = 4096;

/** Single-user mode's caller, the same for every call. */
const LOCAL_PRINCIPAL: Principal = Object.freeze({ kind: "user", userId: LOCAL_USER_ID });

/** The bearer token, undefined when there is no Authorization header; a malformed one is refused. */
function readBearer(headers: Headers): string | undefined {
  const value = headers.get("authorization");
  if (value === null) return undefined;
  const match = /^Bearer +(\S+)$/i.exec(value.trim());
  if (match === null || match[1]!.length > MAX_CREDENTIAL_LENGTH) {
    throw unauthenticated("the Authorization header must be \"Bearer <token>\"");
  }
  return match[1];
}

export function authInterceptor(core: Core): Interceptor {
  return (next) => async (req) => {
    const service = req.service.typeName;
    if (isPublic(req.method)) return next(req);
    const bearer = readBearer(req.header);
    const forWorkers = service === WorkerService.typeName;

    // RegisterWorker is how a worker gets its credential: the registration token in the body is
    // checked there, and an old credential the worker sends is its previous identity, which core
    // checks (a restarted worker gets its id back; an unknown credential is ignored).
    if (forWorkers && req.method.name === "RegisterWorker" && (bearer === undefined || bearer.startsWith(WORKER_CREDENTIAL_PREFIX))) {
      return next(req);
    }

    if (bearer?.startsWith(WORKER_CREDENTIAL_PREFIX)) {
      const worker = await authenticateWorker(core, bearer);
      if (!forWorkers) throw permissionDenied(`a worker credential can call only ${WorkerService.typeName}, not ${service}`);
      req.contextValues.set(principalKey, { kind: "worker", ...worker });
      return next(req);
    }

    if (forWorkers) {
      if (bearer === undefined) {
        throw unauthenticated(`${service} needs the worker credential that RegisterWorker returned (Authorization: Bearer fwk_…)`);
      }
      // A user's token here: refuse a bad one as such, a good one as the wrong kind of caller.
      if (core.auth.login !== undefined) await authenticateAccessToken(core, bearer);
      throw permissionDenied(`${service} is for workers; a user credential cannot call it`);
    }

    if (core.auth.login === undefined) {
      req.contextValues.set(principalKey, LOCAL_PRINCIPAL);
      return next(req);
    }
    if (bearer === undefined) {
      throw unauthenticated("authentication required: send \"Authorization: Bearer <access token>\" (AuthService logs in)");
    }
    req.contextValues.set(principalKey, { kind: "user", userId: await authenticateAccessToken(core, bearer) });
    return next(req);
  };
}
