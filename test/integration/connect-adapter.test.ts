// The Connect adapter alone, on a bare http2 server, without the server's ConnectError guard
// (this file never starts the whole server, so the guard is not installed in its process): a
// call whose handler fails inside connect-es itself still ends, and its failure is one warn
// line without a stack. connect-node's own adapter leaves such a call hanging for good.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createClient, createContextValues } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import { createLogger } from "../../src/logger.js";
import { connectAdapter } from "../../src/server/connect-adapter.js";

describe("connectAdapter", () => {
  const lines: string[] = [];
  let server: http2.Http2Server;
  let baseUrl: string;
  const sessions = new Set<http2.ServerHttp2Session>();

  beforeAll(async () => {
    const handle = connectAdapter({
      routes(router) {
        router.service(WorkspaceService, {
          // connect-es puts this message in the grpc-message trailer with encodeURIComponent,
          // which throws on the lone surrogate: the failure happens inside the library.
          listWorkspaces() {
            throw new ConnectError("no such page \ud800", Code.InvalidArgument);
          },
        });
      },
      contextValues: () => createContextValues(),
      logger: createLogger("trace", { write: (line: string) => void lines.push(line) }),
    });
    server = http2.createServer((req, res) => {
      if (!handle(req, res)) {
        res.writeHead(404);
        res.end();
      }
    });
    server.on("session", (session) => sessions.add(session));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    // The client keeps its session open; close() would wait for it.
    for (const session of sessions) session.destroy();
    await closed;
  });

  it("ends a call that fails inside connect-es, and logs it as one warn line without a stack", async () => {
    const client = createClient(WorkspaceService, createGrpcTransport({ baseUrl }));
    const abort = AbortSignal.timeout(20_000);
    let error: unknown;
    try {
      await client.listWorkspaces({}, { signal: abort });
    } catch (e) {
      error = e;
    }
    expect(abort.aborted).toBe(false);
    expect(error).toBeInstanceOf(ConnectError);
    const logged = lines.map((l) => JSON.parse(l) as { level: number; msg: string; procedure?: string }).filter((l) => l.procedure !== undefined);
    expect(logged).toEqual([expect.objectContaining({ level: 40, msg: "call failed while its response was written", procedure: "/foreman.v1.WorkspaceService/ListWorkspaces" })]);
    expect(lines.join("")).not.toContain("stack");
  });
});
