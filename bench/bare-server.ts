// The peer for bench/h2load.ts: a bare connect-node server on h2c and HTTP/1.1 that answers
// WorkspaceService.GetWorkspace with a fixed message, and does nothing else. It shows what the
// framework alone costs per call, so the project's overhead on top of it can be read off.
// Run as its own process: `node --import tsx bench/bare-server.ts <port> <base64 response>`.
import http2 from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { GetWorkspaceResponseSchema, WorkspaceService } from "../gen/foreman/v1/workspace_pb.js";

const [portArg, responseArg] = process.argv.slice(2);
if (portArg === undefined || responseArg === undefined) {
  process.stderr.write("usage: bare-server.ts <port> <base64 GetWorkspaceResponse>\n");
  process.exit(2);
}
// The project's own answer, decoded once: the same bytes go back on every call.
const response = fromBinary(GetWorkspaceResponseSchema, Buffer.from(responseArg, "base64"));

const handler = connectNodeAdapter({
  routes: (router: ConnectRouter) => router.service(WorkspaceService, { getWorkspace: () => response }),
});
const server = http2.createServer(handler);
server.listen(Number(portArg), "127.0.0.1", () => process.stdout.write("listening\n"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
