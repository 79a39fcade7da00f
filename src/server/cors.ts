// CORS for browser clients of Connect and gRPC-Web, for the configured origins only.
import type http from "node:http";
import type http2 from "node:http2";

const ALLOWED_METHODS = "POST, GET, OPTIONS";
const ALLOWED_HEADERS = [
  "Content-Type",
  "Connect-Protocol-Version",
  "Connect-Timeout-Ms",
  "Connect-Accept-Encoding",
  "Connect-Content-Encoding",
  "Grpc-Timeout",
  "X-Grpc-Web",
  "X-User-Agent",
  "Authorization",
  "X-Request-Id",
].join(", ");
const EXPOSED_HEADERS = ["Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin", "X-Request-Id"].join(", ");

/**
 * Adds CORS headers when the request's origin is allowed. Returns true when the request was a
 * preflight and has been answered.
 */
export function applyCors(
  origins: readonly string[],
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
): boolean {
  const origin = req.headers.origin;
  const preflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
  const allowed = origin !== undefined && (origins.includes("*") || origins.includes(origin));
  if (allowed) {
    res.setHeader("Access-Control-Allow-Origin", origin);
    res.setHeader("Vary", "Origin");
    res.setHeader("Access-Control-Expose-Headers", EXPOSED_HEADERS);
  }
  if (!preflight) return false;
  if (allowed) {
    res.setHeader("Access-Control-Allow-Methods", ALLOWED_METHODS);
    res.setHeader("Access-Control-Allow-Headers", ALLOWED_HEADERS);
    res.setHeader("Access-Control-Max-Age", "7200");
  }
  // A disallowed origin gets a preflight answer without the headers, which the browser refuses.
  res.writeHead(allowed ? 204 : 403);
  res.end();
  return true;
}
