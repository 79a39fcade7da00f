import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file_foreman_v1_task } from "../../gen/foreman/v1/task_pb.js";
import { file_foreman_v1_workspace } from "../../gen/foreman/v1/workspace_pb.js";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflection as ServerReflectionV1Alpha,
  ServerReflectionRequestSchema as V1AlphaRequestSchema,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Health } from "../../gen/health/v1/health_pb.js";
import { HealthStatus, ServingStatus, registerHealthService } from "../../src/api/health-service.js";
import { registerReflectionService } from "../../src/api/reflection-service.js";
import { DIALECTS } from "../helpers/databases.js";
import { startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { rpcError } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer as ForemanServer } from "../helpers/server.js";

const run = promisify(execFile);
const BUF = join(process.cwd(), "node_modules", ".bin", "buf");

interface TestServer {
  baseUrl: string;
  close(): Promise<void>;
}

async function startServer(health: HealthStatus): Promise<TestServer> {
  const server = http2.createServer(
    connectNodeAdapter({
      routes(router) {
        registerHealthService(router, health);
        registerReflectionService(router, [file_foreman_v1_workspace, file_foreman_v1_task]);
      },
    }),
  );
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // Idle client sessions would otherwise keep close() waiting.
        for (const session of sessions) {
          session.destroy();
        }
      }),
  };
}

type ReflectionRequestInit = MessageInitShape<typeof ServerReflectionRequestSchema>;

// workspace.proto and every file it imports, directly or not, as reflection answers them (the file first).
const WORKSPACE_FILE_AND_DEPENDENCIES = [
  "foreman/v1/workspace.proto",
  "foreman/v1/repository.proto",
  "foreman/v1/options.proto",
  "google/protobuf/descriptor.proto",
  "google/protobuf/timestamp.proto",
];

