// Asking a git remote what it has, over git's smart HTTP protocol (isomorphic-git's ls-refs, with
// its node:http client). Every call is bounded: a deadline for the whole exchange, a cap on the
// bytes read, no connection kept open after it. Credentials go in an Authorization header, never
// in a URL, and no error here carries them (nor the remote's answer): a RemoteError says what
// kind of failure it was, and core/ turns that into the error a client reads.
//
// The server may not be made to reach what only it can reach: when `addressProblem` is given,
// every address a host name resolves to is checked before connecting (so a name that resolves
// to 127.0.0.1 or 169.254.169.254 is refused however it was written), and redirects are not
// followed (a redirect could name any host).
import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import type { LookupFunction } from "node:net";
import * as isogit from "isomorphic-git";
import gitHttp from "isomorphic-git/http/node";

export interface BasicCredentials {
  username: string;
  password: string;
}

export type RemoteProblem =
  /** Connection refused or reset, host not found, the answer cut off, a 5xx: try again later. */
  | "unreachable"
  /** No answer within the deadline. */
  | "timeout"
  /** 401 or 403: the credentials (or their absence) were refused. */
  | "auth"
  /** 404: no repository at that URL. */
  | "not-found"
  /** A 3xx: the repository moved, and redirects are not followed here. */
  | "redirect"
  /** The URL answered, but not as a git remote. */
  | "not-git"
  /** The host resolves to an address the server may not reach. */
  | "address";

export class RemoteError extends Error {
  constructor(
    readonly problem: RemoteProblem,
    message: string,
    /** The HTTP status the remote answered, if it answered one. */
    readonly status?: number,
  ) {
    super(message);
    this.name = "RemoteError";
  }
}

export interface RemoteOptions {
  credentials?: BasicCredentials | undefined;
  /** The whole exchange's deadline; with `idle`, how long the remote may send nothing. */
  timeoutMs: number;
  /** Ends the exchange early (the server is shutting down). */
  signal?: AbortSignal | undefined;
  /** Most bytes of answers read in the exchange; undefined: no bound. */
  maxBytes?: number | undefined;
  /** Re-arm the deadline whenever the remote sends something (a clone or fetch may take long, but not stall). */
  idle?: boolean | undefined;
  /** What is wrong with connecting to this IP address, or undefined; absent: any address. */
  addressProblem?: ((address: string) => string | undefined) | undefined;
}

export interface RemoteHead {
  /** The branch the remote's HEAD names (its default branch), or undefined (an empty repository, or no symref sent). */
  defaultBranch: string | undefined;
  /** The commit id of `branch` when one was asked about, else of the default branch; undefined when there is none. */
  commit: string | undefined;
}

/** How long an aborted exchange may take to stop writing before its caller goes on anyway. */
const SETTLE_MS = 5000;
const noop = () => undefined;

/** Most bytes of answers read in one exchange: a ref list of a few refs is far smaller. */
const MAX_ANSWER_BYTES = 8 * 1024 * 1024;

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "ETIMEDOUT",
  "ECONNABORTED",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/**
 * The remote's default branch (what its HEAD names) and, when `branch` is given, whether that
 * branch exists (`commit` undefined when not). Two small ls-refs requests (protocol v2; v1
 * servers answer with their whole ref list, filtered here). Throws RemoteError.
 */
export async function readRemoteHead(url: string, branch: string | undefined, options: RemoteOptions): Promise<RemoteHead> {
  return withDeadline({ maxBytes: MAX_ANSWER_BYTES, ...options }, async (client) => {
    const headers = authorization(options.credentials);
    const heads = await isogit.listServerRefs({ http: client, url, headers, protocolVersion: 2, prefix: "HEAD", symrefs: true });
    const head = heads.find((r) => r.ref === "HEAD");
    const target = head?.target?.startsWith("refs/heads/") ? head.target.slice("refs/heads/".length) : undefined;
    if (branch === undefined) return { defaultBranch: target, commit: head?.oid };
    const ref = `refs/heads/${branch}`;
    const refs = await isogit.listServerRefs({ http: client, url, headers, protocolVersion: 2, prefix: ref });
    return { defaultBranch: target, commit: refs.find((r) => r.ref === ref)?.oid };
  });
}

