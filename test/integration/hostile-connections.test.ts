// Connections and requests that a broken or hostile client never finishes must still end:
// HTTP/2 protocol errors (after which Node 20 stops reading the socket and never closes it),
// request bodies that never arrive whole, sessions that open no stream, and too many
// connections from one address. Raw sockets send what no well-behaved client would; a test
// passes when the server closes them, seen as 'close' on the client's socket. Deadlines are
// configured short (1 s) and the tests wait for events, never for a measured duration; the one
// sleep (long-lived streams outliving the deadlines) only makes sure the deadlines have passed.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file_grpc_reflection_v1_reflection, ServerReflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  file_grpc_reflection_v1alpha_reflection,
  ServerReflection as ServerReflectionV1Alpha,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_health_v1_health, Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/health/v1/health_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { FOREMAN_FILES } from "../../src/api/routes.js";
import { addressKey, createDualServer, type DualServer } from "../../src/server/listener.js";
import { caller } from "../helpers/fixtures.js";
import { startTestServer, type Protocol, type TestServer } from "../helpers/server.js";

const PROTOCOLS: Protocol[] = ["connect-http1", "connect-h2c", "grpc", "grpc-web"];
const LIST = "/foreman.v1.WorkspaceService/ListWorkspaces";
const REFLECTION_INFO = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const REFLECTION_INFO_V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
/** Short deadlines, so that a test sees them pass. */
const SHORT = { FOREMAN_REQUEST_BODY_TIMEOUT_SECONDS: "1", FOREMAN_IDLE_TIMEOUT_SECONDS: "1" };
/**
 * For streams that must outlive the deadlines: a peer must answer the server's ping within the
 * idle timeout, so 3 s keeps a test process that stalls for a moment from looking dead.
 */
const LONG = { FOREMAN_REQUEST_BODY_TIMEOUT_SECONDS: "1", FOREMAN_IDLE_TIMEOUT_SECONDS: "3", FOREMAN_STREAM_KEEPALIVE_SECONDS: "1" };
/** Waits here end on events; this only bounds a test that would otherwise hang. */
const WAIT_MS = 60_000;

// --- HTTP/2 on the wire (RFC 9113), just enough to send what Node's client never would ---

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const DATA = 0x0;
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const SETTINGS_FRAME = 0x4;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const MAX_FRAME = 16_384;

function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

const SETTINGS = frame(SETTINGS_FRAME, 0, 0);

/** An HPACK integer with an n-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, prefixBits: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([value]);
  const bytes = [max];
  for (value -= max; value >= 128; value = Math.floor(value / 128)) bytes.push((value % 128) + 128);
  bytes.push(value);
  return Buffer.from(bytes);
}

/** A literal header field without indexing, new name, no Huffman coding (RFC 7541 §6.2.2). */
function hpackLiteral(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0]), hpackInt(name.length, 7), Buffer.from(name), hpackInt(value.length, 7), Buffer.from(value)]);
}

function requestHeaders(path: string, extra: [string, string][] = [], contentType = "application/json"): Buffer {
  const fields: [string, string][] = [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "localhost"],
    ["content-type", contentType],
    ...extra,
  ];
  return Buffer.concat(fields.map(([name, value]) => hpackLiteral(name, value)));
}

/** A header block on stream 1, cut into a HEADERS frame and as many CONTINUATION frames as it needs. */
function headerFrames(block: Buffer, endStream: boolean): Buffer[] {
  const frames: Buffer[] = [];
  for (let offset = 0; offset < block.length; offset += MAX_FRAME) {
    const first = offset === 0;
    const last = offset + MAX_FRAME >= block.length;
    const flags = (last ? END_HEADERS : 0) | (first && endStream ? END_STREAM : 0);
    frames.push(frame(first ? HEADERS : CONTINUATION, flags, 1, block.subarray(offset, offset + MAX_FRAME)));
  }
  return frames;
}

