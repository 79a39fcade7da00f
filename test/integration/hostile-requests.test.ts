// One request must not kill or freeze the server (issue 13). The contract bounds every repeated
// field and map of every request; the largest request the size limit allows, over-filling each
// of them in turn, is answered over every protocol with a small InvalidArgument naming the
// field, before validation, storage or any per-element work. Errors stay small however bad the
// request, never echo input unescaped (a lone surrogate once hung every gRPC call), and a
// request the adapter cannot take (HTTP/1.0 without Host) no longer ends the process.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { create, getOption, hasOption, toBinary, toJsonString, type DescField, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { max_items } from "../../gen/foreman/v1/options_pb.js";
import { RepositoryService } from "../../gen/foreman/v1/repository_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { FOREMAN_FILES } from "../../src/api/routes.js";
import { MAX_REPORTED_VIOLATIONS } from "../../src/core/errors.js";
import { heldMessage, unboundedFields } from "../../src/server/request-bounds.js";
import type { DialectName } from "../../src/db/dialect.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller, registerWorker } from "../helpers/fixtures.js";
import { expectCode, expectInvalid, rpcError } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const REGISTRATION_TOKEN = "hostile-requests-registration-token-0123456789abc";
/**
 * The size limit of the server under test. 1 MiB rather than the default 4 MiB keeps the
 * client's encoding of 60 over-filled requests to about a minute; what matters is that the
 * largest request the limit allows is refused at once, and bench/hostile.ts measures the same
 * requests at the default limit.
 */
const MAX_MESSAGE_BYTES = 1024 * 1024;
/** An error answer stays below this many bytes of message (the guard cuts at 1024 characters). */
const SMALL = 2048;

const SERVICES: DescService[] = FOREMAN_FILES.flatMap((f) => f.services);
const METHODS: DescMethod[] = SERVICES.flatMap((s) => s.methods);

/** A bounded repeated field or map, reached from a method's request through `path`. */
interface BoundedField {
  method: DescMethod;
  /** Fields from the request down to the bounded one; all but the last hold a message. */
  path: DescField[];
  max: number;
}

function boundedFields(method: DescMethod): BoundedField[] {
  const found: BoundedField[] = [];
  const walk = (desc: DescMessage, path: DescField[], seen: Set<DescMessage>) => {
    if (seen.has(desc)) return;
    for (const field of desc.fields) {
      if (hasOption(field, max_items)) found.push({ method, path: [...path, field], max: getOption(field, max_items) });
      const held = heldMessage(field);
      if (held !== undefined) walk(held, [...path, field], new Set([...seen, desc]));
    }
  };
  walk(method.input, [], new Set());
  return found;
}

const BOUNDED: BoundedField[] = METHODS.flatMap(boundedFields);

function dotted(path: DescField[]): string {
  return path.map((f, i) => (i < path.length - 1 && f.fieldKind !== "message" ? `${f.name}[0]` : f.name)).join(".");
}

/** One element of a list or one map value: the smallest a field of this kind encodes to. */
function element(field: DescField): unknown {
  if (field.fieldKind === "list") {
    if (field.listKind === "message") return {};
    if (field.listKind === "enum") return 99; // unknown to the server: each one a violation
    return field.scalar === 9 /* STRING */ ? "x" : field.scalar === 12 /* BYTES */ ? new Uint8Array() : field.scalar === 8 /* BOOL */ ? true : 1;
  }
  if (field.fieldKind === "map") return field.mapKind === "message" ? {} : field.mapKind === "enum" ? 0 : field.scalar === 9 ? "" : 0;
  throw new Error(`${field.name} is neither a list nor a map`);
}

/** A request init whose bounded field holds `n` elements, inside one of each enclosing message. */
function requestWith(b: BoundedField, n: number): Record<string, unknown> {
  const leaf = b.path[b.path.length - 1]!;
  let value: unknown;
  if (leaf.fieldKind === "map") {
    const map: Record<string, unknown> = {};
    const v = element(leaf);
    // Keys such as "-1k" are no label, secret name or id any rule allows.
    for (let i = 0; i < n; i++) map[`-${i.toString(36).padStart(5, "0")}`] = v;
    value = map;
  } else {
    value = new Array(n).fill(element(leaf));
  }
  for (let i = b.path.length - 2; i >= 0; i--) {
    const f = b.path[i]!;
    const inner = { [b.path[i + 1]!.localName]: value };
    value = f.fieldKind === "message" ? inner : f.fieldKind === "list" ? [inner] : { k: inner };
  }
  return { [b.path[0]!.localName]: value };
}

