// The real server, in process on port 0, on a fresh database of the given dialect, with
// generated clients over each protocol the server speaks.
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { loadConfig, type Config } from "../../src/config.js";
import type { DialectName } from "../../src/db/dialect.js";
import { createLogger } from "../../src/logger.js";
import { startServer, type RunningServer } from "../../src/server/server.js";
import { RepositoryService } from "../../gen/foreman/v1/repository_pb.js";
import { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import { createTestDatabase, type TestDatabase } from "./databases.js";

export type Protocol = "connect-http1" | "connect-h2c" | "grpc" | "grpc-web";

/** A transport of the protocol to baseUrl (a server's URL, or one with a path in front). */
export function transportFor(baseUrl: string, protocol: Protocol): Transport {
  return protocol === "connect-http1"
    ? createConnectTransport({ baseUrl, httpVersion: "1.1" })
    : protocol === "connect-h2c"
      ? createConnectTransport({ baseUrl, httpVersion: "2" })
      : protocol === "grpc"
        ? createGrpcTransport({ baseUrl })
        : createGrpcWebTransport({ baseUrl, httpVersion: "1.1" });
}

export interface TestServer {
  server: RunningServer;
  database: TestDatabase;
  config: Config;
  url: string;
  transport(protocol?: Protocol): Transport;
  client<S extends DescService>(service: S, protocol?: Protocol): Client<S>;
  workspaces: Client<typeof WorkspaceService>;
  repositories: Client<typeof RepositoryService>;
  /** Shuts the server down and drops its database. */
  close(): Promise<void>;
}

/**
 * Starts a server on a fresh database, or on `shared` (another replica's database, which this
 * server then neither creates nor drops).
 */
export async function startTestServer(
  dialect: DialectName,
  env: Record<string, string> = {},
  shared?: TestDatabase,
  options: { logLines?: string[]; clock?: () => Date } = {},
): Promise<TestServer> {
  const database = shared ?? (await createTestDatabase(dialect));
  const drop = () => (shared === undefined ? database.drop() : Promise.resolve());
  const config = loadConfig({
    FOREMAN_PORT: "0",
    FOREMAN_DATA_DIR: database.dataDir,
    FOREMAN_SINGLE_USER_MODE: "true",
    FOREMAN_SHUTDOWN_TIMEOUT_SECONDS: "5",
    // Tests of other features add made-up remotes (https://github.com/acme/r-…), which the server
    // must not try to reach; tests of remotes turn this on against test/helpers/git-remote.ts.
    FOREMAN_CONTACT_REMOTES: "false",
    ...(database.databaseUrl !== undefined ? { DATABASE_URL: database.databaseUrl } : {}),
    ...env,
  });
  // logLines collects every line the server logs, at every level, for a test to read.
  const lines = options.logLines;
  const logger =
    lines === undefined
      ? createLogger((process.env.FOREMAN_TEST_LOG_LEVEL as Config["logLevel"] | undefined) ?? "silent")
      : createLogger("trace", { write: (line: string) => void lines.push(line) });
  let server: RunningServer;
  try {
    server = await startServer(config, logger, options.clock);
  } catch (error) {
    await drop();
    throw error;
  }
  const transports = new Map<Protocol, Transport>();
  const transport = (protocol: Protocol = "connect-h2c"): Transport => {
    let t = transports.get(protocol);
    if (t === undefined) {
      t = transportFor(server.url, protocol);
      transports.set(protocol, t);
    }
    return t;
  };
  const client = <S extends DescService>(service: S, protocol?: Protocol) => createClient(service, transport(protocol));
  return {
    server,
    database,
    config,
    url: server.url,
    transport,
    client,
    workspaces: client(WorkspaceService),
    repositories: client(RepositoryService),
    async close() {
      await server.close();
      await drop();
    },
  };
}
