// `foreman worker-token create|list|revoke`: worker registration tokens, through the public API
// like any other client (see client.ts for the server and the credential it uses).
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { parseArgs } from "node:util";
import { AuthService } from "../../gen/foreman/v1/auth_pb.js";
import { apiTransport, explain } from "./client.js";
import { UsageError } from "./errors.js";

export const WORKER_TOKEN_USAGE = `Usage: foreman worker-token <command>

  create --name NAME [--ttl SECONDS]   Create a token; prints its secret once (0 or no --ttl: no expiry)
  list                                 List your tokens
  revoke ID                            Stop a token registering new workers

Environment: FOREMAN_URL (default http://127.0.0.1:54871). In multi-user mode, run
foreman login first, or set FOREMAN_ACCESS_TOKEN.
`;

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
  const auth = createClient(AuthService, apiTransport(env));
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
    throw explain(error);
  }
}
