// Request ids and structured call logs. Every call gets an id (the caller's X-Request-Id when
// it sends a sane one), echoed in the response headers or trailers and in every log line. An
// error that is not a ConnectError is logged with its cause and reaches the client as Internal
// with the request id, never with the cause's text; a call its client ended (a reset, a closed
// connection) is Canceled, whatever Node threw, and no error.
//
// The access log: a call that failed, and every stream, is one info line; a unary call that
// succeeded is a debug line (FOREMAN_LOG_LEVEL=debug shows them). A line per successful call
// cost about a tenth of a cheap call's server CPU, and the worker protocol makes cheap calls
// by the thousand a second (heartbeats); /metrics counts them all by procedure and code.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { clientCanceled, internalError, serverBusy } from "../core/errors.js";
import { isPoolTimeout } from "../db/database.js";
import type { Logger } from "../logger.js";
import { loggerKey, requestIdKey } from "../api/context-keys.js";
import { adapterCallKey, requestIdFrom } from "./connect-adapter.js";
import { codeName, type Metrics } from "./metrics.js";
import { RateLimitedLog } from "./rate-limited-log.js";

/**
 * Whether a call failed because its client went away: its signal fired (a reset stream, a closed
 * connection) and the failure is what Node or connect-es say then (ERR_STREAM_PREMATURE_CLOSE
 * reading a bidi stream's body, a failed write, Aborted or Canceled), not a fault of the server's.
 */
function clientLeft(error: unknown, signal: AbortSignal): boolean {
  if (!signal.aborted) return false;
  return !(error instanceof ConnectError) || error.code === Code.Canceled || error.code === Code.Aborted;
}

function toConnectError(error: unknown, requestId: string, log: Logger, signal: AbortSignal, busy: RateLimitedLog): ConnectError {
  if (clientLeft(error, signal)) return clientCanceled();
  // Overload, not a fault: the client may retry, and thousands of such calls log a few lines.
  if (isPoolTimeout(error)) {
    busy.log({ request_id: requestId }, "calls refused: every database connection stayed busy (FOREMAN_DB_POOL_SIZE)");
    return serverBusy();
  }
  if (error instanceof ConnectError) {
    if (error.code === Code.Internal || error.code === Code.Unknown || error.code === Code.DataLoss) {
      log.error({ err: error, cause: error.cause }, "call failed");
    }
    return error;
  }
  log.error({ err: error }, "call failed with an unexpected error");
  return internalError(requestId, error);
}

export function loggingInterceptor(root: Logger, metrics: Metrics): Interceptor {
  const busy = new RateLimitedLog(root, "warn");
  return (next) => async (req) => {
    // The adapter made the call's request id, and leaves the logging and counting to this.
    const call = req.contextValues.get(adapterCallKey);
    if (call !== undefined) call.observed = true;
    const requestId = call?.requestId ?? requestIdFrom(req.header.get("x-request-id"));
    const procedure = `/${req.service.typeName}/${req.method.name}`;
    let child: Logger | undefined;
    const callLog = () => (child ??= root.child({ request_id: requestId, procedure }));
    const seconds = () => (performance.now() - started) / 1000;
    req.contextValues.set(requestIdKey, requestId);
    req.contextValues.set(loggerKey, callLog);
    const started = performance.now();
    try {
      const res = await next(req);
      res.header.set("x-request-id", requestId);
      if (!res.stream) {
        if (root.isLevelEnabled("debug")) callLog().debug({ code: "ok", duration_ms: Math.round(performance.now() - started) }, "call");
        metrics.observeCall(procedure, "ok", seconds());
        return res;
      }
      // A server stream is logged and counted when it ends.
      const messages = res.message;
      metrics.streamOpened();
      return {
        ...res,
        message: (async function* () {
          let code: Code | undefined;
          try {
            yield* messages;
          } catch (error) {
            const connectError = toConnectError(error, requestId, callLog(), req.signal, busy);
            code = connectError.code;
            connectError.metadata.set("x-request-id", requestId);
            throw connectError;
          } finally {
            const ended = (code: Code | undefined) => {
              metrics.streamClosed();
              metrics.observeCall(procedure, codeName(code), seconds());
              callLog().info({ code: code === undefined ? "ok" : Code[code], duration_ms: Math.round(performance.now() - started), stream: true }, "call");
            };
            // A stream that stopped because its client went away ended as canceled, not ok.
            if (code === undefined && req.signal.aborted) code = Code.Canceled;
            const client = call?.clientSignal;
            if (code !== undefined || client === undefined) {
              ended(code);
            } else {
              // A client's RST_STREAM ends the request body a moment before Node reports the
              // reset, so a bidi stream (reflection) seems to end cleanly: its outcome is known
              // when its HTTP stream closes, where a reset is a ConnectError reason.
              client.addEventListener("abort", () => ended(client.reason instanceof ConnectError ? Code.Canceled : undefined), { once: true });
            }
          }
        })(),
      };
    } catch (error) {
      const connectError = toConnectError(error, requestId, callLog(), req.signal, busy);
      connectError.metadata.set("x-request-id", requestId);
      callLog().info(
        { code: Code[connectError.code], duration_ms: Math.round(performance.now() - started), message: connectError.rawMessage },
        "call",
      );
      metrics.observeCall(procedure, codeName(connectError.code), seconds());
      throw connectError;
    }
  };
}
