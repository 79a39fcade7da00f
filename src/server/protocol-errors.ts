// Errors the protocol layer makes, which no interceptor sees:
//  - a path that names no method never reaches connect-es (its router matches by path), so the
//    server answers it here, in the caller's protocol when its content type names one;
//  - connect-es answers a unary call whose request it cannot read (a body over
//    FOREMAN_MAX_MESSAGE_BYTES, a body that does not parse, a bad timeout or encoding header, a
//    gRPC call without its one message) before any interceptor runs, and has no hook there
//    (connect-es 2.1: the universal handler reads and parses the body first). Its answer is
//    read back here and made again with the request id and an ErrorInfo.
// The adapter logs and counts both, once; the access log (interceptors.ts) never saw them.
import { STATUS_CODES } from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { encodeEnvelope, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeFromHttpStatus, codeToHttpStatus, createEndStreamSerialization, endStreamFlag, errorFromJsonBytes, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { foremanError, statusError, withErrorInfo } from "../core/errors.js";
import { escapeText, truncate } from "../core/text.js";

/** The RPC protocols, as a request's content type (or a Connect GET's query) names them. */
export type RpcProtocol = "grpc" | "grpc-web" | "connect" | "connect-stream";

export function rpcProtocol(method: string | undefined, contentType: string | undefined, query: string): RpcProtocol | undefined {
  const type = (contentType ?? "").split(";", 1)[0]!.trim().toLowerCase();
  if (type.startsWith("application/grpc-web")) return "grpc-web";
  if (type === "application/grpc" || type.startsWith("application/grpc+")) return "grpc";
  if (type.startsWith("application/connect+")) return "connect-stream";
  if (type === "application/json" || type === "application/proto") return "connect";
  if (method === "GET" && new URLSearchParams(query).get("connect") === "v1") return "connect";
  return undefined;
}

/** Longest part of a requested path that a message or log line quotes. */
const MAX_PATH_QUOTED = 200;

/** A client-sent path as a message or a log line may quote it: escaped and cut. */
export function quotedPath(path: string): string {
  return escapeText(truncate(path, MAX_PATH_QUOTED));
}

/** The error again, with an ErrorInfo (its code's reason, the request id) unless it has one. */
function withInfo(error: ConnectError, requestId: string): ConnectError {
  return withErrorInfo(error, { request_id: requestId });
}

type NodeHeaders = Record<string, string>;

interface Reply {
  writeHead(status: number, headers: NodeHeaders): unknown;
  addTrailers(trailers: NodeHeaders): void;
  end(body?: Uint8Array): unknown;
}

function plain(headers: Headers): NodeHeaders {
  const out: NodeHeaders = {};
  headers.forEach((value, key) => (out[key] = value));
  return out;
}

/** Answers a call to a method the server does not have, as Unimplemented in the caller's protocol. */
export function answerUnknownMethod(res: Reply, protocol: RpcProtocol, contentType: string, path: string, requestId: string): ConnectError {
  const error = foremanError(Code.Unimplemented, "NOT_IMPLEMENTED", `unknown method ${quotedPath(path)}: this server has no such service or method`, {
    request_id: requestId,
  });
  const header = { "x-request-id": requestId };
  switch (protocol) {
    case "grpc": {
      // As connect-es answers a gRPC error: headers, no message, the status in the trailers.
      res.writeHead(200, { ...header, "content-type": contentType });
      res.addTrailers(plain(setTrailerStatus(new Headers(), error)));
      res.end();
      break;
    }
    case "grpc-web":
      // A trailers-only response: the status in the headers (gRPC-Web has no HTTP trailers).
      res.writeHead(200, { ...header, "content-type": contentType, ...plain(setTrailerStatus(new Headers(), error)) });
      res.end();
      break;
    case "connect":
      // The Connect protocol's status for unimplemented (501), with its JSON error.
      res.writeHead(codeToHttpStatus(error.code), { ...header, "content-type": "application/json" });
      res.end(errorToJsonBytes(error, {}));
      break;
    case "connect-stream":
      // A Connect stream always answers 200; the error is its end-of-stream message.
      res.writeHead(200, { ...header, "content-type": contentType });
      res.end(encodeEnvelope(endStreamFlag, createEndStreamSerialization({}).serialize({ metadata: new Headers(), error })));
      break;
  }
  return error;
}

const COMPRESSIONS = [compressionGzip, compressionBrotli];

async function readAll(body: AsyncIterable<Uint8Array> | undefined): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  if (body !== undefined) for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function decompressed(bytes: Uint8Array, encoding: string | null): Promise<Uint8Array> {
  const compression = COMPRESSIONS.find((c) => c.name === encoding);
  return compression === undefined ? bytes : compression.decompress(bytes, Number.MAX_SAFE_INTEGER);
}

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

/** The last gRPC-Web frame of a body with its flags, or undefined. */
function lastFrame(bytes: Uint8Array): { flags: number; data: Uint8Array } | undefined {
  let frame: { flags: number; data: Uint8Array } | undefined;
  for (let at = 0; at + 5 <= bytes.length; ) {
    const length = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0);
    frame = { flags: bytes[at]!, data: bytes.subarray(at + 5, at + 5 + length) };
    at += 5 + length;
  }
  return frame;
}

