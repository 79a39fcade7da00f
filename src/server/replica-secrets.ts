// The replica route: how a replica that got a worker's GetSecrets fetches the task's secrets
// from the replica holding them in memory (core/secret-vault.ts). Not a public RPC: one POST
// path, answered only to a caller that proves it has FOREMAN_SECRET_KEY.
//
//  - The request is JSON (the task, the session, the worker, the hash of its lease token, the
//    holder's replica id and the set's generation, a timestamp and a random nonce), signed with
//    an HMAC-SHA256 under a key derived from FOREMAN_SECRET_KEY (x-foreman-replica-signature).
//    The holder refuses a bad signature, a timestamp more than REPLAY_WINDOW_MS away, and a nonce
//    it has seen within that window.
//  - The holder checks the lease again against the database itself, then answers (also signed,
//    echoing the nonce) with the values sealed by the secret box (AES-256-GCM) under additional
//    data naming the nonce, the asker, the task and the session: the values never cross the
//    network in clear, and a sealed answer opens for that request only.
//  - The asker told "no such replica" (the holder restarted: a new replica id), or refused a
//    connection (nothing listens there any more), reports the secrets gone; any other failure
//    is worth a retry.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type http from "node:http";
import type http2 from "node:http2";
import { readOrCreateKeyFile } from "../auth/secret-box.js";
import { ConfigError, type Config } from "../config.js";
import type { Core } from "../core/context.js";
import { answerHolderRequest, sweepSecrets, type HolderAnswer, type HolderRequest, type SecretPeers } from "../core/secret-vault.js";
import type { Logger } from "../logger.js";
import { RateLimitedLog } from "./rate-limited-log.js";
import { secretKeyFile } from "./secret-key.js";

export const REPLICA_SECRETS_PATH = "/internal/replica/v1/task-secrets";
const SIGNATURE_HEADER = "x-foreman-replica-signature";
/** How far a request's timestamp may be from the holder's clock, either way; nonces are kept this long. */
export const REPLAY_WINDOW_MS = 60_000;
/** Most nonces remembered at once; past it, requests are refused until old ones age out. */
const NONCES_MAX = 100_000;
const REQUEST_MAX_BYTES = 16 * 1024;
const ASK_TIMEOUT_MS = 10_000;

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

/**
 * Where other replicas reach this one, given the port it listens on: FOREMAN_REPLICA_URL, else
 * FOREMAN_HOST when it is one address, else (SQLite: every server of the file is on this
 * machine) the loopback. Checked before the server starts: on PostgreSQL with a wildcard host
 * another machine's replica could not find this one, so the start stops saying what to set.
 */
export function replicaAddress(config: Pick<Config, "replicaUrl" | "host" | "databaseUrl">): (port: number) => string {
  if (config.replicaUrl !== undefined) return () => config.replicaUrl!;
  const host = config.host;
  const wildcard = host === "" || host === "0.0.0.0" || host === "::" || host === "[::]";
  if (!wildcard) return (port) => `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  if (config.databaseUrl === undefined) return (port) => `http://127.0.0.1:${port}`;
  throw new ConfigError(
    "FOREMAN_REPLICA_URL",
    `is unset, and FOREMAN_HOST (${host}) is every address, so other replicas on this PostgreSQL database cannot know where to reach this one ` +
      "for the task secrets it holds: set FOREMAN_REPLICA_URL to this server's address as they reach it (http://10.0.0.5:54871, say), or FOREMAN_HOST to that one address",
  );
}

/** The route's HMAC keys: derived from FOREMAN_SECRET_KEY first (which signs), then the previous keys (which only verify). */
const routeKeys = new WeakMap<Pick<Config, "dataDir" | "secrets">, Promise<Buffer[]>>();
function keysOf(config: Pick<Config, "dataDir" | "secrets">): Promise<Buffer[]> {
  let keys = routeKeys.get(config);
  if (keys === undefined) {
    keys = (async () => {
      // Single-user mode's key file exists by now: the secret box read or made it at start.
      const current = config.secrets.key ?? (await readOrCreateKeyFile(secretKeyFile(config))).key;
      return [current, ...config.secrets.previousKeys].map((key) => createHmac("sha256", key).update("foreman replica route v1").digest());
    })();
    routeKeys.set(config, keys);
  }
  return keys;
}

function sign(key: Buffer, direction: "request" | "response", body: string): string {
  return createHmac("sha256", key).update(`${direction}\n${REPLICA_SECRETS_PATH}\n${body}`, "utf8").digest("base64url");
}

function verifies(keys: Buffer[], direction: "request" | "response", body: string, signature: string | undefined): boolean {
  if (signature === undefined) return false;
  const given = Buffer.from(signature, "utf8");
  return keys.some((key) => {
    const expected = Buffer.from(sign(key, direction, body), "utf8");
    return expected.length === given.length && timingSafeEqual(expected, given);
  });
}

/** What a sealed answer is bound to: this request only. */
function sealedAad(nonce: string, asker: string, request: HolderRequest): string {
  return `replica task secrets v1\0${nonce}\0${asker}\0${request.taskId}\0${request.sessionId}`;
}

interface WireRequest extends HolderRequest {
  timestamp: number;
  nonce: string;
  /** The asking replica's id. */
  asker: string;
}

type WireAnswer = { nonce: string } & ({ kind: "secrets"; sealed: string } | { kind: "gone" } | { kind: "none" } | { kind: "lease_lost"; why: string });

const STRING_FIELDS = ["taskId", "sessionId", "workerId", "leaseTokenHash", "generation", "holderReplicaId", "nonce", "asker"] as const;

function parseRequest(body: string): WireRequest | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const r = value as Record<string, unknown>;
  if (typeof r.timestamp !== "number" || !STRING_FIELDS.every((f) => typeof r[f] === "string" && (r[f] as string).length <= 256)) return undefined;
  return r as unknown as WireRequest;
}