export function authorization(credentials: BasicCredentials | undefined): Record<string, string> {
  if (credentials === undefined) return {};
  return { Authorization: `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`, "utf8").toString("base64")}` };
}

/** Runs an exchange with an HTTP client bound to one deadline and byte budget, and classifies its failure. */
export async function withDeadline<T>(options: RemoteOptions, exchange: (client: isogit.HttpClient) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let timedOut = false;
  const expire = () => {
    timedOut = true;
    controller.abort();
  };
  let timer = setTimeout(expire, options.timeoutMs);
  const stop = () => controller.abort();
  options.signal?.addEventListener("abort", stop, { once: true });
  if (options.signal?.aborted) controller.abort();
  const progress = () => {
    if (!options.idle || timedOut) return;
    clearTimeout(timer);
    timer = setTimeout(expire, options.timeoutMs);
  };
  const agents = makeAgents(options.addressProblem);
  let refusedAddress: string | undefined;
  /** What went wrong inside an answer's body: isomorphic-git reports it as a parse error of its own. */
  let bodyFailure: RemoteError | undefined;
  let read = 0;
  const client: isogit.HttpClient = {
    async request(request) {
      const response = await gitHttp.request({
        ...request,
        signal: controller.signal,
        agent: request.url.startsWith("https:") ? agents.https : agents.http,
        fetchOptions: { followRedirects: options.addressProblem === undefined },
      });
      const body = response.body;
      if (body === undefined) return response;
      // Every smart-HTTP answer about refs ends with a flush-pkt ("0000"); one that ends
      // otherwise was cut off, which isomorphic-git would read as a short ref list.
      const packets = response.statusCode === 200 && /^application\/x-git-/.test(String(response.headers?.["content-type"] ?? ""));
      return {
        ...response,
        body: (async function* () {
          let tail = "";
          const chunks = (async function* () {
            try {
              yield* body;
            } catch (error) {
              const code = (error as { code?: string }).code;
              bodyFailure = new RemoteError("unreachable", `its answer was cut off${code === undefined ? "" : ` (${code})`}`);
              throw bodyFailure;
            }
          })();
          for await (const chunk of chunks) {
            read += chunk.byteLength;
            progress();
            if (options.maxBytes !== undefined && read > options.maxBytes) {
              bodyFailure = new RemoteError("not-git", `the remote answered more than ${options.maxBytes} bytes`);
              throw bodyFailure;
            }
            tail = (tail + Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).subarray(-4).toString("latin1")).slice(-4);
            yield chunk;
          }
          if (packets && tail !== "0000") {
            bodyFailure = new RemoteError("unreachable", "its answer was cut off");
            throw bodyFailure;
          }
        })(),
      };
    },
  };
  agents.onRefused = (problem) => {
    refusedAddress = problem;
  };
  // The exchange and the deadline race: a remote that stops sending mid-answer ends at the deadline too.
  const deadline = new Promise<never>((_, reject) =>
    controller.signal.addEventListener("abort", () => reject(timedOut ? new RemoteError("timeout", `the remote ${options.idle ? "sent nothing for" : "did not answer within"} ${options.timeoutMs} ms`) : new RemoteError("unreachable", "the exchange was ended")), {
      once: true,
    }),
  );
  const running = exchange(client);
  try {
    const result = await Promise.race([running, deadline]);
    // An answer cut off where isomorphic-git stopped reading anyway still fails the exchange.
    if (bodyFailure !== undefined) throw bodyFailure;
    return result;
  } catch (error) {
    if (options.signal?.aborted && !timedOut) throw new RemoteError("unreachable", "the server is shutting down");
    if (refusedAddress !== undefined) throw new RemoteError("address", refusedAddress);
    if (bodyFailure !== undefined) throw bodyFailure;
    if (timedOut) throw new RemoteError("timeout", `the remote ${options.idle ? "sent nothing for" : "did not answer within"} ${options.timeoutMs} ms`);
    throw classify(error);
  } finally {
    options.signal?.removeEventListener("abort", stop);
    clearTimeout(timer);
    controller.abort();
    // What the exchange still does after the abort (isomorphic-git writing what it had) ends
    // before this returns, so that a caller may remove what it wrote.
    let waited: NodeJS.Timeout | undefined;
    await Promise.race([running.then(noop, noop), new Promise<void>((resolve) => (waited = setTimeout(resolve, SETTLE_MS)))]);
    clearTimeout(waited);
    agents.http.destroy();
    agents.https.destroy();
  }
}

interface Agents {
  http: http.Agent;
  https: https.Agent;
  onRefused: (problem: string) => void;
}

function makeAgents(addressProblem: RemoteOptions["addressProblem"]): Agents {
  const agents: Agents = { http: undefined as never, https: undefined as never, onRefused: () => {} };
  let lookup: LookupFunction | undefined;
  if (addressProblem !== undefined) {
    lookup = (hostname, lookupOptions, callback) => {
      dns.lookup(hostname, { ...lookupOptions, all: true }, (error, addresses) => {
        if (error) return callback(error, "", 4);
        const list = addresses as dns.LookupAddress[];
        for (const { address } of list) {
          const problem = addressProblem(address);
          if (problem !== undefined) {
            agents.onRefused(`the remote's host resolves to ${address}, which ${problem}`);
            return callback(Object.assign(new Error("address refused"), { code: "EADDRREFUSED" }), "", 4);
          }
        }
        if (lookupOptions.all) return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, list);
        const first = list[0];
        if (first === undefined) return callback(Object.assign(new Error("no address"), { code: "ENOTFOUND" }), "", 4);
        return callback(null, first.address, first.family);
      });
    };
  }
  agents.http = new http.Agent({ keepAlive: false, ...(lookup === undefined ? {} : { lookup }) });
  agents.https = new https.Agent({ keepAlive: false, ...(lookup === undefined ? {} : { lookup }) });
  return agents;
}