/**
 * The largest request (encoded as binary or JSON) within the size limit. Every element of the
 * bounded field encodes to the same size, so the count is worked out from two small requests:
 * encoding a million-element message three times over would take the test longer than the
 * server takes to refuse it.
 */
function largest(b: BoundedField, format: "binary" | "json"): { init: Record<string, unknown>; n: number } {
  const size = (n: number) => {
    const message = create(b.method.input, requestWith(b, n) as never);
    return format === "binary" ? toBinary(b.method.input, message).length : Buffer.byteLength(toJsonString(b.method.input, message));
  };
  const [small, large] = [size(1000), size(2000)];
  const perElement = (large - small) / 1000;
  // A margin for the few bytes a length prefix grows by as the list does.
  const n = 1000 + Math.floor((MAX_MESSAGE_BYTES - 1024 - small) / perElement);
  expect(n).toBeGreaterThan(b.max);
  return { init: requestWith(b, n), n };
}

type ProtocolName = "connect-http1" | "connect-h2c" | "connect-h2c-json" | "grpc" | "grpc-web";
const PROTOCOLS: ProtocolName[] = ["connect-http1", "connect-h2c", "connect-h2c-json", "grpc", "grpc-web"];

function transportFor(baseUrl: string, protocol: ProtocolName, token: string | undefined): Transport {
  const interceptors = token === undefined ? [] : [(next: never) => async (req: { header: Headers }) => {
    req.header.set("authorization", `Bearer ${token}`);
    return (next as (r: unknown) => Promise<unknown>)(req);
  }];
  const common = { baseUrl, interceptors: interceptors as never, readMaxBytes: MAX_MESSAGE_BYTES, writeMaxBytes: MAX_MESSAGE_BYTES * 2 };
  switch (protocol) {
    case "connect-http1":
      return createConnectTransport({ ...common, httpVersion: "1.1", useBinaryFormat: true });
    case "connect-h2c":
      return createConnectTransport({ ...common, httpVersion: "2", useBinaryFormat: true });
    case "connect-h2c-json":
      return createConnectTransport({ ...common, httpVersion: "2", useBinaryFormat: false });
    case "grpc":
      return createGrpcTransport({ ...common });
    case "grpc-web":
      return createGrpcWebTransport({ ...common, httpVersion: "1.1" });
  }
}

/** Calls any method with a request init, whatever its kind; a stream is read to its end. */
async function call(transport: Transport, method: DescMethod, init: Record<string, unknown>): Promise<void> {
  const client = createClient(method.parent, transport) as unknown as Record<string, (req: unknown) => unknown>;
  const invoke = client[method.localName]!;
  if (method.methodKind === "unary") {
    await invoke(init);
  } else if (method.methodKind === "server_streaming") {
    for await (const _ of invoke(init) as AsyncIterable<unknown>) break;
  } else {
    const requests = (async function* () {
      yield init;
    })();
    for await (const _ of invoke(requests) as AsyncIterable<unknown>) break;
  }
}

/** No lone surrogate (String.prototype.isWellFormed, which TypeScript's ES2022 lib lacks). */
function wellFormed(text: string): boolean {
  return !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(text);
}

function expectSmall(error: ConnectError): void {
  expect(error.rawMessage.length).toBeLessThan(SMALL);
  const violations = error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
  expect(violations.length).toBeLessThanOrEqual(MAX_REPORTED_VIOLATIONS);
  for (const v of violations) expect(v.field.length + v.description.length).toBeLessThan(500);
}

/** A server with the test's size limit and a registered worker, for WorkerService calls. */
async function startHostileServer(dialect: DialectName): Promise<{ t: TestServer; workerToken: string }> {
  const t = await startTestServer(dialect, {
    FOREMAN_WORKER_REGISTRATION_TOKEN: REGISTRATION_TOKEN,
    FOREMAN_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
  });
  const { workerToken } = await registerWorker(t, REGISTRATION_TOKEN, { name: "probe" });
  return { t, workerToken };
}