/** The holder's side: the handler of REPLICA_SECRETS_PATH. */
export function replicaSecretsRoute(config: Config, core: Core, logger: Logger): (req: Request, res: Response) => void {
  const seen = new Map<string, number>();
  // Anyone who reaches the port can send refused requests: they must not flood the log.
  const refusals = new RateLimitedLog(logger, "warn");
  const answer = (res: Response, status: number, body: string, signature?: string) => {
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...(signature === undefined ? {} : { [SIGNATURE_HEADER]: signature }) });
    res.end(body);
  };
  const refuse = (res: Response, status: number, problem: string) => {
    refusals.log({ path: REPLICA_SECRETS_PATH, status, problem }, "replica route: a request was refused");
    answer(res, status, JSON.stringify({ error: problem }));
  };
  return (req, res) =>
    void (async () => {
      try {
        const body = await readBody(req);
        if (body === undefined) return refuse(res, 413, "request too large");
        const keys = await keysOf(config);
        const header = req.headers[SIGNATURE_HEADER];
        if (!verifies(keys, "request", body, typeof header === "string" ? header : undefined)) return refuse(res, 401, "bad signature");
        const request = parseRequest(body);
        if (request === undefined) return refuse(res, 400, "malformed request");
        const now = Date.now();
        if (Math.abs(now - request.timestamp) > REPLAY_WINDOW_MS) return refuse(res, 401, "timestamp outside the replay window");
        for (const [nonce, at] of seen) {
          if (at > now - REPLAY_WINDOW_MS) break;
          seen.delete(nonce);
        }
        if (seen.has(request.nonce) || seen.size >= NONCES_MAX) return refuse(res, 401, "nonce seen before");
        seen.set(request.nonce, now);
        const held = await answerHolderRequest(core, request);
        const wire: WireAnswer =
          held.kind === "secrets"
            ? { nonce: request.nonce, kind: "secrets", sealed: core.secrets.seal(JSON.stringify(held.values), sealedAad(request.nonce, request.asker, request)) }
            : held.kind === "unreachable"
              ? { nonce: request.nonce, kind: "gone" }
              : { nonce: request.nonce, ...held };
        const text = JSON.stringify(wire);
        if (held.kind === "secrets") logger.info({ task_id: request.taskId, session_id: request.sessionId, asker_replica_id: request.asker }, "replica route: task secrets handed to a replica, sealed");
        answer(res, 200, text, sign(keys[0]!, "response", text));
      } catch (error) {
        logger.error({ err: error }, "replica route failed");
        if (!res.headersSent) answer(res, 500, JSON.stringify({ error: "internal" }));
        else res.end();
      }
    })();
}

async function readBody(req: Request): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > REQUEST_MAX_BYTES) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** The asker's side: how this replica asks another for a task's secrets. */
export class ReplicaPeers implements SecretPeers {
  constructor(
    private readonly config: Config,
    private readonly core: Core,
  ) {}

  async ask(url: string, request: HolderRequest): Promise<HolderAnswer> {
    const keys = await keysOf(this.config);
    const asker = this.core.taskSecrets.replicaId;
    const wire: WireRequest = { ...request, timestamp: Date.now(), nonce: randomBytes(16).toString("base64url"), asker };
    const body = JSON.stringify(wire);
    let res: globalThis.Response;
    try {
      res = await fetch(`${url}${REPLICA_SECRETS_PATH}`, {
        method: "POST",
        headers: { "content-type": "application/json", [SIGNATURE_HEADER]: sign(keys[0]!, "request", body) },
        body,
        signal: AbortSignal.timeout(ASK_TIMEOUT_MS),
      });
    } catch (error) {
      const code = (error as { cause?: { code?: unknown } }).cause?.code;
      // Nothing listens there any more: the process (and its memory) is gone.
      if (code === "ECONNREFUSED") return { kind: "gone" };
      return { kind: "unreachable", why: typeof code === "string" ? code : (error as Error).name };
    }
    const text = await res.text();
    if (res.status !== 200) return { kind: "unreachable", why: `it answered HTTP ${res.status}` };
    if (!verifies(keys, "response", text, res.headers.get(SIGNATURE_HEADER) ?? undefined)) return { kind: "unreachable", why: "its answer is not signed with this server's key" };
    let answer: WireAnswer;
    try {
      answer = JSON.parse(text) as WireAnswer;
    } catch {
      return { kind: "unreachable", why: "its answer is not JSON" };
    }
    if (answer.nonce !== wire.nonce) return { kind: "unreachable", why: "its answer is for another request" };
    if (answer.kind === "gone" || answer.kind === "none") return { kind: answer.kind };
    if (answer.kind === "lease_lost") return { kind: "lease_lost", why: String(answer.why) };
    if (answer.kind !== "secrets") return { kind: "unreachable", why: "its answer is of no known kind" };
    try {
      const values = JSON.parse(this.core.secrets.open(answer.sealed, sealedAad(wire.nonce, asker, request))) as Record<string, unknown>;
      if (typeof values !== "object" || values === null || !Object.values(values).every((v) => typeof v === "string")) throw new Error("not a map of strings");
      return { kind: "secrets", values: values as Record<string, string> };
    } catch {
      return { kind: "unreachable", why: "its sealed answer does not open with this server's keys" };
    }
  }
}

/** Once listening: this replica's address for the others, the way to ask them, and the sweep. */
export function startReplicaSecrets(config: Config, core: Core, logger: Logger, url: string): void {
  const vault = core.taskSecrets;
  vault.url = url;
  vault.peers = new ReplicaPeers(config, core);
  vault.startSweeping(() => sweepSecrets(core, logger));
}
