// One port for HTTP/1.1 and cleartext HTTP/2 (h2c). Node cannot serve both on one port without
// TLS, so a net.Server peeks at each connection's first bytes: the HTTP/2 preface starts with
// "PRI", which no HTTP/1.1 method does. The peeked bytes are put back with unshift(); only the
// HTTP/1.1 socket is resumed, since a flowing socket handed to http2 loses the preface.
//
// Every connection and request ends, whatever the client does: a request must arrive whole
// within a deadline (only HTTP/2 request streams that stay open on purpose are exempt, with an
// idle bound instead), a connection with no request in progress is closed after an idle
// timeout, an HTTP/2 peer must answer pings, and one address may hold only so many connections.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Logger } from "../logger.js";
import { RateLimitedLog } from "./rate-limited-log.js";

export type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

const PREFACE = Buffer.from("PRI");
/** A connection that sends nothing for this long is closed before it reaches a server. */
const FIRST_BYTES_TIMEOUT_MS = 30_000;
/** Longest wait for a whole HTTP/1.1 header block. */
const HEADERS_TIMEOUT_MS = 30_000;
/** How often Node checks HTTP/1.1 requests against their deadline: a late one ends within this. */
const DEADLINE_CHECK_MS = 1_000;
/** Longest wait for an HTTP/2 peer to answer a ping (gRPC's keep-alive timeout). */
const PING_ANSWER_MS = 20_000;
/** At most one warning a minute about connections refused for their address. */
const REFUSED_WARNING_MS = 60_000;

export interface DualServerOptions {
  /** Largest HTTP/1.1 header block, in bytes. */
  maxHeaderBytes?: number;
  /** A request must have arrived whole, headers and body, this long after it began. */
  requestBodyTimeoutMs: number;
  /**
   * An HTTP/1.1 connection between requests, or an HTTP/2 session with no open stream, is
   * closed after this long; an HTTP/2 session is pinged this often and must answer within it
   * (at most PING_ANSWER_MS).
   */
  idleTimeoutMs: number;
  /** Most connections open at once from one address (IPv6: one /64); 0 means no cap. */
  maxConnectionsPerAddress: number;
  /**
   * Paths whose request body stays open on purpose (client and bidi streams, such as gRPC
   * reflection): over HTTP/2 they get an idle bound instead of the body deadline. Over HTTP/1.1
   * every request has the deadline.
   */
  openRequestPaths: readonly string[];
  logger?: Logger;
}

export interface DualServer {
  listen(port: number, host: string): Promise<number>;
  /** Stops accepting, lets in-flight requests finish, then closes what is left after timeoutMs. */
  close(timeoutMs: number): Promise<void>;
  /** Whether close() has begun; new HTTP/1.1 responses then ask the client to close. */
  readonly closing: boolean;
  /** Connections open now, of either protocol. */
  readonly connections: number;
}

