// git's smart HTTP protocol for one repository, served by Debian's `git http-backend` run as a
// CGI program (RFC 3875), one process a request, never through a shell. The caller decides who
// may ask and what they may see or change; this file only runs the program with that policy as
// git configuration (GIT_CONFIG_COUNT/KEY/VALUE, git 2.31+) and copies the request in and the
// answer out, streaming both ways.
import { spawn } from "node:child_process";
import type http from "node:http";
import type http2 from "node:http2";
import path from "node:path";
import { gitEnv } from "./command.js";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

export const HTTP_BACKEND = "/usr/lib/git-core/git-http-backend";

/** The three requests of git's smart protocol; nothing else (the "dumb" protocol's files, or anything else) is served. */
export type SmartRequest =
  | { kind: "advertise"; service: "git-upload-pack" | "git-receive-pack" }
  | { kind: "rpc"; service: "git-upload-pack" | "git-receive-pack" };

/** Which smart request a method, a path below the repository and a query are, or undefined. */
export function smartRequest(method: string, rest: string, query: URLSearchParams): SmartRequest | undefined {
  if (method === "GET" && rest === "info/refs") {
    const service = query.get("service");
    if (service === "git-upload-pack" || service === "git-receive-pack") return { kind: "advertise", service };
    return undefined;
  }
  if (method === "POST" && (rest === "git-upload-pack" || rest === "git-receive-pack")) return { kind: "rpc", service: rest };
  return undefined;
}

export interface BranchPolicy {
  /** The repository's git folder (a clone's .git). */
  gitDir: string;
  /** The one branch the caller sees and may push to (fast-forward only, never deleted). */
  branch: string;
  /** The largest pack a push may send, in bytes. */
  maxPushBytes: number;
}

/**
 * git configuration that shows only refs/heads/<branch> (every other ref and HEAD are hidden,
 * and git refuses an update of a hidden ref: a push to another branch) and refuses a push that
 * is not a fast-forward or deletes. No hook runs, no gc starts after a push, no user or system
 * configuration is read.
 */
function policyConfig(policy: BranchPolicy): [string, string][] {
  return [
    ["transfer.hideRefs", "refs/"],
    ["transfer.hideRefs", "HEAD"],
    ["transfer.hideRefs", `!refs/heads/${policy.branch}`],
    ["http.receivepack", "true"],
    ["http.uploadarch", "false"],
    ["receive.denyNonFastForwards", "true"],
    ["receive.denyDeletes", "true"],
    ["receive.maxInputSize", String(policy.maxPushBytes)],
    ["receive.autogc", "false"],
    ["receive.advertisePushOptions", "false"],
    ["uploadpack.allowFilter", "true"],
    ["core.hooksPath", "/dev/null"],
  ];
}

