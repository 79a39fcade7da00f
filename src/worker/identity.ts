// The worker's identity, kept in its state folder (identity.json, mode 0600: the credential is a
// bearer token), and registration: a daemon that restarts presents the credential it kept and
// gets its worker id back. The file is written whole or not at all (temp file, then rename), so
// a worker killed while writing keeps the identity it had.
import { readFile, rename, rm, writeFile, mkdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { bearerTransport } from "../client/client.js";
import type { AgentType } from "../../gen/foreman/v1/common_pb.js";
import { WorkerService, type RegisterWorkerResponse } from "../../gen/foreman/v1/worker_pb.js";
import { backoffMs, isTransient, sleep } from "./retry.js";

export interface StoredIdentity {
  /** The server it was registered with: another server's credential is not presented. */
  server: string;
  workerId: string;
  credential: string;
}

const FILE = "identity.json";

export async function loadIdentity(stateDir: string, server: string): Promise<StoredIdentity | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(stateDir, FILE), "utf8");
  } catch {
    return undefined;
  }
  try {
    const stored = JSON.parse(text) as StoredIdentity;
    return stored.server === server && typeof stored.credential === "string" ? stored : undefined;
  } catch {
    // A damaged file is no identity: the worker registers as a new one.
    return undefined;
  }
}

export async function saveIdentity(stateDir: string, identity: StoredIdentity): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, FILE);
  await writeFile(`${file}.tmp`, JSON.stringify(identity), { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

/** Forgets the identity (after UnregisterWorker, which ends it for good). */
export async function forgetIdentity(stateDir: string): Promise<void> {
  await rm(path.join(stateDir, FILE), { force: true });
}

/** A startup failure the user must act on: a bad token, or a server that never answered. */
export class RegistrationFailed extends Error {}

export interface RegisterOptions {
  server: string;
  registrationToken: string;
  stateDir: string;
  name: string;
  agentTypes: AgentType[];
  labels: Record<string, string>;
  maxConcurrentSessions: number;
  version: string;
  /** How long to keep trying a server that does not answer before giving up. */
  connectTimeoutMs: number;
  onRetry?: (error: ConnectError, attempt: number) => void;
  signal?: AbortSignal;
}

export interface Registration {
  response: RegisterWorkerResponse;
  /** The client every later call uses, carrying the new credential. */
  worker: Client<typeof WorkerService>;
  /** Whether the worker came back under the id it had. */
  again: boolean;
}

export async function register(options: RegisterOptions): Promise<Registration> {
  const previous = await loadIdentity(options.stateDir, options.server);
  let credential = previous?.credential;
  const worker = createClient(WorkerService, bearerTransport(options.server, () => credential));
  const deadline = Date.now() + options.connectTimeoutMs;
  let response: RegisterWorkerResponse;
  for (let attempt = 1; ; attempt++) {
    try {
      response = await worker.registerWorker(
        {
          registrationToken: options.registrationToken,
          name: options.name,
          hostname: os.hostname(),
          version: options.version,
          agentTypes: options.agentTypes,
          labels: options.labels,
          maxConcurrentSessions: options.maxConcurrentSessions,
        },
        { signal: options.signal },
      );
      break;
    } catch (error) {
      const e = ConnectError.from(error);
      if (e.code === Code.Unauthenticated || e.code === Code.PermissionDenied) {
        throw new RegistrationFailed(`the server at ${options.server} refused the registration token: ${e.rawMessage}`, { cause: e });
      }
      if (e.code === Code.InvalidArgument) throw new RegistrationFailed(`the server at ${options.server} refused the registration: ${e.rawMessage}`, { cause: e });
      if (!isTransient(e) || options.signal?.aborted) throw new RegistrationFailed(`could not register with ${options.server}: ${Code[e.code]}: ${e.rawMessage}`, { cause: e });
      if (Date.now() >= deadline) throw new RegistrationFailed(`cannot reach the server at ${options.server}: ${e.rawMessage}`, { cause: e });
      options.onRetry?.(e, attempt);
      await sleep(Math.min(backoffMs(attempt), Math.max(0, deadline - Date.now())), options.signal);
    }
  }
  credential = response.workerToken;
  await saveIdentity(options.stateDir, { server: options.server, workerId: response.workerId, credential });
  return { response, worker, again: previous?.workerId === response.workerId };
}