describe("the contract", () => {
  it("bounds every repeated field and map that a request of any method can carry", () => {
    const unbounded = [...new Set(METHODS.flatMap((m) => unboundedFields(m.input)))];
    expect(unbounded).toEqual([]);
  });

  it("has bounded fields to check (the list below is not empty by accident)", () => {
    expect(BOUNDED.map((b) => `${b.method.parent.name}.${b.method.name}: ${dotted(b.path)}`)).toEqual(
      expect.arrayContaining([
        "RepositoryService.CreateRepositoryGroup: repository_ids",
        "WorkerService.RegisterWorker: agent_types",
        "WorkerService.RegisterWorker: labels",
        "WorkerService.AppendLogs: batches[0].lines",
        "TaskService.ListTasks: statuses",
        "SecretsService.SendSecrets: secrets",
      ]),
    );
  });
});

// The bounds are checked before any storage is touched: one database is enough for the matrix
// of every bounded field over every protocol.
describe("the largest request over each bound, on sqlite", () => {
  let t: TestServer;
  let workerToken: string;

  beforeAll(async () => {
    ({ t, workerToken } = await startHostileServer("sqlite"));
  });

  afterAll(async () => {
    await t?.close();
  });

  describe.each(PROTOCOLS)("over %s", (protocol) => {
    it.each(BOUNDED.map((b) => [`${b.method.parent.name}.${b.method.name} ${dotted(b.path)}`, b] as const))(
      "%s: the largest request over the bound is a small InvalidArgument naming the field",
      async (_name, b) => {
        const { init, n } = largest(b, protocol === "connect-h2c-json" ? "json" : "binary");
        const token = b.method.parent.typeName === WorkerService.typeName && b.method.name !== "RegisterWorker" ? workerToken : undefined;
        const delay = monitorEventLoopDelay({ resolution: 10 });
        delay.enable();
        const error = await expectInvalid(call(transportFor(t.url, protocol, token), b.method, init), dotted(b.path));
        delay.disable();
        expectSmall(error);
        expect(error.rawMessage).toContain(`at most ${b.max} elements, got ${n}`);
        // Figures for the issue note, not thresholds: the loop is shared with the test's client.
        if (process.env.FOREMAN_TEST_PRINT_FIGURES === "true") {
          console.log(`${protocol} ${dotted(b.path)}: n=${n} max event-loop delay ${(delay.max / 1e6).toFixed(0)} ms, heap ${(process.memoryUsage().heapUsed / 1e6).toFixed(0)} MB`);
        }
      },
      60_000,
    );
  });

});