describe("reflection and health over HTTP/2", () => {
  const health = new HealthStatus();
  let server: TestServer;
  let reflection: ReturnType<typeof createClient<typeof ServerReflection>>;
  let healthClient: ReturnType<typeof createClient<typeof Health>>;

  beforeAll(async () => {
    health.set("foreman.v1.WorkspaceService", ServingStatus.SERVING);
    server = await startServer(health);
    const transport = createGrpcTransport({ baseUrl: server.baseUrl });
    reflection = createClient(ServerReflection, transport);
    healthClient = createClient(Health, transport);
  });

  afterAll(async () => {
    health.shutdown();
    await server?.close();
  });

  async function reflect(...requests: ReflectionRequestInit[]): Promise<ServerReflectionResponse[]> {
    async function* input() {
      for (const r of requests) {
        yield create(ServerReflectionRequestSchema, r);
      }
    }
    const responses: ServerReflectionResponse[] = [];
    for await (const res of reflection.serverReflectionInfo(input())) {
      responses.push(res);
    }
    return responses;
  }

  function fileNames(res: ServerReflectionResponse | undefined): string[] {
    expect(res?.messageResponse.case).toBe("fileDescriptorResponse");
    if (res?.messageResponse.case !== "fileDescriptorResponse") {
      return [];
    }
    return res.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name);
  }

  it("lists the served services plus health and reflection", async () => {
    const [res] = await reflect({ host: "example", messageRequest: { case: "listServices", value: "*" } });
    expect(res?.validHost).toBe("example");
    expect(res?.originalRequest?.messageRequest).toEqual({ case: "listServices", value: "*" });
    expect(res?.messageResponse.case).toBe("listServicesResponse");
    const names =
      res?.messageResponse.case === "listServicesResponse" ? res.messageResponse.value.service.map((s) => s.name) : [];
    expect(names.sort()).toEqual(
      [
        "foreman.v1.TaskService",
        "foreman.v1.WorkspaceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ].sort(),
    );
  });

  it("answers the same over v1alpha, for older tools", async () => {
    const v1alpha = createClient(ServerReflectionV1Alpha, createGrpcTransport({ baseUrl: server.baseUrl }));
    async function* input() {
      yield create(V1AlphaRequestSchema, { host: "example", messageRequest: { case: "listServices", value: "*" } });
      yield create(V1AlphaRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "foreman.v1.WorkspaceService" } });
      yield create(V1AlphaRequestSchema, { messageRequest: { case: "fileByFilename", value: "nope.proto" } });
    }
    const responses = [];
    for await (const res of v1alpha.serverReflectionInfo(input())) responses.push(res);
    const [list, file, missing] = responses;
    expect(list?.$typeName).toBe("grpc.reflection.v1alpha.ServerReflectionResponse");
    expect(list?.validHost).toBe("example");
    expect(list?.originalRequest?.$typeName).toBe("grpc.reflection.v1alpha.ServerReflectionRequest");
    expect(list?.originalRequest?.messageRequest).toEqual({ case: "listServices", value: "*" });
    const names = list?.messageResponse.case === "listServicesResponse" ? list.messageResponse.value.service.map((s) => s.name) : [];
    expect(names).toEqual(expect.arrayContaining(["foreman.v1.WorkspaceService", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]));
    expect(file?.messageResponse.case).toBe("fileDescriptorResponse");
    const files = file?.messageResponse.case === "fileDescriptorResponse" ? file.messageResponse.value.fileDescriptorProto : [];
    expect(files.map((b) => fromBinary(FileDescriptorProtoSchema, b).name)).toEqual(WORKSPACE_FILE_AND_DEPENDENCIES);
    expect(missing?.messageResponse.case === "errorResponse" && missing.messageResponse.value.errorCode).toBe(5);
  });

  it("answers several requests on one stream, in order", async () => {
    const responses = await reflect(
      { messageRequest: { case: "fileContainingSymbol", value: "foreman.v1.WorkspaceService" } },
      { messageRequest: { case: "fileContainingSymbol", value: "foreman.v1.WorkspaceService.GetWorkspace" } },
      { messageRequest: { case: "fileContainingSymbol", value: "foreman.v1.TaskStatus" } },
      { messageRequest: { case: "fileContainingSymbol", value: "foreman.v1.TASK_STATUS_IN_REVIEW" } },
      { messageRequest: { case: "fileByFilename", value: "google/protobuf/timestamp.proto" } },
    );
    expect(responses).toHaveLength(5);
    const [service, method, enumType, enumValue, timestamp] = responses;
    expect(fileNames(service)).toEqual(WORKSPACE_FILE_AND_DEPENDENCIES);
    expect(fileNames(method)[0]).toBe("foreman/v1/workspace.proto");
    expect(fileNames(enumType)[0]).toBe("foreman/v1/common.proto");
    expect(fileNames(enumValue)[0]).toBe("foreman/v1/common.proto");
    expect(fileNames(timestamp)).toEqual(["google/protobuf/timestamp.proto"]);
  });

  it("sends transitive dependencies with a file", async () => {
    const [res] = await reflect({ messageRequest: { case: "fileContainingSymbol", value: "foreman.v1.Task" } });
    const names = fileNames(res);
    expect(names[0]).toBe("foreman/v1/task.proto");
    expect(names).toContain("foreman/v1/common.proto");
    expect(names).toContain("google/protobuf/timestamp.proto");
  });

  it("answers unknown names with an in-band NOT_FOUND", async () => {
    const responses = await reflect(
      { messageRequest: { case: "fileContainingSymbol", value: "foreman.v1.NoSuchThing" } },
      { messageRequest: { case: "fileByFilename", value: "nope.proto" } },
      {
        messageRequest: {
          case: "fileContainingExtension",
          value: { containingType: "foreman.v1.Task", extensionNumber: 100 },
        },
      },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "foreman.v1.NoSuchThing" } },
      { messageRequest: { case: "listServices", value: "" } },
    );
    expect(responses.map((r) => r.messageResponse.case)).toEqual([
      "errorResponse",
      "errorResponse",
      "errorResponse",
      "errorResponse",
      "listServicesResponse",
    ]);
    for (const r of responses.slice(0, 4)) {
      expect(r.messageResponse.case === "errorResponse" && r.messageResponse.value.errorCode).toBe(5);
    }
    const first = responses[0]?.messageResponse;
    expect(first?.case === "errorResponse" && first.value.errorMessage).toContain("foreman.v1.NoSuchThing");
  });

  it("checks the server and known services", async () => {
    expect((await healthClient.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    expect((await healthClient.check({ service: "foreman.v1.WorkspaceService" })).status).toBe(ServingStatus.SERVING);
  });

  it("answers Check for an unknown service with NotFound", async () => {
    const err = await healthClient.check({ service: "no.such.Service" }).catch((e: unknown) => e);
    expect(ConnectError.from(err).code).toBe(Code.NotFound);
    expect(ConnectError.from(err).findDetails(ErrorInfoSchema).map((info) => info.reason)).toEqual(["NOT_FOUND"]);
  });

  describe("buf curl", () => {
    let cacheDir: string;
    beforeAll(async () => {
      cacheDir = await mkdtemp(join(tmpdir(), "foreman-buf-"));
    });
    afterAll(async () => {
      await rm(cacheDir, { recursive: true, force: true });
    });

    function buf(...args: string[]) {
      return run(BUF, ["curl", "--http2-prior-knowledge", ...args], {
        timeout: 20_000,
        env: { ...process.env, BUF_CACHE_DIR: cacheDir },
      });
    }

    it("lists WorkspaceService methods through reflection", async () => {
      const { stdout } = await buf("--protocol", "grpc", "--list-methods", server.baseUrl);
      const methods = stdout.split("\n").filter(Boolean);
      expect(methods).toEqual(
        expect.arrayContaining([
          "foreman.v1.WorkspaceService/CreateWorkspace",
          "foreman.v1.WorkspaceService/GetWorkspace",
          "foreman.v1.WorkspaceService/ListWorkspaces",
          "grpc.health.v1.Health/Check",
        ]),
      );
    });

    it("lists services through reflection v1alpha, as grpcurl asks", async () => {
      const { stdout } = await buf("--protocol", "grpc", "--reflect-protocol", "grpc-v1alpha", "--list-services", server.baseUrl);
      expect(stdout.split("\n").filter(Boolean)).toEqual(expect.arrayContaining(["foreman.v1.WorkspaceService", "grpc.health.v1.Health"]));
    });

    it("calls Health/Check", async () => {
      const { stdout } = await buf(`${server.baseUrl}/grpc.health.v1.Health/Check`);
      expect(JSON.parse(stdout)).toEqual({ status: "SERVING" });
    });
  });
});

