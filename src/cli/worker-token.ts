// `foreman worker-token create|list|revoke`: worker registration tokens, through the public API
// like any other client. FOREMAN_URL says which server; FOREMAN_ACCESS_TOKEN is the user's
// access token in multi-user mode (single-user mode needs none).
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { parseArgs } from "node:util";
import { AuthService } from "../../gen/foreman/v1/auth_pb.js";

export const WORKER_TOKEN_USAGE = `Usage: foreman worker-token <command>

  create --name NAME [--ttl SECONDS]   Create a token; prints its secret once (0 or no --ttl: no expiry)
  list                                 List your tokens
  revoke ID                            Stop a token registering new workers

Environment: FOREMAN_URL (default http://127.0.0.1:54871), FOREMAN_ACCESS_TOKEN (multi-user mode)
`;

/** A usage mistake: exit 2 with the message. */
export class UsageError extends Error {}

/** The server refused or could not be reached: exit 1 with its code and message, no stack. */
export class ServerRefused extends Error {}

function client(env: NodeJS.ProcessEnv) {
  const token = env.FOREMAN_ACCESS_TOKEN?.trim();
  const bearer: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const baseUrl = env.FOREMAN_URL?.trim() || "http://127.0.0.1:54871";
  return createClient(AuthService, createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer] }));
}

const time = (t: Timestamp | undefined) => (t === undefined ? "-" : timestampDate(t).toISOString());

export async function workerToken(args: string[], env: NodeJS.ProcessEnv, out: (line: string) => void): Promise<void> {
  const [command, ...rest] = args;
  const { values, positionals } = (() => {
    try {
      return parseArgs({ args: rest, allowPositionals: true, options: { name: { type: "string" }, ttl: { type: "string" } } });
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  })();
  const auth = client(env);
  try {
    switch (command) {
      case "create": {
        if (values.name === undefined) throw new UsageError("create needs --name");
        const ttl = values.ttl === undefined ? 0 : Number(values.ttl);
        if (!Number.isInteger(ttl) || ttl < 0) throw new UsageError(`--ttl must be a whole number of seconds, got "${values.ttl}"`);
        const res = await auth.createWorkerRegistrationToken({ name: values.name, ttlSeconds: ttl });
        out(`id      ${res.token!.id}`);
        out(`name    ${res.token!.name}`);
        out(`expires ${time(res.token!.expireTime)}`);
        out(`secret  ${res.secret}`);
        out("The secret is shown only now: give it to the worker as its registration token.");
        return;
      }
      case "list": {
        let pageToken = "";
        out(["ID", "NAME", "CREATED", "EXPIRES", "REVOKED", "LAST USED"].join("\t"));
        do {
          const page = await auth.listWorkerRegistrationTokens({ pageToken });
          for (const t of page.tokens) {
            out([t.id, t.name, time(t.createTime), time(t.expireTime), time(t.revokeTime), time(t.lastUseTime)].join("\t"));
          }
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        return;
      }
      case "revoke": {
        if (positionals.length !== 1) throw new UsageError("revoke needs exactly one token id");
        await auth.revokeWorkerRegistrationToken({ id: positionals[0]! });
        out(`revoked ${positionals[0]}`);
        return;
      }
      default:
        throw new UsageError(command === undefined ? "a command is required" : `unknown command "${command}"`);
    }
  } catch (error) {
    // The server's answer, code and message, without a stack: it is the user's to act on.
    if (error instanceof ConnectError) throw new ServerRefused(`${Code[error.code]}: ${error.rawMessage}`, { cause: error });
    throw error;
  }
}
