// What authentication costs per call: GetWorkspace over Connect/h2c on a single-user server (no
// check) beside a multi-user server (the HS256 access JWT verified, once per token, and its
// login checked live, at most once a second), on SQLite and on PostgreSQL. The login is real:
// an OpenID provider (oauth2-mock-server) runs in this process. Before those two caches the
// check cost about 155 µs (SQLite) and 210 µs (PostgreSQL) of server CPU per call.
import { randomBytes } from "node:crypto";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import { OAuth2Server } from "oauth2-mock-server";
import { AuthService } from "../gen/foreman/v1/auth_pb.js";
import { WorkspaceService } from "../gen/foreman/v1/workspace_pb.js";
import { createBenchDatabase } from "./databases.js";
import { startBenchServer, type BenchServer } from "./server.js";
import { compare, type Target, type UnaryOptions, type UnaryResult } from "./unary.js";

const REDIRECT_URI = "http://127.0.0.1:5173/auth/callback";

async function login(baseUrl: string): Promise<string> {
  const auth = createClient(AuthService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  const { url } = await auth.getLoginUrl({ redirectUri: REDIRECT_URI });
  const redirect = await fetch(url, { redirect: "manual" });
  const back = new URL(redirect.headers.get("location") ?? "");
  const res = await auth.handleCallback({
    code: back.searchParams.get("code") ?? "",
    state: back.searchParams.get("state") ?? "",
    redirectUri: REDIRECT_URI,
  });
  return res.tokens!.accessToken;
}

export async function runAuth(options: UnaryOptions): Promise<UnaryResult> {
  const provider = new OAuth2Server();
  await provider.issuer.keys.generate("RS256");
  await provider.start(0, "127.0.0.1");
  const multiUser = {
    FOREMAN_SINGLE_USER_MODE: "false",
    FOREMAN_OIDC_ISSUER: provider.issuer.url!,
    FOREMAN_OIDC_CLIENT_ID: "foreman-bench",
    FOREMAN_OIDC_REDIRECT_URIS: REDIRECT_URI,
    FOREMAN_JWT_SECRET: randomBytes(32).toString("hex"),
    FOREMAN_SECRET_KEY: randomBytes(32).toString("base64"),
  };
  const database = await createBenchDatabase("auth");
  const configs: { name: string; settings: Record<string, string>; login: boolean }[] = [
    { name: "single-user sqlite", settings: {}, login: false },
    { name: "jwt sqlite", settings: multiUser, login: true },
  ];
  if (database !== undefined) {
    configs.push(
      { name: "single-user postgres", settings: { DATABASE_URL: database.url }, login: false },
      { name: "jwt postgres", settings: { DATABASE_URL: database.url, ...multiUser }, login: true },
    );
  }
  const servers: BenchServer[] = [];
  const sessions: Http2SessionManager[] = [];
  try {
    const targets: Target[] = [];
    // One server at a time: two servers migrating one fresh PostgreSQL database is safe, but slower.
    for (const config of configs) {
      const server = await startBenchServer(config.settings);
      servers.push(server);
      const token = config.login ? await login(server.url) : undefined;
      const bearer: Interceptor = (next) => (req) => {
        if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      };
      const session = new Http2SessionManager(server.url);
      sessions.push(session);
      const client = createClient(
        WorkspaceService,
        createConnectTransport({ baseUrl: server.url, httpVersion: "2", sessionManager: session, interceptors: [bearer] }),
      );
      const created = await client.createWorkspace({ name: `bench ${config.name}` });
      targets.push({ name: config.name, client, server, workspaceId: created.workspace!.id });
    }
    return await compare(targets, options);
  } finally {
    for (const session of sessions) session.abort();
    for (const server of servers) await server.stop();
    await database?.drop();
    await provider.stop();
  }
}