describe("health Watch", () => {
  it("streams changes and ends on shutdown", async () => {
    const health = new HealthStatus();
    const server = await startServer(health);
    try {
      const client = createClient(Health, createGrpcTransport({ baseUrl: server.baseUrl }));
      const stream = client.watch({ service: "foreman.v1.TaskService" })[Symbol.asyncIterator]();
      const whole = client.watch({ service: "" })[Symbol.asyncIterator]();

      expect((await stream.next()).value?.status).toBe(ServingStatus.SERVICE_UNKNOWN);
      expect((await whole.next()).value?.status).toBe(ServingStatus.SERVING);

      health.set("foreman.v1.TaskService", ServingStatus.SERVING);
      expect((await stream.next()).value?.status).toBe(ServingStatus.SERVING);

      health.shutdown();
      expect((await stream.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
      expect((await stream.next()).done).toBe(true);
      expect((await whole.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
      expect((await whole.next()).done).toBe(true);

      // set() after shutdown is ignored and new watches end right away.
      health.set("", ServingStatus.SERVING);
      expect(health.get("")).toBe(ServingStatus.NOT_SERVING);
      const late = client.watch({ service: "" })[Symbol.asyncIterator]();
      expect((await late.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
      expect((await late.next()).done).toBe(true);
    } finally {
      await server.close();
    }
  });

  it("stops watching when the client aborts", async () => {
    const health = new HealthStatus();
    const server = await startServer(health);
    try {
      const client = createClient(Health, createGrpcTransport({ baseUrl: server.baseUrl }));
      const abort = new AbortController();
      const stream = client.watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
      expect((await stream.next()).value?.status).toBe(ServingStatus.SERVING);
      abort.abort();
      const err = await stream.next().catch((e: unknown) => e);
      expect(ConnectError.from(err).code).toBe(Code.Canceled);
    } finally {
      health.shutdown();
      await server.close();
    }
  });
});

describe.each(DIALECTS)("health of the real server on %s, with a hostile service name", (dialect) => {
  let server: ForemanServer;
  const lines: string[] = [];

  beforeAll(async () => {
    server = await startTestServer(dialect, {}, undefined, { logLines: lines });
  });

  afterAll(async () => {
    await server?.close();
  });

  /** A name that would garble a log line, and is long: only its start may ever be shown. */
  function hostileName(): { name: string; tail: string } {
    const tail = `tail-${randomUUID()}`;
    return { name: `\u202eevil\u2028line\u0085${"A".repeat(5000)}${tail}`, tail };
  }

  it.each(["grpc", "connect"] as const)("Check over %s answers NotFound with the name escaped and cut, and logs it no other way", async (protocol) => {
    const transport =
      protocol === "grpc" ? createGrpcTransport({ baseUrl: server.url }) : createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" });
    const { name, tail } = hostileName();
    const before = lines.length;
    const err = await rpcError(createClient(Health, transport).check({ service: name }));
    expect(err.code).toBe(Code.NotFound);
    expect(err.rawMessage.length).toBeLessThan(200);
    expect(err.rawMessage).toContain("\\u202eevil\\u2028line\\u0085AAA");
    expect(err.rawMessage).not.toMatch(/[\u202e\u2028\u0085]/);
    expect(err.rawMessage).not.toContain(tail);
    // The ErrorInfo names the service as the message does: escaped and cut.
    const metadata = JSON.stringify(err.findDetails(ErrorInfoSchema)[0]?.metadata);
    expect(metadata).toContain("\\\\u202eevil");
    expect(metadata).not.toContain(tail);

    const logged = lines.slice(before).join("");
    expect(logged).toContain("unknown service");
    expect(logged).not.toContain(tail);
    expect(logged).not.toContain("A".repeat(100));
    expect(logged).not.toMatch(/[\u202e\u2028\u0085]/);
  });

  it("Watch answers SERVICE_UNKNOWN and logs nothing of the name", async () => {
    const { name, tail } = hostileName();
    const before = lines.length;
    const abort = new AbortController();
    const client = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const stream = client.watch({ service: name }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.status).toBe(ServingStatus.SERVICE_UNKNOWN);
    abort.abort();
    await stream.next().catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const logged = lines.slice(before).join("");
    expect(logged).not.toContain(tail);
    expect(logged).not.toContain("AAAA");
  });
});

describe.each(DIALECTS)("reflection v1 and v1alpha on the real server in multi-user mode, on %s", (dialect) => {
  let provider: TestProvider;
  let server: ForemanServer;
  let cacheDir: string;

  beforeAll(async () => {
    provider = await startOidcProvider();
    server = await startMultiUserServer(dialect, provider);
    cacheDir = await mkdtemp(join(tmpdir(), "foreman-buf-"));
  });

  afterAll(async () => {
    await server?.close();
    await provider?.close();
    await rm(cacheDir, { recursive: true, force: true });
  });

  // No credential: reflection is public, as health is.
  it.each(["grpc-v1", "grpc-v1alpha"])("lists every service to an anonymous buf curl over %s", async (reflectProtocol) => {
    const { stdout } = await run(BUF, ["curl", "--http2-prior-knowledge", "--reflect-protocol", reflectProtocol, "--list-services", server.url], {
      timeout: 20_000,
      env: { ...process.env, BUF_CACHE_DIR: cacheDir },
    });
    const services = stdout.split("\n").filter(Boolean);
    expect(services).toEqual(
      expect.arrayContaining([
        "foreman.v1.TaskService",
        "foreman.v1.WorkspaceService",
        "foreman.v1.WorkerService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]),
    );
  });
});
