// POST /webhooks/github: the HTTP side of a GitHub webhook delivery (method, content type, a
// size-capped raw body, a small JSON answer and one log line per delivery); core/webhooks.ts
// decides what the delivery means. Neither the signature nor any secret is ever logged.
import { randomUUID } from "node:crypto";
import type http from "node:http";
import type http2 from "node:http2";
import type { Core } from "../core/context.js";
import { DELIVERY_ID, EVENT, handleGithubDelivery, type WebhookOutcome } from "../core/webhooks.js";

export const GITHUB_WEBHOOK_PATH = "/webhooks/github";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

const STATUS: Record<WebhookOutcome["outcome"], number> = {
  created: 200,
  pong: 200,
  duplicate: 200,
  ignored: 202,
  unauthorized: 401,
  bad_request: 400,
  // The server's configuration lacks a key: a fault on this side, which the sender cannot fix.
  secret_unreadable: 500,
};

function header(req: Request, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** A header for the log line: as sent only when it has the form GitHub's has, bounded by it. */
function loggable(value: string | undefined, form: RegExp): string | undefined {
  if (value === undefined) return undefined;
  return form.test(value) ? value : "(invalid)";
}

function reply(res: Response, status: number, body: Record<string, unknown>, extra: Record<string, string> = {}): void {
  if (res.headersSent) return;
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...extra });
  res.end(JSON.stringify(body));
}

/** The client closed the request before sending all of its body. */
class ClientGone extends Error {}

/**
 * The body, or "too_large" as soon as it passes max bytes. What is left of a refused body is
 * read and dropped (not kept) so the client can finish sending and read the answer.
 */
function readBody(req: Request, max: number): Promise<Buffer | "too_large"> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on("data", (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > max) {
        done = true;
        chunks.length = 0;
        resolve("too_large");
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!done) resolve(Buffer.concat(chunks));
      done = true;
    });
    req.on("error", () => {
      if (!done) reject(new ClientGone());
      done = true;
    });
    req.on("close", () => {
      if (!done) reject(new ClientGone());
      done = true;
    });
  });
}


export async function handleGithubWebhook(core: Core, maxBytes: number, req: Request, res: Response): Promise<void> {
  const requestId = randomUUID();
  const event = header(req, "x-github-event");
  const deliveryId = header(req, "x-github-delivery");
  const log = core.logger.child({
    request_id: requestId,
    webhook: "github",
    // Logged before they are checked, so only in the form they are checked for.
    event: loggable(event, EVENT),
    delivery_id: loggable(deliveryId, DELIVERY_ID),
  });
  const answer = (status: number, body: Record<string, unknown>, fields: Record<string, unknown>, extra?: Record<string, string>) => {
    if (status >= 500) log.error({ http_status: status, ...fields }, "webhook delivery");
    else log.info({ http_status: status, ...fields }, "webhook delivery");
    reply(res, status, body, { "x-request-id": requestId, ...extra });
  };

  try {
    if (req.method !== "POST") {
      answer(405, { status: "method not allowed" }, { outcome: "method_not_allowed" }, { allow: "POST" });
      return;
    }
    const mediaType = (header(req, "content-type") ?? "").split(";")[0]!.trim().toLowerCase();
    if (mediaType !== "application/json") {
      answer(415, { status: "unsupported media type", message: "send the delivery as application/json" }, {
        outcome: "unsupported_media_type",
      });
      return;
    }
    const declared = Number(header(req, "content-length") ?? "0");
    const body = declared > maxBytes ? "too_large" : await readBody(req, maxBytes);
    if (body === "too_large") {
      answer(413, { status: "payload too large", message: `a delivery may be at most ${maxBytes} bytes` }, {
        outcome: "too_large",
      });
      return;
    }

    const result = await handleGithubDelivery(core, {
      event,
      deliveryId,
      signature: header(req, "x-hub-signature-256"),
      body,
    });
    const status = STATUS[result.outcome];
    const answerBody: Record<string, unknown> = { status: result.outcome };
    if (result.outcome === "created") answerBody.todo_items = result.todoItems;
    if ("reason" in result) answerBody.message = result.reason;
    answer(status, answerBody, {
      outcome: result.outcome,
      repository_ids: result.repositoryIds,
      ...("reason" in result ? { reason: result.reason } : {}),
    });
  } catch (error) {
    if (error instanceof ClientGone) {
      log.info({ outcome: "client_gone" }, "webhook delivery ended before its body did");
      return;
    }
    log.error({ err: error }, "webhook delivery failed");
    reply(res, 500, { status: "error", message: `internal error (request id ${requestId})` }, { "x-request-id": requestId });
  }
}