function header(req: Request, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

export interface BackendOutcome {
  /** The status the answer had (0: none was sent). */
  status: number;
  /** Bytes of the answer's body. */
  bytesOut: number;
  /** Bytes of the request's body. */
  bytesIn: number;
}

/**
 * Answers one smart request from git http-backend under the policy. Resolves when the answer
 * has ended (or the client went away, which ends the process). `remoteUser` is who the caller
 * authenticated as, for git's own records. `beforeEnd` runs once git has answered in full and
 * before the answer ends, so a client's push returns only after it (a rejection is the
 * caller's to log; the answer ends all the same).
 */
export function serveSmartRequest(
  req: Request,
  answer: Response,
  request: SmartRequest,
  policy: BranchPolicy,
  remoteUser: string,
  beforeEnd: () => Promise<void> = async () => {},
): Promise<BackendOutcome> {
  const config = policyConfig(policy);
  const env = gitEnv({
    GIT_PROJECT_ROOT: path.dirname(policy.gitDir),
    GIT_HTTP_EXPORT_ALL: "1",
    GATEWAY_INTERFACE: "CGI/1.1",
    REQUEST_METHOD: request.kind === "advertise" ? "GET" : "POST",
    PATH_INFO: `/${path.basename(policy.gitDir)}/${request.kind === "advertise" ? "info/refs" : request.service}`,
    QUERY_STRING: request.kind === "advertise" ? `service=${request.service}` : "",
    CONTENT_TYPE: header(req, "content-type") ?? "",
    REMOTE_USER: remoteUser,
    REMOTE_ADDR: req.socket?.remoteAddress ?? "",
    AUTH_TYPE: "Bearer",
    GIT_CONFIG_COUNT: String(config.length),
    // Protocol version 0 on purpose (no GIT_PROTOCOL passed on): its wants are checked against
    // the refs it advertised, which are the task branch only.
  });
  config.forEach(([key, value], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = key;
    env[`GIT_CONFIG_VALUE_${i}`] = value;
  });
  const length = header(req, "content-length");
  if (length !== undefined) env.CONTENT_LENGTH = length;
  const encoding = header(req, "content-encoding");
  if (encoding !== undefined) env.HTTP_CONTENT_ENCODING = encoding;

  // The two answer types write alike; their union's overloads do not type-check as one.
  const res = answer as http.ServerResponse;
  return new Promise((resolve) => {
    const outcome: BackendOutcome = { status: 0, bytesOut: 0, bytesIn: 0 };
    const child = spawn(HTTP_BACKEND, [], { env, stdio: ["pipe", "pipe", "pipe"] });
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      resolve(outcome);
    };
    // A client that goes away ends the process; an answer that ended lets it finish.
    res.on("close", () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      finish();
    });
    child.on("error", () => {
      if (!res.headersSent) {
        outcome.status = 500;
        res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
      }
      res.end("the server could not run git\n");
    });
    child.stderr.resume();
    child.stdin.on("error", () => {});
    req.on("data", (chunk: Buffer) => (outcome.bytesIn += chunk.length));
    req.pipe(child.stdin);

    let head = Buffer.alloc(0);
    let headerDone = false;
    child.stdout.on("data", (chunk: Buffer) => {
      if (headerDone) {
        outcome.bytesOut += chunk.length;
        if (!res.write(chunk)) {
          child.stdout.pause();
          res.once("drain", () => child.stdout.resume());
        }
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = headerEnd(head);
      if (end === undefined) {
        if (head.length > 64 * 1024) child.kill("SIGKILL");
        return;
      }
      headerDone = true;
      const { status, headers } = parseCgiHeaders(head.subarray(0, end.at).toString("latin1"));
      outcome.status = status;
      res.writeHead(status, headers);
      const body = head.subarray(end.at + end.length);
      outcome.bytesOut += body.length;
      if (body.length > 0) res.write(body);
    });
    child.stdout.on("end", () => {
      if (!headerDone && !res.headersSent) {
        outcome.status = 502;
        res.writeHead(502, { "content-type": "text/plain; charset=utf-8" });
        res.end("git gave no answer\n");
        return;
      }
      void beforeEnd()
        .catch(() => {})
        .finally(() => res.end());
    });
  });
}

function headerEnd(head: Buffer): { at: number; length: number } | undefined {
  const crlf = head.indexOf("\r\n\r\n");
  const lf = head.indexOf("\n\n");
  if (crlf === -1 && lf === -1) return undefined;
  return crlf !== -1 && (lf === -1 || crlf < lf) ? { at: crlf, length: 4 } : { at: lf, length: 2 };
}

/** Headers a CGI program may not set on our answer (hop by hop, or the server's own business). */
const DROPPED = new Set(["connection", "transfer-encoding", "keep-alive", "upgrade", "content-length"]);

function parseCgiHeaders(text: string): { status: number; headers: Record<string, string> } {
  let status = 200;
  const headers: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon === -1) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "status") status = Number.parseInt(value, 10) || 200;
    else if (!DROPPED.has(name)) headers[name] = value;
  }
  return { status, headers };
}
