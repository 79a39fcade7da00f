// The server's transport on the real thing: the four protocols on one port, `buf curl` through
// reflection alone, raw HTTP edge cases (bad bodies, limits, content types, request ids), CORS,
// and a graceful shutdown that ends streams, finishes in-flight calls and refuses new ones.
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/health/v1/health_pb.js";
import { openDatabase } from "../../src/db/database.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller } from "../helpers/fixtures.js";
import { startTestServer, type Protocol, type TestServer } from "../helpers/server.js";

const PROTOCOLS: Protocol[] = ["connect-http1", "connect-h2c", "grpc", "grpc-web"];
const BUF = path.join(process.cwd(), "node_modules", ".bin", "buf");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CREATE = "/foreman.v1.WorkspaceService/CreateWorkspace";
const LIST = "/foreman.v1.WorkspaceService/ListWorkspaces";

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The body as JSON; fails the test when it is not JSON. */
  json(): Record<string, unknown>;
}

/** One HTTP/1.1 request on its own connection (or on agent's). */
function request(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string | Buffer; agent?: http.Agent } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: init.method ?? "GET", headers: init.headers, agent: init.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          json: () => JSON.parse(body.toString("utf8")) as Record<string, unknown>,
        });
      });
    });
    req.on("error", reject);
    req.end(init.body);
  });
}

function postJson(url: string, body: string, headers: Record<string, string> = {}, agent?: http.Agent): Promise<RawResponse> {
  return request(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body, agent });
}

/** The ErrorInfo details of a Connect JSON error body, decoded from their bytes. */
function errorInfos(body: Record<string, unknown>) {
  const details = (body.details ?? []) as { type: string; value: string }[];
  return details
    .filter((d) => d.type === "google.rpc.ErrorInfo")
    .map((d) => fromBinary(ErrorInfoSchema, base64Decode(d.value)));
}

function codeOf(error: unknown): Code {
  return ConnectError.from(error).code;
}

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

describe.each(DIALECTS)("on %s", (dialect) => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer(dialect);
  });
  afterAll(async () => {
    await ts?.close();
  });

  describe.each(PROTOCOLS)("over %s", (protocol) => {
    it("creates a workspace and gets it back", async () => {
      const client = ts.client(WorkspaceService, protocol);
      const created = await client.createWorkspace({ name: `  ws ${protocol}  `, description: `made over ${protocol}` });
      const workspace = created.workspace;
      expect(workspace?.id).toMatch(UUID);
      expect(workspace?.name).toBe(`ws ${protocol}`);
      expect(workspace?.description).toBe(`made over ${protocol}`);
      expect(workspace?.createTime).toBeDefined();

      const got = await client.getWorkspace({ id: workspace!.id });
      expect(got.workspace).toEqual(workspace);
      // The same row, whichever protocol reads it.
      const other = ts.client(WorkspaceService, protocol === "grpc" ? "connect-http1" : "grpc");
      expect((await other.getWorkspace({ id: workspace!.id })).workspace).toEqual(workspace);
    });

    it("answers a missing workspace with NotFound and an invalid one with InvalidArgument", async () => {
      const client = ts.client(WorkspaceService, protocol);
      const missing = await rejection(client.getWorkspace({ id: "00000000-0000-4000-8000-000000000000" }));
      expect(missing.code).toBe(Code.NotFound);
      expect(missing.findDetails(ErrorInfoSchema)[0]?.reason).toBe("NOT_FOUND");

      const invalid = await rejection(client.createWorkspace({ name: "" }));
      expect(invalid.code).toBe(Code.InvalidArgument);
      expect(invalid.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field)).toEqual(["name"]);
    });
  });

  describe("buf curl, with reflection only", () => {
    let cacheDir: string;
    beforeAll(async () => {
      cacheDir = await mkdtemp(path.join(tmpdir(), "foreman-buf-"));
    });
    afterAll(async () => {
      await rm(cacheDir, { recursive: true, force: true });
    });

    async function bufCurl(...args: string[]): Promise<string> {
      const { stdout } = await promisify(execFile)(BUF, ["curl", "--http2-prior-knowledge", ...args], {
        timeout: 60_000,
        env: { ...process.env, BUF_CACHE_DIR: cacheDir },
      });
      return stdout;
    }

    it("lists a workspace created first", async () => {
      const { workspace } = await ts.workspaces.createWorkspace({ name: "listed by buf curl" });
      const out = JSON.parse(await bufCurl(`${ts.url}${LIST}`)) as { workspaces: { id: string; name: string }[] };
      expect(out.workspaces).toContainEqual(expect.objectContaining({ id: workspace!.id, name: "listed by buf curl" }));
    });

    it("creates a workspace from JSON", async () => {
      const out = JSON.parse(await bufCurl("-d", '{"name":"x"}', `${ts.url}${CREATE}`)) as {
        workspace: { id: string; name: string };
      };
      expect(out.workspace.name).toBe("x");
      expect(out.workspace.id).toMatch(UUID);
      expect((await ts.workspaces.getWorkspace({ id: out.workspace.id })).workspace?.name).toBe("x");
    });

    if (dialect !== "sqlite") return; // the rest does not touch the database

    it("lists every foreman.v1 service and health", async () => {
      const services = (await bufCurl("--list-services", ts.url)).split("\n").filter(Boolean);
      expect(services).toEqual(
        expect.arrayContaining([
          "foreman.v1.TaskService",
          "foreman.v1.SessionService",
          "foreman.v1.RepositoryService",
          "foreman.v1.WorkspaceService",
          "foreman.v1.TodoService",
          "foreman.v1.SecretsService",
          "foreman.v1.WorkerService",
          "foreman.v1.AuthService",
          "grpc.health.v1.Health",
        ]),
      );
      expect(new Set(services).size).toBe(services.length);
    });

    it("shows a failed call's code and ErrorInfo and exits non-zero", async () => {
      const failure = (await bufCurl(`${ts.url}/foreman.v1.TaskService/GetTaskDiff`).then(
        () => {
          throw new Error("buf curl succeeded");
        },
        (error: unknown) => error,
      )) as { code: number; stderr: string };
      expect(failure.code).not.toBe(0);
      const body = JSON.parse(failure.stderr) as { code: string; details: { type: string; debug?: { reason: string } }[] };
      // No id: InvalidArgument.
      expect(body.code).toBe("invalid_argument");
      expect(body.details[0]?.type).toBe("google.rpc.ErrorInfo");
      expect(body.details[0]?.debug?.reason).toBe("INVALID_ARGUMENT");
    });
  });
});

