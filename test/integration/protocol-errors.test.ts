// Errors the protocol layer makes before any service code runs — a path that names no method,
// a message over FOREMAN_MAX_MESSAGE_BYTES, a body that does not parse — are answered in the
// caller's protocol with the code, an ErrorInfo and the request id, logged once (info, one line,
// no stack) and counted in /metrics. A request that speaks no RPC protocol still gets a plain 404.
import http from "node:http";
import http2 from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { DIALECTS } from "../helpers/databases.js";
import { rpcError } from "../helpers/rpc-errors.js";
import { startTestServer, transportFor, type Protocol, type TestServer } from "../helpers/server.js";

const PROTOCOLS: Protocol[] = ["connect-http1", "connect-h2c", "grpc", "grpc-web"];
const CREATE = "/foreman.v1.WorkspaceService/CreateWorkspace";
const MAX_BYTES = 2048;

interface LogLine {
  level: number;
  msg: string;
  request_id?: string;
  procedure?: string;
  code?: string;
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function request(url: string, init: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: init.method ?? "GET", headers: init.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(init.body);
  });
}

interface RawGrpcResponse {
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  /** grpc-status and grpc-message, from the trailers or a trailers-only response's headers. */
  status: string | undefined;
  message: string | undefined;
  details: string | undefined;
}

/** One gRPC request over HTTP/2 with the given body, read to its end. */
function grpcRequest(url: string, path: string, body: Buffer, headers: Record<string, string> = {}): Promise<RawGrpcResponse> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    let head: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (head = h));
    stream.on("trailers", (h) => (trailers = h));
    stream.resume();
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      const pick = (name: string) => (trailers[name] ?? head[name]) as string | undefined;
      resolve({ headers: head, trailers, status: pick("grpc-status"), message: pick("grpc-message"), details: pick("grpc-status-details-bin") });
    });
    stream.end(body);
  });
}

/** A gRPC length-prefixed message. */
function envelope(bytes: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(bytes.length, 1);
  return Buffer.concat([head, bytes]);
}

/** The ErrorInfo details of a Connect JSON error body. */
function errorInfos(body: Record<string, unknown>) {
  const details = (body.details ?? []) as { type: string; value: string }[];
  return details.filter((d) => d.type === "google.rpc.ErrorInfo").map((d) => fromBinary(ErrorInfoSchema, base64Decode(d.value)));
}