function classify(error: unknown): RemoteError {
  if (error instanceof RemoteError) return error;
  const e = error as { code?: string; data?: { statusCode?: number }; name?: string };
  if (e.code === "HttpError") {
    const status = e.data?.statusCode ?? 0;
    if (status === 401 || status === 403) return new RemoteError("auth", `HTTP ${status}`, status);
    if (status === 404) return new RemoteError("not-found", "the remote has no repository at this URL (HTTP 404)");
    if (status >= 300 && status < 400) return new RemoteError("redirect", `the remote answered with a redirect (HTTP ${status}); give the URL it moved to`);
    if (status >= 500) return new RemoteError("unreachable", `the remote failed to answer (HTTP ${status})`);
    return new RemoteError("not-git", `the remote answered HTTP ${status}, not as a git remote`);
  }
  if (e.code !== undefined && NETWORK_CODES.has(e.code)) {
    const what = e.code === "ENOTFOUND" || e.code === "EAI_AGAIN" ? "its host name does not resolve" : e.code === "ECONNREFUSED" ? "the connection was refused" : "the connection failed";
    return new RemoteError("unreachable", `the remote did not answer: ${what} (${e.code})`);
  }
  if (e.code === "SmartHttpError" || e.code === "ParseError" || e.code === "UnknownTransportError" || e.code === "EmptyServerResponseError") {
    return new RemoteError("not-git", "the URL answered, but not as a git remote (no smart HTTP ref listing)");
  }
  if (e.name === "AbortError") return new RemoteError("timeout", "the exchange with the remote was cut short");
  return new RemoteError("unreachable", "the remote did not answer as expected");
}