describe("raw HTTP", () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer("sqlite");
  });
  afterAll(async () => {
    await ts?.close();
  });

  it("answers /healthz with 200 and {status: ok}", async () => {
    const res = await request(`${ts.url}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.json()).toEqual({ status: "ok" });

    const head = await request(`${ts.url}/healthz`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
  });

  it("answers /healthz over h2c too", async () => {
    const session = http2.connect(ts.url);
    try {
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ":path": "/healthz", ":method": "GET" });
        let status = 0;
        let body = "";
        stream.on("response", (headers) => (status = Number(headers[":status"])));
        stream.setEncoding("utf8").on("data", (d: string) => (body += d));
        stream.on("end", () => resolve({ status, body }));
        stream.on("error", reject);
      });
      expect(status).toBe(200);
      expect(JSON.parse(body)).toEqual({ status: "ok" });
    } finally {
      session.close();
    }
  });

  it("serves a Connect unary call as plain JSON over HTTP/1.1", async () => {
    const res = await postJson(`${ts.url}${CREATE}`, JSON.stringify({ name: "plain json" }));
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("application/json");
    expect((res.json().workspace as { name: string }).name).toBe("plain json");
  });

  it("serves a side-effect-free method over Connect GET", async () => {
    const query = new URLSearchParams({ connect: "v1", encoding: "json", message: "{}" });
    const res = await request(`${ts.url}${LIST}?${query}`);
    expect(res.status).toBe(200);
    expect(Array.isArray(res.json().workspaces)).toBe(true);
  });

  it("answers malformed JSON with 400 invalid_argument", async () => {
    const res = await postJson(`${ts.url}${CREATE}`, '{"name": ');
    expect(res.status).toBe(400);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.json().code).toBe("invalid_argument");

    const wrongType = await postJson(`${ts.url}${CREATE}`, '{"name": 42}');
    expect(wrongType.status).toBe(400);
    expect(wrongType.json().code).toBe("invalid_argument");
  });

  it("answers a malformed protobuf body with a Connect error and keeps serving", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]);
      const res = await request(`${ts.url}${CREATE}`, {
        method: "POST",
        headers: { "content-type": "application/proto" },
        body: garbage,
        agent,
      });
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.headers["content-type"]).toBe("application/json");
      expect(typeof res.json().code).toBe("string");
      const next = await postJson(`${ts.url}${CREATE}`, JSON.stringify({ name: "after bad proto" }), {}, agent);
      expect(next.status).toBe(200);
    } finally {
      agent.destroy();
    }
  });

  // connect-es 2.1.2 turns a request that fails to parse as protobuf into Internal ("parse
  // binary: premature EOF", HTTP 500) before any interceptor runs; src/server/connect-errors.ts
  // makes it InvalidArgument, as connect-go answers.
  it("answers a malformed protobuf body with invalid_argument, not internal", async () => {
    const res = await request(`${ts.url}${CREATE}`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]),
    });
    expect(res.json().code).toBe("invalid_argument");
    expect(res.status).toBe(400);
  });

  it("answers a wrong content type with 415", async () => {
    const res = await request(`${ts.url}${CREATE}`, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: "name=x",
    });
    expect(res.status).toBe(415);
  });

  it("answers an unknown method as Connect's unimplemented (501) and any other unknown path with 404", async () => {
    // The Connect protocol's status for unimplemented is 501; protocol-errors.test.ts has the rest.
    const service = await postJson(`${ts.url}/foreman.v1.NoSuchService/Get`, "{}");
    expect([service.status, service.json().code]).toEqual([501, "unimplemented"]);
    const method = await postJson(`${ts.url}/foreman.v1.WorkspaceService/NoSuchMethod`, "{}");
    expect([method.status, method.json().code]).toEqual([501, "unimplemented"]);
    expect((await request(`${ts.url}/no/such/page`)).status).toBe(404);
  });

  it("echoes a sent x-request-id and makes one up when absent or unusable", async () => {
    const sent = await postJson(`${ts.url}${LIST}`, "{}", { "x-request-id": "client-id.42:a_b-c" });
    expect(sent.status).toBe(200);
    expect(sent.headers["x-request-id"]).toBe("client-id.42:a_b-c");

    const absent = await postJson(`${ts.url}${LIST}`, "{}");
    const again = await postJson(`${ts.url}${LIST}`, "{}");
    expect(absent.headers["x-request-id"]).toMatch(UUID);
    expect(again.headers["x-request-id"]).toMatch(UUID);
    expect(again.headers["x-request-id"]).not.toBe(absent.headers["x-request-id"]);

    for (const unusable of ["has space", "x".repeat(129), "quote\"d"]) {
      const res = await postJson(`${ts.url}${LIST}`, "{}", { "x-request-id": unusable });
      expect(res.headers["x-request-id"]).toMatch(UUID);
    }

    const failed = await postJson(`${ts.url}${CREATE}`, JSON.stringify({ name: "" }), { "x-request-id": "failing-call" });
    expect(failed.status).toBe(400);
    expect(failed.headers["x-request-id"]).toBe("failing-call");
  });

  it.each(PROTOCOLS)("carries the request id over %s, on success and on error", async (protocol) => {
    const client = ts.client(WorkspaceService, protocol);
    let echoed: string | null = null;
    await client.listWorkspaces({}, { headers: { "x-request-id": `ok-${protocol}` }, onHeader: (h) => (echoed = h.get("x-request-id")) });
    expect(echoed).toBe(`ok-${protocol}`);

    const error = await rejection(client.getWorkspace({ id: "not-an-id" }, { headers: { "x-request-id": `err-${protocol}` } }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.metadata.get("x-request-id")).toBe(`err-${protocol}`);
  });

  // Every method of the contract is served now (test/unit/unimplemented.test.ts covers the answer
  // of one that is not, protocol-errors.test.ts a method the contract has not got): GetTaskDiff,
  // the last one built, answers a malformed request as any other.
  it("answers GetTaskDiff with a malformed id as invalid_argument with ErrorInfo and BadRequest", async () => {
    const res = await postJson(`${ts.url}/foreman.v1.TaskService/GetTaskDiff`, JSON.stringify({ id: "x" }));
    expect(res.status).toBe(400);
    const body = res.json();
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toBe("id: must be a UUID");
    const [info] = errorInfos(body);
    expect(info?.reason).toBe("INVALID_ARGUMENT");
    expect(info?.domain).toBe("foreman.dev");
  });

  it.each(PROTOCOLS)("carries GetTaskDiff's ErrorInfo INVALID_ARGUMENT over %s", async (protocol) => {
    const error = await rejection(ts.client(TaskService, protocol).getTaskDiff({ id: "x" }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.findDetails(ErrorInfoSchema).map((d) => d.reason)).toEqual(["INVALID_ARGUMENT"]);
  });

  it("sends no CORS headers when no origin is configured", async () => {
    const res = await request(`${ts.url}${CREATE}`, {
      method: "OPTIONS",
      headers: { origin: "http://app.example", "access-control-request-method": "POST" },
    });
    expect(res.headers["access-control-allow-origin"]).toBeUndefined();
    expect(res.status).not.toBe(204);
  });
});

describe("the access log", () => {
  let ts: TestServer;
  const lines: string[] = [];
  beforeAll(async () => {
    ts = await startTestServer("sqlite", {}, undefined, { logLines: lines });
  });
  afterAll(() => ts.close());

  const callLines = (requestId: string) =>
    lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "call" && l.request_id === requestId);

  it("logs a call that succeeded at debug, and one that failed at info, each with its request id, procedure, code and duration", async () => {
    expect((await postJson(`${ts.url}${LIST}`, "{}", { "x-request-id": "access-ok" })).status).toBe(200);
    expect((await postJson(`${ts.url}${CREATE}`, JSON.stringify({ name: "" }), { "x-request-id": "access-failed" })).status).toBe(400);

    const ok = callLines("access-ok");
    expect(ok).toHaveLength(1);
    // pino's levels: 20 debug, 30 info. The default level, info, leaves out successful calls.
    expect(ok[0]).toMatchObject({ level: 20, procedure: LIST, code: "ok" });
    expect(ok[0]!.duration_ms).toEqual(expect.any(Number));

    const failed = callLines("access-failed");
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ level: 30, procedure: CREATE, code: "InvalidArgument" });
    expect(failed[0]!.duration_ms).toEqual(expect.any(Number));
  });

  it("puts the call's request id on what core logs during the call", async () => {
    const { group } = await caller(ts).groupOfOne();
    const { unitTask } = await ts
      .client(TaskService)
      .createUnitTask({ repositoryGroupId: group.id, prompt: "Log me" }, { headers: { "x-request-id": "core-log-line" } });

    const created = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "task created" && l.task_id === unitTask!.id);
    expect(created).toHaveLength(1);
    expect(created[0]).toMatchObject({ level: 30, request_id: "core-log-line", procedure: "/foreman.v1.TaskService/CreateUnitTask" });
  });
});

describe("message size limit", () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer("sqlite", { FOREMAN_MAX_MESSAGE_BYTES: "2048" });
  });
  afterAll(async () => {
    await ts?.close();
  });

  const big = "n".repeat(10 * 1024);

  it("answers a body over the limit with resource_exhausted and serves the next call on the same connection", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const res = await postJson(`${ts.url}${CREATE}`, JSON.stringify({ name: big }), {}, agent);
      expect(res.json().code).toBe("resource_exhausted");
      expect(res.status).toBe(429);
      const next = await postJson(`${ts.url}${CREATE}`, JSON.stringify({ name: "small enough" }), {}, agent);
      expect(next.status).toBe(200);
      expect((next.json().workspace as { name: string }).name).toBe("small enough");
    } finally {
      agent.destroy();
    }
  });

  it.each(PROTOCOLS)("refuses an oversized message with ResourceExhausted over %s, then serves", async (protocol) => {
    const client = ts.client(WorkspaceService, protocol);
    expect((await rejection(client.createWorkspace({ name: big }))).code).toBe(Code.ResourceExhausted);
    const { workspace } = await client.createWorkspace({ name: `fits ${protocol}` });
    expect(workspace?.name).toBe(`fits ${protocol}`);
  });

  it("still checks a name that fits the message but not the rules", async () => {
    const error = await rejection(ts.workspaces.createWorkspace({ name: "n".repeat(1000) }));
    expect(error.code).toBe(Code.InvalidArgument);
  });
});

describe("CORS", () => {
  const ORIGIN = "http://app.example";
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer("sqlite", { FOREMAN_CORS_ORIGINS: ORIGIN });
  });
  afterAll(async () => {
    await ts?.close();
  });

  function preflight(origin: string): Promise<RawResponse> {
    return request(`${ts.url}${CREATE}`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,connect-protocol-version,x-request-id",
      },
    });
  }

  it("answers a preflight from the allowed origin with 204 and the Connect headers", async () => {
    const res = await preflight(ORIGIN);
    expect(res.status).toBe(204);
    expect(res.headers["access-control-allow-origin"]).toBe(ORIGIN);
    const allowHeaders = String(res.headers["access-control-allow-headers"]).toLowerCase().split(/,\s*/);
    expect(allowHeaders).toEqual(expect.arrayContaining(["content-type", "connect-protocol-version", "x-request-id"]));
    expect(String(res.headers["access-control-allow-methods"])).toContain("POST");
    expect(String(res.headers.vary).toLowerCase()).toContain("origin");
  });

  it("gives another origin no allow-origin header", async () => {
    const res = await preflight("http://evil.example");
    expect(res.headers["access-control-allow-origin"]).toBeUndefined();
    expect(res.headers["access-control-allow-headers"]).toBeUndefined();
    expect(res.status).not.toBe(204);
  });

  it("marks a call from the allowed origin readable, and exposes the request id", async () => {
    const res = await postJson(`${ts.url}${CREATE}`, JSON.stringify({ name: "from the browser" }), { origin: ORIGIN });
    expect(res.status).toBe(200);
    expect(res.headers["access-control-allow-origin"]).toBe(ORIGIN);
    expect(String(res.headers["access-control-expose-headers"]).toLowerCase()).toContain("x-request-id");
  });

  it("marks an error from the allowed origin readable too", async () => {
    const res = await postJson(`${ts.url}${CREATE}`, JSON.stringify({ name: "" }), { origin: ORIGIN });
    expect(res.status).toBe(400);
    expect(res.headers["access-control-allow-origin"]).toBe(ORIGIN);
  });

  it("does not mark a call from another origin", async () => {
    const res = await postJson(`${ts.url}${LIST}`, "{}", { origin: "http://evil.example" });
    expect(res.headers["access-control-allow-origin"]).toBeUndefined();
  });
});

/** Sends a request's headers, waits until the server has taken the request (100 Continue), and
 * returns a function that sends the body and resolves with the response. */
function startHttp1Call(url: string, body: string): Promise<() => Promise<RawResponse>> {
  return new Promise((resolveStarted, reject) => {
    const req = http.request(url, {
      method: "POST",
      agent: false,
      headers: { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)), expect: "100-continue" },
    });
    const response = new Promise<RawResponse>((resolve, rejectResponse) => {
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const buf = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf, json: () => JSON.parse(buf.toString()) });
        });
      });
      req.on("error", rejectResponse);
    });
    req.on("error", reject);
    req.on("continue", () =>
      resolveStarted(() => {
        req.end(body);
        return response;
      }),
    );
    req.flushHeaders();
  });
}

function startHttp2Call(url: string, body: string): Promise<{ finish: () => Promise<{ status: number; body: string }>; session: http2.ClientHttp2Session }> {
  return new Promise((resolveStarted, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request(
      { ":method": "POST", ":path": CREATE, "content-type": "application/json", expect: "100-continue" },
      { endStream: false },
    );
    const response = new Promise<{ status: number; body: string }>((resolve, rejectResponse) => {
      let status = 0;
      let text = "";
      stream.on("response", (headers) => (status = Number(headers[":status"])));
      stream.setEncoding("utf8").on("data", (d: string) => (text += d));
      stream.on("end", () => resolve({ status, body: text }));
      stream.on("error", rejectResponse);
    });
    stream.on("error", reject);
    stream.on("continue", () =>
      resolveStarted({
        session,
        finish: () => {
          stream.end(body);
          return response;
        },
      }),
    );
  });
}

describe.each(DIALECTS)("graceful shutdown on %s", (dialect) => {
  it("ends Watch streams with NOT_SERVING, resolves close(), then refuses new calls", async () => {
    const ts = await startTestServer(dialect);
    try {
      const streams = PROTOCOLS.map((protocol) => ts.client(Health, protocol).watch({ service: "" })[Symbol.asyncIterator]());
      for (const stream of streams) expect((await stream.next()).value?.status).toBe(ServingStatus.SERVING);

      const closed = ts.server.close();
      for (const stream of streams) {
        const rest: ServingStatus[] = [];
        for (let r = await stream.next(); !r.done; r = await stream.next()) rest.push(r.value.status);
        expect(rest).toEqual([ServingStatus.NOT_SERVING]);
      }
      await closed;

      for (const protocol of PROTOCOLS) {
        const error = await rejection(ts.client(Health, protocol).check({ service: "" }));
        expect(error.code).toBe(Code.Unavailable);
      }
      await expect(request(`${ts.url}/healthz`)).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      await ts.close();
    }
  });

  it("finishes calls that are in flight when close() begins", async () => {
    const ts = await startTestServer(dialect);
    let session: http2.ClientHttp2Session | undefined;
    try {
      // Both requests have reached the server (it answered 100 Continue) but not yet sent their bodies.
      const finishHttp1 = await startHttp1Call(`${ts.url}${CREATE}`, JSON.stringify({ name: "in flight over http/1.1" }));
      const h2 = await startHttp2Call(ts.url, JSON.stringify({ name: "in flight over h2c" }));
      session = h2.session;

      const closed = ts.server.close();
      const [r1, r2] = await Promise.all([finishHttp1(), h2.finish()]);
      await closed;

      expect(r1.status).toBe(200);
      expect((r1.json().workspace as { name: string }).name).toBe("in flight over http/1.1");
      expect(r1.headers.connection).toBe("close");
      expect(r2.status).toBe(200);
      expect((JSON.parse(r2.body) as { workspace: { name: string } }).workspace.name).toBe("in flight over h2c");

      const names = await workspaceNames(ts);
      expect(names).toEqual(["in flight over h2c", "in flight over http/1.1"]);
    } finally {
      session?.destroy();
      await ts.close();
    }
  });

  it("lets calls started just before close() succeed or fail Unavailable, never hang or fail Internal", async () => {
    const ts = await startTestServer(dialect);
    try {
      const clients = PROTOCOLS.map((protocol) => ({ protocol, client: ts.client(WorkspaceService, protocol) }));
      // Open the HTTP/2 connections first, so that the calls below go out on them while the
      // shutdown begins. (Not the HTTP/1.1 ones: a request sent on an idle keep-alive connection
      // as the server closes it meets a reset, which HTTP/1.1 cannot prevent and connect-node
      // reports as Internal "write EPIPE" or Aborted.)
      for (const { protocol, client } of clients) {
        if (protocol === "connect-h2c" || protocol === "grpc") await client.listWorkspaces({});
      }

      const calls = clients.flatMap(({ protocol, client }) =>
        Array.from({ length: 5 }, (_, i) => {
          const name = `${protocol} ${i}`;
          return client.createWorkspace({ name }).then(
            () => ({ name, ok: true as const }),
            (error: unknown) => ({ name, ok: false as const, code: codeOf(error), error }),
          );
        }),
      );
      await ts.server.close();
      const outcomes = await Promise.all(calls);

      const failures = outcomes.filter((o) => !o.ok);
      expect(failures.map((f) => `${f.name}: ${Code[f.code]}`).filter((f) => !f.endsWith(": Unavailable"))).toEqual([]);
      // Every acknowledged create is stored, and nothing that failed was.
      const succeeded = outcomes.filter((o) => o.ok).map((o) => o.name);
      expect(await workspaceNames(ts)).toEqual(succeeded.sort());

      // And the server is gone.
      expect(codeOf(await ts.workspaces.listWorkspaces({}).catch((e: unknown) => e))).toBe(Code.Unavailable);
    } finally {
      await ts.close();
    }
  });
});

/** The names of the workspaces stored in a (closed) test server's database, sorted. */
async function workspaceNames(ts: TestServer): Promise<string[]> {
  const db = openDatabase({
    databaseUrl: ts.database.databaseUrl,
    sqlitePath: path.join(ts.database.dataDir, "foreman.db"),
    poolSize: 1,
  });
  try {
    const rows = await db.kysely.selectFrom("workspaces").select("name").execute();
    return rows.map((r) => r.name).sort();
  } finally {
    await db.close();
  }
}