/** The frames in bytes the server sent (it sends no preface), up to the last whole one. */
function framesIn(bytes: Buffer): { type: number; streamId: number; payload: Buffer }[] {
  const frames = [];
  for (let offset = 0; offset + 9 <= bytes.length; ) {
    const length = bytes.readUIntBE(offset, 3);
    if (offset + 9 + length > bytes.length) break;
    frames.push({ type: bytes[offset + 3]!, streamId: bytes.readUInt32BE(offset + 5) & 0x7fffffff, payload: bytes.subarray(offset + 9, offset + 9 + length) });
    offset += 9 + length;
  }
  return frames;
}

/** The error code of the first RST_STREAM the server sent, if any. */
function rstStreamCode(bytes: Buffer): number | undefined {
  return framesIn(bytes).find((f) => f.type === RST_STREAM)?.payload.readUInt32BE(0);
}

/** The connection preface, empty SETTINGS, then `frames`. */
function h2(...frames: Buffer[]): Buffer {
  return Buffer.concat([PREFACE, SETTINGS, ...frames]);
}

const PROTOCOL_ERRORS: [string, Buffer][] = [
  ["a DATA frame on stream 0", h2(frame(DATA, 0, 0, Buffer.from("x")))],
  ["a SETTINGS frame of the wrong length", h2(frame(SETTINGS_FRAME, 0, 0, Buffer.alloc(5)))],
  ["a WINDOW_UPDATE of 0 on the connection", h2(frame(WINDOW_UPDATE, 0, 0, Buffer.alloc(4)))],
  ["a header block that is not HPACK", h2(frame(HEADERS, END_HEADERS | END_STREAM, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f])))],
  ["a 300 kB header (HEADERS + CONTINUATION)", h2(...headerFrames(requestHeaders(LIST, [["x-big", "v".repeat(300_000)]]), true))],
  [
    "a 300 kB header block of 20 headers",
    h2(...headerFrames(requestHeaders(LIST, Array.from({ length: 20 }, (_, i): [string, string] => [`x-big-${i}`, "v".repeat(15_000)])), true)),
  ],
  ["a GOAWAY from the client, then silence", h2(frame(GOAWAY, 0, 0, Buffer.alloc(8)))],
];

// --- raw connections ---

interface RawConnection {
  socket: net.Socket;
  /** Resolves when the socket has closed (the server closed it: the client never does). */
  closed: Promise<void>;
  /** Everything the server sent so far. */
  received(): Buffer;
}

function connectRaw(port: number, bytes?: Buffer): RawConnection {
  const socket = net.connect(port, "127.0.0.1");
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  socket.on("error", () => {}); // a reset is one way for the server to close
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  if (bytes !== undefined) socket.write(bytes);
  return { socket, closed, received: () => Buffer.concat(chunks) };
}

async function connected(connection: RawConnection): Promise<void> {
  if (!connection.socket.connecting) return;
  await new Promise<void>((resolve, reject) => {
    connection.socket.once("connect", resolve);
    connection.socket.once("close", () => reject(new Error("closed before connecting")));
  });
}

/** One HTTP/1.1 GET /healthz on a raw connection; resolves with the status line. */
async function healthzOn(connection: RawConnection): Promise<string> {
  const before = connection.received().length;
  connection.socket.write("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
  await until(() => connection.received().subarray(before).includes("\r\n\r\n") || connection.socket.destroyed);
  return connection.received().subarray(before).toString("latin1").split("\r\n", 1)[0]!;
}

/** Polls `done` until it is true; the test's own timeout bounds the wait. */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 20));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function codeOf(error: unknown): Code {
  return ConnectError.from(error).code;
}

