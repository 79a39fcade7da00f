// A real OpenID provider on localhost (oauth2-mock-server: discovery, JWKS, an authorize
// endpoint that redirects with a code, a token endpoint that checks PKCE and signs ID tokens),
// a multi-user Foreman server that logs in with it, and clients that carry a credential.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { OAuth2Server } from "oauth2-mock-server";
import { AuthService, type HandleCallbackResponse } from "../../gen/foreman/v1/auth_pb.js";
import type { DialectName } from "../../src/db/dialect.js";
import { startTestServer, type Protocol, type TestServer } from "./server.js";

/** Signs the test server's access tokens; tests use it to forge tokens with chosen claims. */
export const TEST_JWT_SECRET = "test-secret-for-foreman-access-tokens-0123456789";
/** Seals the test server's stored secrets (FOREMAN_SECRET_KEY, 32 bytes in base64). */
export const TEST_SECRET_KEY = Buffer.alloc(32, 7).toString("base64");
export const REDIRECT_URI = "http://127.0.0.1:5173/auth/callback";
export const CLIENT_ID = "foreman-web";

export interface Identity {
  sub: string;
  email?: string;
  name?: string;
}

export interface TestProvider {
  issuer: string;
  /** Who the next login is; the provider puts it in every token it signs. */
  identity: Identity;
  /** Changes the next ID token before it is signed (wrong issuer, audience, nonce…). */
  tamperIdToken: ((payload: Record<string, unknown>) => void) | undefined;
  close(): Promise<void>;
}

export async function startOidcProvider(): Promise<TestProvider> {
  const server = new OAuth2Server();
  await server.issuer.keys.generate("RS256");
  await server.start(0, "127.0.0.1");
  const provider: TestProvider = {
    issuer: server.issuer.url!,
    identity: { sub: "alice", email: "alice@example.com", name: "Alice" },
    tamperIdToken: undefined,
    close: () => server.stop(),
  };
  server.service.on("beforeTokenSigning", (token: { payload: Record<string, unknown> }) => {
    Object.assign(token.payload, provider.identity);
    // The ID token is the one addressed to the client.
    if (token.payload.aud === CLIENT_ID && provider.tamperIdToken !== undefined) {
      const tamper = provider.tamperIdToken;
      provider.tamperIdToken = undefined;
      tamper(token.payload);
    }
  });
  return provider;
}

export function multiUserEnv(provider: TestProvider, extra: Record<string, string> = {}): Record<string, string> {
  return {
    FOREMAN_SINGLE_USER_MODE: "false",
    FOREMAN_HOST: "127.0.0.1",
    FOREMAN_OIDC_ISSUER: provider.issuer,
    FOREMAN_OIDC_CLIENT_ID: CLIENT_ID,
    FOREMAN_OIDC_REDIRECT_URIS: REDIRECT_URI,
    FOREMAN_JWT_SECRET: TEST_JWT_SECRET,
    FOREMAN_SECRET_KEY: TEST_SECRET_KEY,
    ...extra,
  };
}

export async function startMultiUserServer(
  dialect: DialectName,
  provider: TestProvider,
  extra: Record<string, string> = {},
  options: { logLines?: string[]; clock?: () => Date } = {},
): Promise<TestServer> {
  return startTestServer(dialect, multiUserEnv(provider, extra), undefined, options);
}

/**
 * A clock that runs with the wall clock, plus however far a test moved it ahead (only ever
 * ahead: a clock moved back would make earlier times look later).
 */
export function movableClock(): { now: () => Date; advance: (seconds: number) => void } {
  let aheadMs = 0;
  return {
    now: () => new Date(Date.now() + aheadMs),
    advance: (seconds) => {
      aheadMs += seconds * 1000;
    },
  };
}

/** A client that sends `Authorization: Bearer <token>` (or nothing, for undefined). */
export function clientWith<S extends DescService>(
  t: TestServer,
  service: S,
  token: string | undefined,
  protocol: Protocol = "connect-h2c",
): Client<S> {
  const bearer: Interceptor = (next) => (req) => {
    if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const baseUrl = t.url;
  const transport =
    protocol === "grpc"
      ? createGrpcTransport({ baseUrl, interceptors: [bearer] })
      : createConnectTransport({ baseUrl, httpVersion: protocol === "connect-http1" ? "1.1" : "2", interceptors: [bearer] });
  return createClient(service, transport);
}

/** Follows the provider's authorization redirect as a browser would; returns the code and state it sends back. */
export async function authorize(loginUrl: string): Promise<{ code: string; state: string; redirectedTo: URL }> {
  const res = await fetch(loginUrl, { redirect: "manual" });
  if (res.status !== 302) throw new Error(`provider answered ${res.status}, not a redirect`);
  const redirectedTo = new URL(res.headers.get("location")!);
  return { code: redirectedTo.searchParams.get("code") ?? "", state: redirectedTo.searchParams.get("state") ?? "", redirectedTo };
}

/** The whole login: GetLoginUrl, the provider's redirect, HandleCallback. */
export async function login(t: TestServer, provider: TestProvider, identity?: Identity): Promise<HandleCallbackResponse> {
  if (identity !== undefined) provider.identity = identity;
  const auth = clientWith(t, AuthService, undefined);
  const { url } = await auth.getLoginUrl({ redirectUri: REDIRECT_URI });
  const { code, state } = await authorize(url);
  return auth.handleCallback({ code, state, redirectUri: REDIRECT_URI });
}