describe.each(DIALECTS)("errors of the protocol layer, on %s", (dialect) => {
  let t: TestServer;
  const lines: string[] = [];
  let serial = 0;
  const nextId = (what: string) => `${what}-${++serial}`;

  beforeAll(async () => {
    t = await startTestServer(dialect, { FOREMAN_MAX_MESSAGE_BYTES: String(MAX_BYTES) }, undefined, { logLines: lines });
  });

  afterAll(async () => {
    await t?.close();
  });

  /** Every line logged with the request id. */
  function loggedFor(requestId: string): LogLine[] {
    return lines.map((l) => JSON.parse(l) as LogLine).filter((l) => l.request_id === requestId);
  }

  /** Expects one info line for the request id, with the code, and no stack anywhere in it. */
  function expectLoggedOnce(requestId: string, code: string, procedure: string): void {
    const logged = loggedFor(requestId);
    expect(logged, JSON.stringify(logged)).toEqual([expect.objectContaining({ level: 30, msg: "call", code, procedure })]);
    const raw = lines.filter((l) => l.includes(requestId)).join("");
    expect(raw).not.toContain("stack");
  }

  async function count(procedure: string, code: string): Promise<number> {
    const text = await (await fetch(`${t.url}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`foreman_rpc_calls_total{procedure="${procedure}",code="${code}"} `));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1));
  }

  /** Expects the error to carry exactly one ErrorInfo with the reason and the request id. */
  function expectInfo(error: ConnectError, reason: string, requestId: string): void {
    const infos = error.findDetails(ErrorInfoSchema);
    expect(infos.map((i) => i.reason), error.rawMessage).toEqual([reason]);
    expect(infos[0]?.metadata.request_id).toBe(requestId);
  }

  describe("an unknown method", () => {
    // A base URL with a path in front makes every generated call name a method the server lacks.
    function lostClient(protocol: Protocol) {
      const transport = transportFor(`${t.url}/nowhere`, protocol);
      return { workspaces: createClient(WorkspaceService, transport), tasks: createClient(TaskService, transport) };
    }

    it.each(PROTOCOLS)("is Unimplemented over %s, naming the path, with an ErrorInfo and the request id; logged once and counted", async (protocol) => {
      const requestId = nextId(`unknown-${protocol}`);
      const before = await count("unknown", "unimplemented");
      const error = await rpcError(lostClient(protocol).workspaces.getWorkspace({ id: "x" }, { headers: { "x-request-id": requestId } }));
      expect(Code[error.code]).toBe("Unimplemented");
      expect(error.rawMessage).toContain("/nowhere/foreman.v1.WorkspaceService/GetWorkspace");
      expectInfo(error, "NOT_IMPLEMENTED", requestId);
      expect(error.metadata.get("x-request-id")).toBe(requestId);
      expectLoggedOnce(requestId, "Unimplemented", "unknown");
      expect(await count("unknown", "unimplemented")).toBe(before + 1);
    });

    it.each(PROTOCOLS)("is Unimplemented for a stream over %s", async (protocol) => {
      const stream = lostClient(protocol).tasks.watchTasks({ workspaceId: "x" })[Symbol.asyncIterator]();
      const error = await rpcError(stream.next());
      expect(Code[error.code]).toBe("Unimplemented");
      expect(error.rawMessage).toContain("/nowhere/foreman.v1.TaskService/WatchTasks");
    });

    it("answers gRPC with HTTP 200, grpc-status 12 and an escaped grpc-message naming the path", async () => {
      const path = "/foreman.v1.NoSuch\u00e9Service/Get%20It";
      const res = await grpcRequest(t.url, encodeURI(path), envelope(Buffer.alloc(0)));
      expect(res.headers[":status"]).toBe(200);
      expect(res.headers["content-type"]).toMatch(/^application\/grpc/);
      expect(res.status).toBe("12");
      // grpc-message is percent-encoded (gRPC's escaping); decoded, it names the path as sent.
      expect(res.message).not.toMatch(/[^\x20-\x7e]/);
      expect(decodeURIComponent(res.message!)).toContain(encodeURI(path));
      expect(res.details).toBeDefined();
      expect(res.headers["x-request-id"]).toBeDefined();
    });

    it("answers Connect with the spec's status for unimplemented (501) and a JSON error", async () => {
      const requestId = nextId("connect-json");
      const res = await request(`${t.url}/foreman.v1.NoSuchService/Get`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": requestId },
        body: "{}",
      });
      expect(res.status).toBe(501);
      expect(res.headers["content-type"]).toBe("application/json");
      expect(res.headers["x-request-id"]).toBe(requestId);
      const body = JSON.parse(res.body.toString()) as Record<string, unknown>;
      expect(body.code).toBe("unimplemented");
      expect(body.message).toContain("/foreman.v1.NoSuchService/Get");
      expect(errorInfos(body).map((i) => [i.reason, i.metadata.request_id])).toEqual([["NOT_IMPLEMENTED", requestId]]);
    });

    it("keeps a bounded procedure label however many paths are tried", async () => {
      for (let i = 0; i < 5; i++) {
        await request(`${t.url}/random.Service${i}/Method${i}`, { method: "POST", headers: { "content-type": "application/proto" }, body: "" });
      }
      const text = await (await fetch(`${t.url}/metrics`)).text();
      expect(text).not.toContain("random.Service");
    });

    it("is a plain 404 for a request that speaks no RPC protocol, neither logged as a call nor counted", async () => {
      const requestId = nextId("page");
      const before = await count("unknown", "unimplemented");
      const res = await request(`${t.url}/no/such/page`, { headers: { "x-request-id": requestId } });
      expect(res.status).toBe(404);
      expect(res.headers["content-type"]).toBe("text/plain; charset=utf-8");
      const post = await request(`${t.url}/foreman.v1.NoSuchService/Get`, { method: "POST", headers: { "content-type": "text/plain" }, body: "hi" });
      expect(post.status).toBe(404);
      expect(loggedFor(requestId)).toEqual([]);
      expect(await count("unknown", "unimplemented")).toBe(before);
    });
  });

  describe("a message over the size limit", () => {
    const big = "n".repeat(MAX_BYTES * 4);

    it.each(PROTOCOLS)("is ResourceExhausted over %s with an ErrorInfo and the request id; logged once and counted", async (protocol) => {
      const requestId = nextId(`big-${protocol}`);
      const before = await count(CREATE, "resource_exhausted");
      const error = await rpcError(t.client(WorkspaceService, protocol).createWorkspace({ name: big }, { headers: { "x-request-id": requestId } }));
      expect(Code[error.code]).toBe("ResourceExhausted");
      expectInfo(error, "RESOURCE_EXHAUSTED", requestId);
      expect(error.metadata.get("x-request-id")).toBe(requestId);
      expectLoggedOnce(requestId, "ResourceExhausted", CREATE);
      expect(await count(CREATE, "resource_exhausted")).toBe(before + 1);
    });
  });

  describe("a body that does not parse", () => {
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]);

    it("is InvalidArgument over gRPC with an ErrorInfo and the request id; logged once and counted", async () => {
      const requestId = nextId("garbage-grpc");
      const before = await count(CREATE, "invalid_argument");
      const res = await grpcRequest(t.url, CREATE, envelope(garbage), { "x-request-id": requestId });
      expect(res.status).toBe(String(Code.InvalidArgument));
      expect(res.headers["x-request-id"]).toBe(requestId);
      expect(res.details).toBeDefined();
      expectLoggedOnce(requestId, "InvalidArgument", CREATE);
      expect(await count(CREATE, "invalid_argument")).toBe(before + 1);
    });

    it("is invalid_argument over Connect with an ErrorInfo and the request id; logged once and counted", async () => {
      const requestId = nextId("garbage-connect");
      const before = await count(CREATE, "invalid_argument");
      const res = await request(`${t.url}${CREATE}`, {
        method: "POST",
        headers: { "content-type": "application/proto", "x-request-id": requestId },
        body: garbage,
      });
      expect(res.status).toBe(400);
      expect(res.headers["x-request-id"]).toBe(requestId);
      const body = JSON.parse(res.body.toString()) as Record<string, unknown>;
      expect(body.code).toBe("invalid_argument");
      expect(errorInfos(body).map((i) => [i.reason, i.metadata.request_id])).toEqual([["INVALID_ARGUMENT", requestId]]);
      expectLoggedOnce(requestId, "InvalidArgument", CREATE);
      expect(await count(CREATE, "invalid_argument")).toBe(before + 1);
    });

    it("is invalid_argument for malformed JSON, logged once and counted", async () => {
      const requestId = nextId("bad-json");
      const before = await count(CREATE, "invalid_argument");
      const res = await request(`${t.url}${CREATE}`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": requestId },
        body: '{"name": ',
      });
      expect(res.status).toBe(400);
      expectLoggedOnce(requestId, "InvalidArgument", CREATE);
      expect(await count(CREATE, "invalid_argument")).toBe(before + 1);
    });
  });

  it("a known method called with a content type no protocol has is 415, logged once and counted", async () => {
    const requestId = nextId("text-plain");
    const before = await count(CREATE, "unknown");
    const res = await request(`${t.url}${CREATE}`, { method: "POST", headers: { "content-type": "text/plain", "x-request-id": requestId }, body: "name=x" });
    expect(res.status).toBe(415);
    expect(res.headers["x-request-id"]).toBe(requestId);
    // The code a client infers from 415 (the Connect and gRPC mappings agree).
    expectLoggedOnce(requestId, "Unknown", CREATE);
    expect(await count(CREATE, "unknown")).toBe(before + 1);
  });

  it("a call the service answers is still logged once, by the access log alone", async () => {
    const requestId = nextId("normal-failure");
    const error = await rpcError(t.client(WorkspaceService, "grpc").getWorkspace({ id: "00000000-0000-4000-8000-000000000000" }, { headers: { "x-request-id": requestId } }));
    expect(Code[error.code]).toBe("NotFound");
    expectLoggedOnce(requestId, "NotFound", "/foreman.v1.WorkspaceService/GetWorkspace");
  });
});