describe.each(DIALECTS)("hostile requests on %s", (dialect) => {
  let t: TestServer;

  beforeAll(async () => {
    ({ t } = await startHostileServer(dialect));
  });

  afterAll(async () => {
    await t?.close();
  });

  it("reports the first few violations and counts the rest", async () => {
    const ws = await caller(t).workspace({ name: "counting" });
    // Exactly the bound, every id malformed: each is a violation, and the answer stays small.
    const ids = Array.from({ length: 100 }, (_, i) => `bad-${i}`);
    const error = await expectCode(t.repositories.createRepositoryGroup({ workspaceId: ws.id, name: "g", repositoryIds: ids }), Code.InvalidArgument);
    expectSmall(error);
    const violations = error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
    expect(violations).toHaveLength(MAX_REPORTED_VIOLATIONS);
    expect(violations[0]).toMatchObject({ field: "repository_ids[0]", description: "must be a UUID" });
    expect(error.rawMessage).toContain("(100 violations in all)");
    expect(error.findDetails(ErrorInfoSchema)[0]?.metadata.violations).toBe("100");
  });

  it("checks the registration token before it reads the rest of RegisterWorker", async () => {
    const worker = createClient(WorkerService, t.transport("grpc"));
    const bad = { name: "", hostname: "a\nb", labels: { "-": "x" }, agentTypes: [99] };
    // No token, a wrong one, an absurdly long one: refused as such, not as an invalid body.
    await expectCode(worker.registerWorker({ ...bad, registrationToken: "" }), Code.Unauthenticated);
    await expectCode(worker.registerWorker({ ...bad, registrationToken: "fwr_wrong" }), Code.Unauthenticated);
    await expectCode(worker.registerWorker({ ...bad, registrationToken: "x".repeat(1_000_000) }), Code.Unauthenticated);
    // With the token, the body's faults are named.
    await expectInvalid(worker.registerWorker({ ...bad, registrationToken: REGISTRATION_TOKEN }), "name", "hostname", "labels", "agent_types");
  });

  it("escapes a label key it quotes in an error", async () => {
    // (A lone surrogate cannot be sent this way: the client's UTF-8 encoding makes it U+FFFD.
    // The raw requests below send one.)
    const worker = createClient(WorkerService, t.transport("grpc"));
    const error = await expectInvalid(
      worker.registerWorker({ registrationToken: REGISTRATION_TOKEN, name: "w", labels: { "\u202e\u2066\n\u0085-k": "v" } }),
      "labels",
    );
    expect(error.rawMessage).toContain('key "\\u202e\\u2066\\u000a\\u0085-k"');
  });

  describe("a lone UTF-16 surrogate that an error would echo", () => {
    const body = Buffer.from('{"pageSize":"\\ud800"}');
    const path = "/foreman.v1.WorkspaceService/ListWorkspaces";

    function envelope(message: Buffer, flags = 0): Buffer {
      const head = Buffer.alloc(5);
      head.writeUInt8(flags, 0);
      head.writeUInt32BE(message.length, 1);
      return Buffer.concat([head, message]);
    }

    /** One raw h2c request; resolves with headers, trailers and body once the stream ends. */
    function h2(headers: http2.OutgoingHttpHeaders, payload: Buffer): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Buffer }> {
      return new Promise((resolve, reject) => {
        const session = http2.connect(t.url);
        session.on("error", reject);
        const stream = session.request({ ":method": "POST", ":path": path, ...headers });
        let responseHeaders: http2.IncomingHttpHeaders = {};
        let trailers: http2.IncomingHttpHeaders = {};
        const chunks: Buffer[] = [];
        stream.on("response", (h) => (responseHeaders = h));
        stream.on("trailers", (h) => (trailers = h));
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("error", reject);
        stream.on("end", () => {
          session.close();
          resolve({ headers: responseHeaders, trailers, body: Buffer.concat(chunks) });
        });
        stream.end(payload);
      });
    }

    it("over gRPC (JSON) ends the call with invalid_argument and the surrogate escaped", async () => {
      const res = await h2({ "content-type": "application/grpc+json", te: "trailers" }, envelope(body));
      const status = res.trailers["grpc-status"] ?? res.headers["grpc-status"];
      const message = decodeURIComponent(String(res.trailers["grpc-message"] ?? res.headers["grpc-message"]));
      expect(status).toBe(String(Code.InvalidArgument));
      expect(message).toContain("\\ud800");
      expect(wellFormed(message)).toBe(true);
    });

    it("over gRPC-Web (JSON) ends the call with invalid_argument in its trailer frame", async () => {
      const res = await h2({ "content-type": "application/grpc-web+json" }, envelope(body));
      // The last frame (flag 0x80) carries the trailers as HTTP header lines.
      const trailerFrame = res.body.subarray(5).toString("utf8");
      expect(res.body[0]).toBe(0x80);
      expect(trailerFrame).toMatch(new RegExp(`grpc-status: ?${Code.InvalidArgument}`));
      expect(trailerFrame).toContain("%5Cud800");
    });

    it("over Connect (JSON) answers 400 with the surrogate escaped", async () => {
      const res = await h2({ "content-type": "application/json" }, body);
      expect(res.headers[":status"]).toBe(400);
      const error = JSON.parse(res.body.toString("utf8")) as { code: string; message: string };
      expect(error.code).toBe("invalid_argument");
      expect(error.message).toContain("\\ud800");
      expect(wellFormed(error.message)).toBe(true);
    });

    it("through the generated gRPC client too, and the server keeps serving", async () => {
      const error = await rpcError(createClient(RepositoryService, t.transport("grpc")).listRepositories({ workspaceId: "\ud800" }));
      expect(error.code).toBe(Code.InvalidArgument);
      expect(wellFormed(error.rawMessage)).toBe(true);
      await t.workspaces.listWorkspaces({});
    });
  });

  describe("a request the adapter cannot take", () => {
    it("HTTP/1.0 without a Host header is a 400, and the server lives on", async () => {
      const answer = await new Promise<string>((resolve, reject) => {
        const { port } = new URL(t.url);
        const socket = net.connect(Number(port), "127.0.0.1", () => {
          socket.write("POST /foreman.v1.WorkspaceService/ListWorkspaces HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
        });
        let data = "";
        socket.on("data", (d: Buffer) => (data += d.toString("latin1")));
        socket.on("close", () => resolve(data));
        socket.on("error", reject);
      });
      expect(answer).toMatch(/^HTTP\/1\.[01] 400/);
      await t.workspaces.listWorkspaces({});
      const health = await new Promise<number>((resolve, reject) => {
        http.get(`${t.url}/healthz`, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on("error", reject);
      });
      expect(health).toBe(200);
    });
  });
});

// A client's mistake on a long-lived stream is the client's: one line at most at warn, with its
// code and no stack trace, never an error line that anyone could flood the log with.
describe.each(DIALECTS)("client mistakes on the streaming methods, on %s", (dialect) => {
  const lines: string[] = [];
  let t: TestServer;

  beforeAll(async () => {
    t = await startTestServer(dialect, {}, undefined, { logLines: lines });
  });

  afterAll(async () => {
    await t?.close();
  });

  const STREAMS = [
    "/foreman.v1.TaskService/WatchTasks",
    "/foreman.v1.SessionService/StreamLog",
    "/foreman.v1.WorkerService/ReceiveCommands",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  ];

  /** A gRPC request with a body that is not protobuf; resolves with its grpc-status. */
  function garbage(path: string): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(t.url);
      session.on("error", reject);
      const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
      let status: string | undefined;
      stream.on("response", (h) => (status ??= h["grpc-status"] as string | undefined));
      stream.on("trailers", (h) => (status = h["grpc-status"] as string | undefined));
      stream.resume();
      stream.on("close", () => {
        session.close();
        resolve(status);
      });
      stream.end(Buffer.from([0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff]));
    });
  }

  function levels(from: number): { level: number; msg: string; stack: boolean }[] {
    return lines.slice(from).map((l) => {
      const parsed = JSON.parse(l) as { level: number; msg: string; err?: { stack?: string } };
      return { level: parsed.level, msg: parsed.msg, stack: l.includes("stack") };
    });
  }

  it.each(STREAMS)("%s: a body that does not parse is invalid_argument, logged without an error line", async (path) => {
    const from = lines.length;
    // Worker and user streams refuse an anonymous caller first (single-user: only WorkerService).
    const status = await garbage(path);
    expect([String(Code.InvalidArgument), String(Code.Unauthenticated)]).toContain(status);
    const logged = levels(from);
    expect(logged.length).toBeGreaterThan(0);
    for (const line of logged) {
      expect(line.level, line.msg).toBeLessThanOrEqual(40);
      expect(line.stack, line.msg).toBe(false);
    }
  });

  it("a stream the client cancels is no error either", async () => {
    const from = lines.length;
    const ws = await caller(t).workspace({ name: "cancelled" });
    const abort = new AbortController();
    const tasks = createClient(TaskService, t.transport("grpc"));
    const stream = tasks.watchTasks({ workspaceId: ws.id }, { signal: abort.signal });
    const reading = (async () => {
      for await (const _ of stream) abort.abort();
    })().catch((error: unknown) => error);
    // The first message (headers, then a keep-alive or a change) may take a while; cancel anyway.
    setTimeout(() => abort.abort(), 200);
    expect(ConnectError.from(await reading).code).toBe(Code.Canceled);
    await vi.waitFor(() => expect(lines.slice(from).some((l) => l.includes('"stream":true'))).toBe(true), { timeout: 10_000 });
    for (const line of levels(from)) {
      expect(line.level, line.msg).toBeLessThanOrEqual(40);
      expect(line.stack, line.msg).toBe(false);
    }
  });
});
