// `foreman worker-token create|list|revoke`: worker registration tokens, through the public API
// like any other client (see client.ts for the server and the credential it uses). main.ts
// reads the arguments.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { AuthService } from "../../gen/foreman/v1/auth_pb.js";
import { apiTransport, explain } from "../client/client.js";
import { UsageError } from "./errors.js";

type Out = (line: string) => void;

const time = (t: Timestamp | undefined) => (t === undefined ? "-" : timestampDate(t).toISOString());

const auth = (env: NodeJS.ProcessEnv) => createClient(AuthService, apiTransport(env));

export async function createToken(values: { name?: string; ttl?: string }, env: NodeJS.ProcessEnv, out: Out): Promise<void> {
  if (values.name === undefined) throw new UsageError("--name is required");
  const ttl = values.ttl === undefined ? 0 : /^\d+$/.test(values.ttl) ? Number(values.ttl) : NaN;
  if (!Number.isSafeInteger(ttl)) throw new UsageError(`--ttl must be a whole number of seconds, got '${values.ttl}'`);
  try {
    const res = await auth(env).createWorkerRegistrationToken({ name: values.name, ttlSeconds: ttl });
    out(`id      ${res.token!.id}`);
    out(`name    ${res.token!.name}`);
    out(`expires ${time(res.token!.expireTime)}`);
    out(`secret  ${res.secret}`);
    out("The secret is shown only now: give it to the worker as its registration token.");
  } catch (error) {
    // The server's answer, code and message, without a stack: it is the user's to act on.
    throw explain(error);
  }
}

export async function listTokens(env: NodeJS.ProcessEnv, out: Out): Promise<void> {
  const client = auth(env);
  let pageToken = "";
  out(["ID", "NAME", "CREATED", "EXPIRES", "REVOKED", "LAST USED"].join("\t"));
  try {
    do {
      const page = await client.listWorkerRegistrationTokens({ pageToken });
      for (const t of page.tokens) {
        out([t.id, t.name, time(t.createTime), time(t.expireTime), time(t.revokeTime), time(t.lastUseTime)].join("\t"));
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  } catch (error) {
    throw explain(error);
  }
}

export async function revokeToken(id: string, env: NodeJS.ProcessEnv, out: Out): Promise<void> {
  try {
    await auth(env).revokeWorkerRegistrationToken({ id });
  } catch (error) {
    throw explain(error);
  }
  out(`revoked ${id}`);
}
