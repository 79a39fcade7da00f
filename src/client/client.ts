// How the CLI reaches the server: FOREMAN_URL, and a bearer token from FOREMAN_ACCESS_TOKEN or
// from the login `foreman login` stored, refreshed when it is about to expire. With neither,
// calls go without one (single-user mode needs none).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService, type TokenSet } from "../../gen/foreman/v1/auth_pb.js";
import { loadLogin, saveLogin, type StoredLogin } from "./credentials.js";
import { LoginEnded, ServerRefused } from "./errors.js";

export const DEFAULT_SERVER = "http://127.0.0.1:54871";


export function serverUrl(env: NodeJS.ProcessEnv): string {
  return (env.FOREMAN_URL?.trim() || DEFAULT_SERVER).replace(/\/+$/, "");
}

/** A ConnectError as the one line the user reads; anything else as it is. */
export function explain(error: unknown): unknown {
  return error instanceof ConnectError ? new ServerRefused(`${Code[error.code]}: ${error.rawMessage}`, { cause: error }) : error;
}

export function toStoredLogin(tokens: TokenSet, user: { id: string; email: string }): StoredLogin {
  return {
    accessToken: tokens.accessToken,
    accessTokenExpireTime: timestampDate(tokens.accessTokenExpireTime!).toISOString(),
    refreshToken: tokens.refreshToken,
    refreshTokenExpireTime: timestampDate(tokens.refreshTokenExpireTime!).toISOString(),
    userId: user.id,
    email: user.email,
  };
}

/** Refresh this long before the access token expires, so a call never carries a dying one. */
const REFRESH_AHEAD_MS = 30_000;

/** The access token to send, refreshing (and storing) the stored login when it is due. */
async function bearerToken(env: NodeJS.ProcessEnv, server: string): Promise<string | undefined> {
  const explicit = env.FOREMAN_ACCESS_TOKEN?.trim();
  if (explicit) return explicit;
  const stored = await loadLogin(env, server);
  if (stored === undefined) return undefined;
  if (Date.parse(stored.accessTokenExpireTime) - REFRESH_AHEAD_MS > Date.now()) return stored.accessToken;
  const auth = createClient(AuthService, createConnectTransport({ baseUrl: server, httpVersion: "1.1" }));
  let tokens: TokenSet | undefined;
  try {
    tokens = (await auth.refreshToken({ refreshToken: stored.refreshToken })).tokens;
  } catch (error) {
    if (error instanceof ConnectError && error.code === Code.Unauthenticated) {
      throw new LoginEnded(`your login to ${server} has ended (${error.rawMessage}); run foreman login again`, { cause: error });
    }
    throw explain(error);
  }
  await saveLogin(env, server, toStoredLogin(tokens!, { id: stored.userId, email: stored.email }));
  return tokens!.accessToken;
}

/** A transport to the server whose every call carries the bearer token `token` gives at that moment, if any. */
export function bearerTransport(server: string, token: () => Promise<string | undefined> | string | undefined): Transport {
  const bearer: Interceptor = (next) => async (req) => {
    const value = await token();
    if (value !== undefined) req.header.set("authorization", `Bearer ${value}`);
    return next(req);
  };
  return createConnectTransport({ baseUrl: server, httpVersion: "1.1", interceptors: [bearer] });
}

/** A transport to the server that carries the user's credential, if any. */
export function apiTransport(env: NodeJS.ProcessEnv): Transport {
  const server = serverUrl(env);
  return bearerTransport(server, () => bearerToken(env, server));
}