/**
 * Which client a remote address counts for: an IPv4 address (also when IPv4-mapped), or an
 * IPv6 address's /64, since one client usually holds a whole /64.
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined) return "unknown";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1]!;
  if (!address.includes(":")) return address;
  const [head = "", tail] = address.split("%", 1)[0]!.toLowerCase().split("::");
  const groups = (part: string | undefined) => (part === undefined || part === "" ? [] : part.split(":"));
  const left = groups(head);
  const right = groups(tail);
  const zeros = tail === undefined ? [] : new Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0");
  const all = [...left, ...zeros, ...right];
  return `${all.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(":")}::/64`;
}

export function createDualServer(handler: RequestHandler, options: DualServerOptions): DualServer {
  const { requestBodyTimeoutMs: bodyMs, idleTimeoutMs: idleMs, maxConnectionsPerAddress: maxPerAddress, logger } = options;
  const openRequestPaths = new Set(options.openRequestPaths);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  const perAddress = new Map<string, number>();
  let closing = false;

  const http1 = http.createServer(
    { maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024, connectionsCheckingInterval: DEADLINE_CHECK_MS },
    (req, res) => {
      if (closing) res.setHeader("Connection", "close");
      handler(req, res);
    },
  );
  // Node counts requestTimeout only until the request has arrived whole, so it bounds unary
  // calls and uploads while response streams (WatchTasks, Health.Watch) live on. A late
  // request is answered 408 and its connection closed.
  http1.requestTimeout = bodyMs;
  http1.headersTimeout = Math.min(HEADERS_TIMEOUT_MS, bodyMs);
  http1.keepAliveTimeout = idleMs;
  // http.Server tracks its connections (for closeIdleConnections and the deadlines) from its
  // 'listening' event; this one never listens itself, so announce it.
  http1.emit("listening");

  const h2 = http2.createServer({ maxSessionMemory: 64 }, handler);
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    supervise(session);
    if (closing) drain(session);
  });

  /**
   * Bounds an HTTP/2 session and its streams. Node 20 gives no sign when nghttp2 ends a session
   * for a protocol error (a bad frame, bad HPACK, an oversized header): it sends GOAWAY and stops
   * reading, so it never sees the client close either, and the socket stays open for good.
   * Such a session no longer answers pings, so the peer is pinged every idle period and the
   * session destroyed when no answer comes; a session with no open stream is closed then.
   */
  function supervise(session: http2.ServerHttp2Session): void {
    const answerMs = Math.min(idleMs, PING_ANSWER_MS);
    let open = 0;
    let opened = 0;
    let check: NodeJS.Timeout | undefined;
    let unanswered: NodeJS.Timeout | undefined;
    const schedule = () => {
      clearTimeout(check);
      check = setTimeout(ping, idleMs).unref();
    };
    const ping = () => {
      schedule();
      if (unanswered !== undefined || session.destroyed) return;
      const idle = open === 0;
      const seen = opened;
      unanswered = setTimeout(() => {
        logger?.debug({ idle }, "HTTP/2 session destroyed: the peer did not answer a ping");
        session.destroy();
      }, answerMs).unref();
      const answered = (error: Error | null) => {
        clearTimeout(unanswered);
        unanswered = undefined;
        // The answer comes after every stream the peer opened before the ping, so a session
        // that opened none in the meantime is idle and can go with a GOAWAY that refuses nothing.
        if (error === null && idle && open === 0 && opened === seen && !session.closed) {
          logger?.debug("HTTP/2 session closed: idle");
          session.close();
        }
      };
      try {
        if (!session.ping(answered)) session.destroy(); // too many pings unanswered already
      } catch {
        session.destroy(); // the session is going away already
      }
    };
    schedule();
    session.once("close", () => {
      clearTimeout(check);
      clearTimeout(unanswered);
    });
    // A frame that could not be sent on the connection itself leaves it unusable.
    session.on("frameError", (_type: number, _code: number, streamId: number) => {
      if (streamId === 0) session.destroy();
    });
    session.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      open++;
      opened++;
      const deadline = bodyDeadline(stream, headers);
      // One close listener per stream, since this is on every call's path.
      stream.once("close", () => {
        clearTimeout(deadline);
        if (--open === 0) schedule();
      });
    });
  }

  /** Resets a stream whose request body does not arrive in time; returns the timer to clear. */
  function bodyDeadline(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): NodeJS.Timeout | undefined {
    if (stream.endAfterHeaders) return undefined; // no body to wait for
    const path = String(headers[":path"] ?? "").split("?", 1)[0]!;
    if (openRequestPaths.has(path)) {
      // Open on purpose while it is used; one left idle is ended.
      stream.setTimeout(idleMs, () => {
        logger?.debug("request stream reset: idle");
        stream.close(http2.constants.NGHTTP2_CANCEL);
      });
      return undefined;
    }
    return setTimeout(() => {
      if (stream.closed || stream.destroyed || stream.state.remoteClose) return; // the body arrived whole
      logger?.debug("request stream reset: its body did not arrive in time");
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }, bodyMs).unref();
  }

  // One line a minute at most, then a count of the refusals it did not log.
  const refusals = logger === undefined ? undefined : new RateLimitedLog(logger, "warn", 1, REFUSED_WARNING_MS);
  function refuse(socket: net.Socket, key: string): void {
    socket.destroy();
    refusals?.log(
      { client: key, max_connections_per_address: maxPerAddress },
      "connection refused: too many open from one address (behind a load balancer, raise FOREMAN_MAX_CONNECTIONS_PER_ADDRESS or set it to 0)",
    );
  }

  const server = net.createServer((socket) => {
    const key = addressKey(socket.remoteAddress);
    const held = perAddress.get(key) ?? 0;
    if (maxPerAddress > 0 && held >= maxPerAddress) {
      refuse(socket, key);
      return;
    }
    perAddress.set(key, held + 1);
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      const left = perAddress.get(key)! - 1;
      if (left === 0) perAddress.delete(key);
      else perAddress.set(key, left);
    });
    socket.on("error", () => socket.destroy());
    socket.setTimeout(FIRST_BYTES_TIMEOUT_MS, () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, PREFACE.length);
      const isHttp2 = head.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isHttp2 && head.length < PREFACE.length) return; // too few bytes to tell yet
      socket.off("data", onData);
      socket.pause();
      socket.setTimeout(0);
      socket.unshift(head);
      if (isHttp2) {
        h2.emit("connection", socket);
      } else {
        http1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  });

  /**
   * Ends an HTTP/2 session gracefully. session.close() sends GOAWAY naming the last stream the
   * server has read, so a call the client had already sent but the server had not yet read was
   * refused (REFUSED_STREAM, which connect-node's client reports as Internal). A PING first:
   * its answer comes after every stream the client sent before it, so the GOAWAY sent then
   * admits them all, and they finish. (Not the two-GOAWAY dance of RFC 9113 §6.8: Node's client
   * closes on the first GOAWAY and leaves a request it had queued but not sent hanging.)
   * A client that never answers the PING is cut off by close()'s deadline.
   */
  function drain(session: http2.ServerHttp2Session): void {
    if (session.closed || session.destroyed) return;
    try {
      if (session.ping(() => session.close())) return;
    } catch {
      // Too many pings in flight, or the session is going away already: close at once.
    }
    session.close();
  }

  return {
    get closing() {
      return closing;
    },
    get connections() {
      return sockets.size;
    },
    listen(port, host) {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          resolve((server.address() as net.AddressInfo).port);
        });
      });
    },
    async close(timeoutMs) {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) drain(session);
      const deadline = Date.now() + timeoutMs;
      while (sockets.size > 0 && Date.now() < deadline) {
        http1.closeIdleConnections();
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      for (const socket of sockets) socket.destroy();
      http1.close(() => {}); // stops its connection-checking timer; it never listened, so no error matters
      await stopped;
    },
  };
}
