// `foreman login`, `foreman logout`, `foreman whoami`: the OIDC login for the command line.
// login listens on a loopback port for the provider's redirect (RFC 8252), so the server's
// FOREMAN_OIDC_REDIRECT_URIS must hold http://127.0.0.1:PORT/callback. It prints the URL to open
// in a browser, finishes the login when the browser comes back, and stores the tokens.
import http from "node:http";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/foreman/v1/auth_pb.js";
import { apiTransport, explain, serverUrl, toStoredLogin } from "../client/client.js";
import { LoginEnded, ServerRefused, UsageError } from "./errors.js";
import { credentialsPath, forgetLogin, loadLogin, saveLogin } from "../client/credentials.js";

export const DEFAULT_LOGIN_PORT = 54872;

const PAGE = (title: string, text: string) =>
  `<!doctype html><meta charset="utf-8"><title>${title}</title><p>${text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`)}</p>\n`;

/** Waits for the provider's redirect to /callback, then finishes the login with it. */
/**
 * Listens on the loopback port for the provider's redirect. Resolves once it listens (so the
 * address is printed only when a browser can come back to it) with the login's outcome.
 */
function listenForCallback(
  port: number,
  expectedState: string,
  finish: (code: string) => Promise<string>,
  timeoutMs: number,
): Promise<{ outcome: Promise<string> }> {
  let listening!: () => void;
  let refused!: (error: unknown) => void;
  const ready = new Promise<void>((resolve, reject) => {
    listening = resolve;
    refused = reject;
  });
  const outcome = new Promise<string>((resolve, reject) => {
    const server = http.createServer((req, res) => {
      const url = new URL(req.url ?? "/", `http://127.0.0.1:${port}`);
      if (url.pathname !== "/callback") {
        res.writeHead(404).end();
        return;
      }
      const done = (status: number, title: string, text: string, outcome: () => void) => {
        res.writeHead(status, { "content-type": "text/html; charset=utf-8" }).end(PAGE(title, text));
        clearTimeout(timer);
        server.close();
        outcome();
      };
      const error = url.searchParams.get("error");
      if (error !== null) {
        const why = `${error}${url.searchParams.get("error_description") ? `: ${url.searchParams.get("error_description")}` : ""}`;
        done(400, "Login failed", `The provider refused the login (${why}).`, () => reject(new ServerRefused(`the provider refused the login: ${why}`)));
        return;
      }
      // Another page's redirect (or a forged one) is not this login's: ignore it.
      if (url.searchParams.get("state") !== expectedState) {
        res.writeHead(400, { "content-type": "text/html; charset=utf-8" }).end(PAGE("Login", "This is not the login in progress."));
        return;
      }
      finish(url.searchParams.get("code") ?? "").then(
        (who) => done(200, "Logged in", `Logged in to Foreman as ${who}. You can close this tab.`, () => resolve(who)),
        (failure: unknown) => done(400, "Login failed", "The login failed; see the terminal.", () => reject(explain(failure))),
      );
    });
    const timer = setTimeout(() => {
      server.close();
      reject(new ServerRefused("the login was not finished in time; run foreman login again"));
    }, timeoutMs);
    server.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const failure =
        error.code === "EADDRINUSE"
          ? new UsageError(`port ${port} is taken; choose another with --port (and allow its redirect URI on the server)`)
          : error;
      refused(failure);
      reject(failure);
    });
    server.listen(port, "127.0.0.1", () => listening());
  });
  // A failure to listen is reported through `ready`; the outcome's copy of it is not separate news.
  outcome.catch(() => undefined);
  return ready.then(() => ({ outcome }));
}

/** portArg: --port's value, if given. */
export async function login(portArg: string | undefined, env: NodeJS.ProcessEnv, out: (line: string) => void): Promise<void> {
  const port = portArg === undefined ? DEFAULT_LOGIN_PORT : /^\d{1,5}$/.test(portArg) ? Number(portArg) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new UsageError(`--port must be a port number (1 to 65535), got '${portArg}'`);
  const server = serverUrl(env);
  const auth = createClient(AuthService, createConnectTransport({ baseUrl: server, httpVersion: "1.1" }));
  const redirectUri = `http://127.0.0.1:${port}/callback`;
  let started;
  try {
    started = await auth.getLoginUrl({ redirectUri });
  } catch (error) {
    throw explain(error);
  }
  const deadline = started.expireTime ? timestampDate(started.expireTime).getTime() : Date.now() + 600_000;
  const waiting = await listenForCallback(
    port,
    started.state,
    async (code) => {
      const res = await auth.handleCallback({ code, state: started.state, redirectUri });
      await saveLogin(env, server, toStoredLogin(res.tokens!, { id: res.user!.id, email: res.user!.email }));
      return res.user!.email || res.user!.id;
    },
    Math.max(1000, deadline - Date.now()),
  );
  out(`Open this address in a browser to log in to ${server}:`);
  out(started.url);
  const who = await waiting.outcome;
  out(`Logged in as ${who}; the login is kept in ${credentialsPath(env)}.`);
}

export async function logout(env: NodeJS.ProcessEnv, out: (line: string) => void): Promise<void> {
  const server = serverUrl(env);
  const stored = await loadLogin(env, server);
  if (stored === undefined) {
    out(`Not logged in to ${server}.`);
    return;
  }
  try {
    await createClient(AuthService, apiTransport(env)).logout({ refreshToken: stored.refreshToken });
  } catch (error) {
    // A login the server already ended is forgotten all the same; any other failure keeps it,
    // so that logging out can be tried again.
    const ended = (error instanceof ConnectError && error.code === Code.Unauthenticated) || error instanceof LoginEnded;
    if (!ended) throw explain(error);
  }
  await forgetLogin(env, server);
  out(`Logged out of ${server}.`);
}

export async function whoami(env: NodeJS.ProcessEnv, out: (line: string) => void): Promise<void> {
  try {
    const { user } = await createClient(AuthService, apiTransport(env)).getCurrentUser({});
    out(`${user!.email || user!.name || user!.id} (${user!.id})${user!.issuer ? ` via ${user!.issuer}` : ", single-user mode"}`);
  } catch (error) {
    throw explain(error);
  }
}
