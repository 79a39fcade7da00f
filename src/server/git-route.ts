// /git/sessions/<session id>/<repository id>.git/…: a run's workspace over git's smart HTTP
// protocol, for the worker holding the run (core/workspace-access.ts says who may, and what they
// see). The lease token comes as a bearer token, or as the password of HTTP basic auth (what
// git and isomorphic-git send from a credential; the user name is ignored). A request without
// one is asked for it (401 with a Basic challenge, so git's credential helpers answer it).
//
// Fetches and pushes run `git http-backend` (src/git/http-backend.ts), at most MAX_GIT_PROCESSES
// at once on this replica; more wait their turn. They do not queue behind the server's fetches
// from upstream (core/clones.ts): those write only refs/remotes/origin/*, these only the task
// branch, and both write objects the way git makes safe to do at once.
import { randomUUID } from "node:crypto";
import type http from "node:http";
import type http2 from "node:http2";
import { ConnectError, Code } from "@connectrpc/connect";
import type { Core } from "../core/context.js";
import { KeyedQueue } from "../core/clones.js";
import { grantWorkspace, MAX_PUSH_BYTES, recordWorkspacePush, WORKSPACE_PATH_PREFIX } from "../core/workspace-access.js";
import { serveSmartRequest, smartRequest } from "../git/http-backend.js";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

/** git processes serving workspaces at once on a replica: each holds memory and a CPU while it packs. */
const MAX_GIT_PROCESSES = 8;

const ID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const PATH = new RegExp(`^${WORKSPACE_PATH_PREFIX}(${ID})/(${ID})\\.git/(.+)$`, "i");

export { WORKSPACE_PATH_PREFIX };

function text(res: Response, status: number, message: string, extra: Record<string, string> = {}): void {
  if (res.headersSent) return;
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...extra });
  res.end(`${message}\n`);
}

/** The lease token of the request: a bearer token, or basic auth's password. */
function leaseToken(req: Request): string | undefined {
  const raw = req.headers.authorization;
  const value = Array.isArray(raw) ? raw[0] : raw;
  if (value === undefined) return undefined;
  const bearer = /^Bearer\s+(\S+)$/i.exec(value);
  if (bearer !== null) return bearer[1];
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(value);
  if (basic === null) return undefined;
  const decoded = Buffer.from(basic[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon === -1 ? undefined : decoded.slice(colon + 1);
}

const STATUS_OF: Partial<Record<Code, number>> = {
  [Code.NotFound]: 404,
  [Code.FailedPrecondition]: 403,
  [Code.InvalidArgument]: 400,
};

export function gitRoute(core: Core): (req: Request, res: Response) => void {
  const processes = new KeyedQueue(MAX_GIT_PROCESSES);
  return (req, res) => void serve(core, processes, req, res);
}

async function serve(core: Core, processes: KeyedQueue, req: Request, res: Response): Promise<void> {
  const started = Date.now();
  const requestId = randomUUID();
  const url = new URL(req.url ?? "/", "http://server");
  const match = PATH.exec(url.pathname);
  const request = match === null ? undefined : smartRequest(req.method ?? "", match[3]!, url.searchParams);
  if (match === null || request === undefined) {
    req.resume();
    text(res, 404, "not found: this server answers git's smart HTTP protocol here (info/refs, git-upload-pack, git-receive-pack)");
    return;
  }
  const [, sessionId, repositoryId] = match as unknown as [string, string, string];
  const log = core.logger.child({ request_id: requestId, session_id: sessionId, repository_id: repositoryId, service: request.service, git_request: request.kind });
  const token = leaseToken(req);
  if (token === undefined) {
    req.resume();
    log.info({ http_status: 401 }, "workspace request without a lease token");
    text(res, 401, "send the session's lease token (as a bearer token, or as the password of basic auth)", {
      "www-authenticate": 'Basic realm="foreman workspace", charset="UTF-8"',
      "x-request-id": requestId,
    });
    return;
  }
  try {
    const grant = await grantWorkspace(core, sessionId.toLowerCase(), repositoryId.toLowerCase(), token);
    // What a push moved is recorded for the other replicas before its answer ends, so the
    // worker's next call (its report names the commit) finds it wherever it lands.
    const record =
      request.kind === "rpc" && request.service === "git-receive-pack"
        ? () => recordWorkspacePush(core, grant).catch((error: unknown) => log.error({ err: error }, "a workspace push was not recorded"))
        : undefined;
    // Unique keys: the queue only bounds how many run at once.
    const outcome = await processes.run(randomUUID(), () =>
      serveSmartRequest(req, res, request, { gitDir: grant.gitDir, branch: grant.branch, maxPushBytes: MAX_PUSH_BYTES }, grant.workerId, record),
    );
    log.info(
      { http_status: outcome.status, worker_id: grant.workerId, branch: grant.branch, bytes_in: outcome.bytesIn, bytes_out: outcome.bytesOut, duration_ms: Date.now() - started },
      "workspace request",
    );
  } catch (error) {
    req.resume();
    if (error instanceof ConnectError && STATUS_OF[error.code] !== undefined) {
      const status = STATUS_OF[error.code]!;
      log.info({ http_status: status, reason: error.rawMessage }, "workspace request refused");
      text(res, status, error.rawMessage, { "x-request-id": requestId });
      return;
    }
    log.error({ err: error }, "workspace request failed");
    text(res, 500, `internal error (request id ${requestId})`, { "x-request-id": requestId });
  }
}