/**
 * The error of an answer connect-es made before any interceptor ran, or undefined for a
 * success; the answer returned carries the request id and, where it holds an error, an ErrorInfo.
 */
export async function reworkRefusal(answer: UniversalServerResponse, requestId: string): Promise<{ answer: UniversalServerResponse; error?: ConnectError }> {
  // A copy: connect-es shares its bare answers (415, 405) between calls.
  const header = new Headers(answer.header);
  header.set("x-request-id", requestId);
  const contentType = header.get("content-type") ?? "";

  if (answer.trailer !== undefined) {
    // gRPC: the call is over (no message was sent), so its trailers are final.
    const found = findTrailerError(answer.trailer);
    if (found === undefined) return { answer: { ...answer, header } };
    const error = withInfo(found, requestId);
    const trailer = setTrailerStatus(new Headers(), error);
    return { answer: { ...answer, header, trailer }, error };
  }

  if (answer.status !== 200 && contentType === "application/json") {
    // Connect unary: a JSON error body, maybe compressed.
    const encoding = header.get("content-encoding");
    const bytes = await decompressed(await readAll(answer.body), encoding);
    const fallback = statusError(codeFromHttpStatus(answer.status), `HTTP ${answer.status}`);
    const error = withInfo(errorFromJsonBytes(bytes, undefined, fallback), requestId);
    const body = errorToJsonBytes(error, {});
    header.delete("content-encoding");
    header.set("content-length", String(body.byteLength));
    return { answer: { ...answer, header, body: once(body) }, error };
  }

  if (answer.status === 200 && contentType.startsWith("application/grpc-web")) {
    // gRPC-Web: the status is in the body's last frame, a trailer, maybe compressed.
    const bytes = await readAll(answer.body);
    const frame = lastFrame(bytes);
    const data = frame === undefined || (frame.flags & trailerFlag) === 0 ? undefined : frame.flags & 1 ? await decompressed(frame.data, header.get("grpc-encoding")) : frame.data;
    const found = data === undefined ? undefined : findTrailerError(trailerParse(data));
    if (found === undefined) return { answer: { ...answer, header, body: once(bytes) } };
    // No message came before the trailer: the call failed before it began.
    const error = withInfo(found, requestId);
    return { answer: { ...answer, header, body: once(encodeEnvelope(trailerFlag, trailerSerialize(setTrailerStatus(new Headers(), error)))) }, error };
  }

  if (answer.status !== 200) {
    // A bare status (415, 405): no room for details; the client reads the code from the status.
    const error = statusError(codeFromHttpStatus(answer.status), `HTTP ${answer.status} ${STATUS_CODES[answer.status] ?? ""}`.trim());
    return { answer: { ...answer, header }, error };
  }
  return { answer: { ...answer, header } };
}
