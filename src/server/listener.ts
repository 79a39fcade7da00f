// One port for HTTP/1.1 and cleartext HTTP/2 (h2c). Node cannot serve both on one port without
// TLS, so a net.Server peeks at each connection's first bytes: the HTTP/2 preface starts with
// "PRI", which no HTTP/1.1 method does. The peeked bytes are put back with unshift(); only the
// HTTP/1.1 socket is resumed, since a flowing socket handed to http2 loses the preface.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

export type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

const PREFACE = Buffer.from("PRI");
/** A connection that sends nothing for this long is closed before it reaches a server. */
const FIRST_BYTES_TIMEOUT_MS = 30_000;

export interface DualServer {
  listen(port: number, host: string): Promise<number>;
  /** Stops accepting, lets in-flight requests finish, then closes what is left after timeoutMs. */
  close(timeoutMs: number): Promise<void>;
  /** Whether close() has begun; new HTTP/1.1 responses then ask the client to close. */
  readonly closing: boolean;
}

export function createDualServer(handler: RequestHandler, options: { maxHeaderBytes?: number } = {}): DualServer {
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  let closing = false;

  const http1 = http.createServer({ maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024 }, (req, res) => {
    if (closing) res.setHeader("Connection", "close");
    handler(req, res);
  });
  // Long-lived server streams must not be cut by Node's default request timeout.
  http1.requestTimeout = 0;
  http1.headersTimeout = 30_000;
  http1.keepAliveTimeout = 65_000;
  // http.Server tracks its connections (for closeIdleConnections and the headers timeout)
  // from its 'listening' event; this one never listens itself, so announce it.
  http1.emit("listening");

  const h2 = http2.createServer({ maxSessionMemory: 64 }, handler);
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (closing) drain(session);
  });

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
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
