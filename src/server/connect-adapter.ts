// Serves the Connect router's handlers on Node's http and http2 requests, in place of
// connect-node's connectNodeAdapter, whose few lines have two faults a client can reach:
//  - a request it cannot turn into a universal request (HTTP/1.0 without a Host header) throws
//    inside the server's request listener and ends the process;
//  - a call that fails inside the library while it writes the response (a client gone
//    mid-stream, a failed write, an error it cannot encode) is left unfinished and printed to
//    stderr with a stack trace, for anyone to trigger at will.
// Here the first is a 400; the second is ended (a 500, or the stream cut) and logged as one warn
// line with its code and no stack, rate-limited, or at debug when the client had left.
import type http from "node:http";
import type http2 from "node:http2";
import { Code, ConnectError, createConnectRouter, createContextKey, type ConnectRouter, type ConnectRouterOptions, type ContextValues } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import type { Logger } from "../logger.js";
import { RateLimitedLog } from "./rate-limited-log.js";

/**
 * The client's side of a call: fires when its HTTP stream closes, whether the call ended or the
 * client went away (then with a ConnectError reason for an HTTP/2 reset). The handler context's
 * own signal fires earlier, when connect-es has the answer, so it cannot tell the two apart.
 */
export const clientSignalKey = createContextKey<AbortSignal | undefined>(undefined, { description: "the client's side of the call" });

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface ConnectAdapterOptions extends ConnectRouterOptions {
  routes(router: ConnectRouter): void;
  contextValues(req: NodeRequest): ContextValues;
  logger: Logger;
}

/** Returns a handler that answers a Connect, gRPC or gRPC-Web call, or false for another path. */
export function connectAdapter(options: ConnectAdapterOptions): (req: NodeRequest, res: NodeResponse) => boolean {
  const router = createConnectRouter({ acceptCompression: [compressionGzip, compressionBrotli], ...options });
  options.routes(router);
  const paths = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  const lateFailures = new RateLimitedLog(options.logger, "warn");

  return (req, res) => {
    const handler = paths.get((req.url ?? "").split("?", 1)[0]!);
    if (handler === undefined) return false;
    const procedure = handler.requestPath;
    let universal;
    try {
      universal = universalRequestFromNodeRequest(req as http.IncomingMessage, res as http.ServerResponse, undefined, options.contextValues(req));
      universal.contextValues!.set(clientSignalKey, universal.signal);
    } catch (error) {
      options.logger.debug({ procedure, err: String(error) }, "request refused before its call began");
      if (!res.headersSent) res.writeHead(400, { "content-type": "text/plain; charset=utf-8" });
      res.end("bad request: a Host header (HTTP/1.x) or :authority (HTTP/2) is required\n");
      return true;
    }
    handler(universal)
      .then((answer) => universalResponseToNodeResponse(answer, res as http.ServerResponse))
      .catch((reason: unknown) => {
        endAnyway(res);
        const error = ConnectError.from(reason);
        // The client went away or cancelled: nothing is wrong with the server.
        if (error.code === Code.Aborted || error.code === Code.Canceled || universal.signal.aborted) {
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