describe("HTTP/2 protocol errors", () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer("sqlite", SHORT);
  });
  afterAll(async () => {
    await ts?.close();
  });

  it.each(PROTOCOL_ERRORS)("close the connection after %s", { timeout: WAIT_MS }, async (_name, bytes) => {
    const connections = Array.from({ length: 20 }, () => connectRaw(ts.server.port, bytes));
    await Promise.all(connections.map((c) => c.closed));
  });

  it("close the connection when it breaks while a stream is open", { timeout: WAIT_MS }, async () => {
    // A gRPC Health.Watch (empty request, ended at once) keeps its stream open; then a bad frame.
    const headers = requestHeaders("/grpc.health.v1.Health/Watch", [["te", "trailers"]], "application/grpc");
    const connection = connectRaw(ts.server.port, h2(frame(HEADERS, END_HEADERS, 1, headers), frame(DATA, END_STREAM, 1, Buffer.alloc(5))));
    // The server answered: the first status (SERVING) came back on stream 1.
    await until(() => framesIn(connection.received()).some((f) => f.type === DATA && f.streamId === 1));
    connection.socket.write(frame(DATA, 0, 0, Buffer.from("x")));
    await connection.closed;
  });
});

describe("request bodies", () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer("sqlite", SHORT);
  });
  afterAll(async () => {
    await ts?.close();
  });

  const http1Cases: [string, string][] = [
    ["1 byte of an announced 1,000", `POST ${LIST} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{`],
    ["an unterminated chunked body", `POST ${LIST} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n`],
    [
      "part of a webhook delivery",
      'POST /webhooks/github HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-GitHub-Event: ping\r\nContent-Length: 500\r\n\r\n{"zen":',
    ],
  ];

  it.each(http1Cases)("over HTTP/1.1, end with 408 on %s", { timeout: WAIT_MS }, async (_name, request) => {
    const connection = connectRaw(ts.server.port, Buffer.from(request));
    await connection.closed;
    expect(connection.received().toString("latin1")).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("over HTTP/2, end with RST_STREAM(CANCEL) when the body never ends, and the session serves on", { timeout: WAIT_MS }, async () => {
    const session = http2.connect(ts.url);
    try {
      const stream = session.request({ ":method": "POST", ":path": LIST, "content-type": "application/json" }, { endStream: false });
      stream.on("error", () => {});
      stream.resume();
      stream.write("{");
      await new Promise((resolve) => stream.once("close", resolve));
      expect(stream.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);

      const healthz = session.request({ ":path": "/healthz" });
      const status = await new Promise((resolve) => healthz.once("response", (headers) => resolve(headers[":status"])));
      healthz.resume();
      expect(status).toBe(200);
    } finally {
      session.destroy();
    }
  });

  it("a raw HTTP/2 stream whose body never ends is reset too", { timeout: WAIT_MS }, async () => {
    const connection = connectRaw(ts.server.port, h2(frame(HEADERS, END_HEADERS, 1, requestHeaders(LIST)), frame(DATA, 0, 1, Buffer.from("{"))));
    await until(() => rstStreamCode(connection.received()) !== undefined);
    expect(rstStreamCode(connection.received())).toBe(http2.constants.NGHTTP2_CANCEL);
    await connection.closed; // then the session, idle and not answering pings, goes too
  });

  it("over HTTP/2, close a session that opens no stream", { timeout: WAIT_MS }, async () => {
    // A raw one, which answers nothing...
    const raw = connectRaw(ts.server.port, h2());
    // ...and Node's client, which answers pings and gets a graceful GOAWAY.
    const session = http2.connect(ts.url);
    const goaway = new Promise<number>((resolve) => session.once("goaway", (code) => resolve(code)));
    await Promise.all([raw.closed, new Promise((resolve) => session.once("close", resolve))]);
    expect(await goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
  });

  it("over HTTP/1.1, close a keep-alive connection left idle", { timeout: WAIT_MS }, async () => {
    const connection = connectRaw(ts.server.port);
    expect(await healthzOn(connection)).toBe("HTTP/1.1 200 OK");
    await connection.closed;
  });

  it("over HTTP/1.1, answer a whole body sent slowly within the deadline", { timeout: WAIT_MS }, async () => {
    const body = JSON.stringify({});
    const res = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${ts.url}${LIST}`, { method: "POST", agent: false, headers: { "content-type": "application/json", "content-length": body.length } });
      req.on("response", (r) => {
        r.resume();
        resolve(r.statusCode ?? 0);
      });
      req.on("error", reject);
      req.write(body.slice(0, 1));
      setTimeout(() => req.end(body.slice(1)), 100);
    });
    expect(res).toBe(200);
  });
});

describe("long-lived streams outlive the deadlines", () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer("sqlite", LONG);
  });
  afterAll(async () => {
    await ts?.close();
  });

  it.each(PROTOCOLS)("WatchTasks over %s keeps sending keep-alives", { timeout: WAIT_MS }, async (protocol) => {
    const workspace = await caller(ts).workspace({ name: `watched over ${protocol}` });
    const controller = new AbortController();
    let keepAlives = 0;
    try {
      // Five keep-alives a second apart: the stream lived past the body deadline and the idle timeout.
      for await (const res of ts.client(TaskService, protocol).watchTasks({ workspaceId: workspace.id }, { signal: controller.signal })) {
        if (res.event.case === "keepAlive" && ++keepAlives === 5) break;
      }
    } finally {
      controller.abort();
    }
    expect(keepAlives).toBe(5);
  });

  it("Health.Watch over every protocol stays open, silent, until the server shuts down", { timeout: WAIT_MS }, async () => {
    const own = await startTestServer("sqlite", LONG);
    try {
      const streams = PROTOCOLS.map((protocol) => own.client(Health, protocol).watch({ service: "" })[Symbol.asyncIterator]());
      for (const stream of streams) expect((await stream.next()).value?.status).toBe(ServingStatus.SERVING);
      await sleep(5_000); // past the body deadline and the idle timeout, with nothing sent either way
      const closed = own.server.close();
      for (const stream of streams) {
        expect((await stream.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
        expect((await stream.next()).done).toBe(true);
      }
      await closed;
    } finally {
      await own.close();
    }
  });
});

describe("gRPC reflection's bidi stream", () => {
  /** Requests pushed one at a time into a bidi call. */
  function requestQueue() {
    const waiting: (() => void)[] = [];
    const queue: { listServices: string }[] = [];
    let ended = false;
    return {
      send(): void {
        queue.push({ listServices: "" });
        waiting.shift()?.();
      },
      end(): void {
        ended = true;
        waiting.shift()?.();
      },
      async *[Symbol.asyncIterator]() {
        for (;;) {
          if (queue.length > 0) yield { messageRequest: { case: "listServices" as const, value: queue.shift()!.listServices } };
          else if (ended) return;
          else await new Promise<void>((resolve) => waiting.push(resolve));
        }
      },
    };
  }

  it.each([ServerReflection, ServerReflectionV1Alpha])("is not cut by the body deadline ($typeName)", { timeout: WAIT_MS }, async (service) => {
    const ts = await startTestServer("sqlite", { FOREMAN_REQUEST_BODY_TIMEOUT_SECONDS: "1", FOREMAN_IDLE_TIMEOUT_SECONDS: "30" });
    try {
      const reflection = createClient<typeof ServerReflection>(service as typeof ServerReflection, createGrpcTransport({ baseUrl: ts.url }));
      const requests = requestQueue();
      const responses = reflection.serverReflectionInfo(requests)[Symbol.asyncIterator]();
      requests.send();
      expect((await responses.next()).value?.messageResponse.case).toBe("listServicesResponse");
      await sleep(2_500); // past the 1 s body deadline, well within the 30 s idle bound
      requests.send();
      expect((await responses.next()).value?.messageResponse.case).toBe("listServicesResponse");
      requests.end();
      expect((await responses.next()).done).toBe(true);
    } finally {
      await ts.close();
    }
  });

  it("is closed when left idle", { timeout: WAIT_MS }, async () => {
    const ts = await startTestServer("sqlite", SHORT);
    try {
      const reflection = createClient(ServerReflection, createGrpcTransport({ baseUrl: ts.url }));
      const requests = requestQueue();
      const responses = reflection.serverReflectionInfo(requests)[Symbol.asyncIterator]();
      requests.send();
      expect((await responses.next()).value?.messageResponse.case).toBe("listServicesResponse");
      const error = await responses.next().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(codeOf(error)).toBe(Code.Canceled);
    } finally {
      await ts.close();
    }
  });

  it("is the only method whose request stays open on purpose (in v1 and v1alpha)", () => {
    // The listener exempts these paths from the body deadline (openRequestPaths in server.ts);
    // a new client-streaming or bidi method must be added there, or its calls are cut.
    const files = [...FOREMAN_FILES, file_health_v1_health, file_grpc_reflection_v1_reflection, file_grpc_reflection_v1alpha_reflection];
    const open = files.flatMap((file) =>
      file.services.flatMap((service) =>
        service.methods.filter((m) => m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming").map((m) => `/${service.typeName}/${m.name}`),
      ),
    );
    expect(open).toEqual([REFLECTION_INFO, REFLECTION_INFO_V1ALPHA]);
  });
});

describe("connections per address", () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer("sqlite", { FOREMAN_MAX_CONNECTIONS_PER_ADDRESS: "3" });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it("refuses one over the cap and serves the others, and a new one once one has gone", { timeout: WAIT_MS }, async () => {
    const held = [connectRaw(ts.server.port), connectRaw(ts.server.port), connectRaw(ts.server.port)];
    for (const connection of held) {
      await connected(connection);
      // Served, so the server has counted it.
      expect(await healthzOn(connection)).toBe("HTTP/1.1 200 OK");
    }
    const refused = connectRaw(ts.server.port, Buffer.from("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    await refused.closed;
    expect(refused.received().length).toBe(0);

    held[0]!.socket.destroy();
    // The server notices the close a moment later: try until a new connection is served.
    for (;;) {
      const next = connectRaw(ts.server.port);
      if ((await healthzOn(next)) === "HTTP/1.1 200 OK") {
        next.socket.destroy();
        break;
      }
    }
    for (const connection of held) connection.socket.destroy();
  });

  it("counts IPv4-mapped addresses as IPv4, and IPv6 clients by their /64", () => {
    expect(addressKey("192.0.2.7")).toBe("192.0.2.7");
    expect(addressKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(addressKey("2001:db8:1:2:aaaa::1")).toBe(addressKey("2001:db8:1:2::ffff"));
    expect(addressKey("2001:db8:1:2::1")).toBe(addressKey("2001:0DB8:0001:0002:0:0:0:2"));
    expect(addressKey("2001:db8:1:3::1")).not.toBe(addressKey("2001:db8:1:2::1"));
    expect(addressKey("::1")).toBe(addressKey("0:0:0:0:0:0:0:1"));
    expect(addressKey("fe80::1%eth0")).toBe(addressKey("fe80::2"));
  });
});

describe("the listener itself", () => {
  let listener: DualServer;
  let port: number;
  beforeAll(async () => {
    listener = createDualServer(
      (_req, res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok\n");
      },
      { requestBodyTimeoutMs: 1_000, idleTimeoutMs: 1_000, maxConnectionsPerAddress: 0, openRequestPaths: [] },
    );
    port = await listener.listen(0, "127.0.0.1");
  });
  afterAll(async () => {
    await listener?.close(5_000);
  });

  it("has no connection left after every kind of hostile one, so close() has nothing to wait for", { timeout: WAIT_MS }, async () => {
    const hostile = [
      ...PROTOCOL_ERRORS.map(([, bytes]) => bytes),
      h2(), // no stream
      h2(frame(HEADERS, END_HEADERS, 1, requestHeaders(LIST)), frame(DATA, 0, 1, Buffer.from("{"))), // a body that never ends
      Buffer.from(`POST ${LIST} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{`),
    ];
    const connections = hostile.flatMap((bytes) => Array.from({ length: 10 }, () => connectRaw(port, bytes)));
    await Promise.all(connections.map((c) => c.closed));
    await until(() => listener.connections === 0);
    expect(listener.connections).toBe(0);
  });
});
