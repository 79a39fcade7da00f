// Serves the Connect router's handlers on Node's http and http2 requests, in place of
// connect-node's connectNodeAdapter, whose few lines have two faults a client can reach:
//  - a request it cannot turn into a universal request (HTTP/1.0 without a Host header) throws
//    inside the server's request listener and ends the process;
//  - a call that fails inside the library while it writes the response (a client gone
//    mid-stream, a failed write, an error it cannot encode) is left unfinished and printed to
//    stderr with a stack trace, for anyone to trigger at will.
// Here the first is a 400; the second is ended (a 500, or the stream cut) and logged as one warn
// line with its code and no stack, rate-limited, or at debug when the client had left.
// It also gives each call its request id, answers a path that names no method in the caller's
// protocol (protocol-errors.ts), and logs and counts the calls the logging interceptor never
// saw: those connect-es refused before any interceptor ran.
import { randomUUID } from "node:crypto";
import type http from "node:http";
import type http2 from "node:http2";
import { Code, ConnectError, createConnectRouter, createContextKey, type ConnectRouter, type ConnectRouterOptions, type ContextValues } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import type { Logger } from "../logger.js";
import { codeName, type Metrics } from "./metrics.js";
import { answerUnknownMethod, quotedPath, reworkRefusal, rpcProtocol } from "./protocol-errors.js";
import { RateLimitedLog } from "./rate-limited-log.js";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/**
 * A path that ends as a procedure does, "…/package.Service/Method": a dotted service name, then
 * a method (a client with a wrong base URL sends "/prefix/package.Service/Method").
 */
const PROCEDURE_PATH = /\/[^/]*\.[^/]*\/[^/]+$/;

/** The client's X-Request-Id when it sent a sane one, else a new id. */
export function requestIdFrom(sent: string | string[] | null | undefined): string {
  return typeof sent === "string" && REQUEST_ID.test(sent) ? sent : randomUUID();
}

/** What the adapter knows of a call, for the logging interceptor. */
export interface AdapterCall {
  readonly requestId: string;
  /**
   * Fires when the call's HTTP stream closes, whether the call ended or the client went away
   * (then with a ConnectError reason for an HTTP/2 reset). The handler context's own signal
   * fires earlier, when connect-es has the answer, so it cannot tell the two apart.
   */
  readonly clientSignal: AbortSignal;
  /** Set by the logging interceptor, which then logs and counts the call; else the adapter does. */
  observed: boolean;
}

export const adapterCallKey = createContextKey<AdapterCall | undefined>(undefined, { description: "the adapter's view of the call" });

/** The procedure label of a path that names no method: one label, however many paths clients try. */
export const UNKNOWN_PROCEDURE = "unknown";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface ConnectAdapterOptions extends ConnectRouterOptions {
  routes(router: ConnectRouter): void;
  contextValues(req: NodeRequest): ContextValues;
  logger: Logger;
  /** Counts the calls the logging interceptor never saw. */
  metrics?: Metrics;
}

/** Returns a handler that answers a Connect, gRPC or gRPC-Web call, or false for another path. */
export function connectAdapter(options: ConnectAdapterOptions): (req: NodeRequest, res: NodeResponse) => boolean {
  const router = createConnectRouter({ acceptCompression: [compressionGzip, compressionBrotli], ...options });
  options.routes(router);
  const paths = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  const lateFailures = new RateLimitedLog(options.logger, "warn");

  /** One access-log line and count for a call the logging interceptor never saw. */
  const refused = (requestId: string, procedure: string, error: ConnectError, started: number, fields: Record<string, unknown> = {}) => {
    const seconds = (performance.now() - started) / 1000;
    options.metrics?.observeCall(procedure, codeName(error.code), seconds);
    options.logger.info(
      { request_id: requestId, procedure, ...fields, code: Code[error.code], duration_ms: Math.round(seconds * 1000), message: error.rawMessage, layer: "protocol" },
      "call",
    );
  };

  return (req, res) => {
    const started = performance.now();
    const url = req.url ?? "";
    const queryAt = url.indexOf("?");
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    const handler = paths.get(path);
    if (handler === undefined) {
      // Only a path shaped like a procedure is an RPC to a method the server lacks; any other
      // (/webhooks/gitlab) gets the caller's plain 404, whatever its content type.
      if (!PROCEDURE_PATH.test(path)) return false;
      const contentType = req.headers["content-type"];
      const protocol = rpcProtocol(req.method, contentType, queryAt === -1 ? "" : url.slice(queryAt + 1));
      if (protocol === undefined) return false; // not an RPC: the caller's plain 404
      const requestId = requestIdFrom(req.headers["x-request-id"]);
      const error = answerUnknownMethod(res as http.ServerResponse, protocol, contentType ?? "", path, requestId);
      refused(requestId, UNKNOWN_PROCEDURE, error, started, { path: quotedPath(path) });
      return true;
    }
    const procedure = handler.requestPath;
    let universal;
    let call: AdapterCall;
    try {
      universal = universalRequestFromNodeRequest(req as http.IncomingMessage, res as http.ServerResponse, undefined, options.contextValues(req));
      call = { requestId: requestIdFrom(req.headers["x-request-id"]), clientSignal: universal.signal, observed: false };
      universal.contextValues!.set(adapterCallKey, call);
    } catch (error) {
      options.logger.debug({ procedure, err: String(error) }, "request refused before its call began");
      if (!res.headersSent) res.writeHead(400, { "content-type": "text/plain; charset=utf-8" });
      res.end("bad request: a Host header (HTTP/1.x) or :authority (HTTP/2) is required\n");
      return true;
    }
    handler(universal)
      .then(async (answer) => {
        if (!call.observed) {
          call.observed = true; // logged and counted here, once, even if writing it fails
          const reworked = await reworkRefusal(answer, call.requestId);
          answer = reworked.answer;
          if (reworked.error !== undefined) refused(call.requestId, procedure, reworked.error, started);
        }
        await universalResponseToNodeResponse(answer, res as http.ServerResponse);
      })
      .catch((reason: unknown) => {
        endAnyway(res);
        const error = ConnectError.from(reason);
        const gone = error.code === Code.Aborted || error.code === Code.Canceled || universal.signal.aborted;
        if (!call.observed) options.metrics?.observeCall(procedure, gone ? "canceled" : codeName(error.code), (performance.now() - started) / 1000);
        // The client went away or cancelled: nothing is wrong with the server.
        if (gone) {
          options.logger.debug({ procedure, code: Code[error.code] }, "call ended early: the client went away");
          return;
        }
        lateFailures.log({ procedure, code: Code[error.code], message: error.rawMessage }, "call failed while its response was written");
      });
    return true;
  };
}

/** Ends a response its handler left unfinished: a bare 500 if nothing was sent, else a cut. */
function endAnyway(res: NodeResponse): void {
  if (res.writableEnded) return;
  if (!res.headersSent) {
    res.writeHead(500);
    res.end();
  } else if ("stream" in res) {
    res.stream.destroy();
  } else {
    res.destroy();
  }
}
