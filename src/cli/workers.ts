// `foreman workers list`: the workers you may see (yours, and the server's pool), with what
// each runs and what it holds now. main.ts reads the arguments.
import { createClient } from "@connectrpc/connect";
import { AgentType } from "../../gen/foreman/v1/common_pb.js";
import { AuthService } from "../../gen/foreman/v1/auth_pb.js";
import { WorkerSchema, WorkerStatus, type Worker } from "../../gen/foreman/v1/worker_pb.js";
import { apiTransport } from "../client/client.js";
import { all, api, call } from "./calls.js";
import { colourFor, json, jsonLine, paint, table, time, type Out } from "./render.js";

interface Args {
  values: { server?: string; [k: string]: string | undefined };
  flags: { json?: boolean; all?: boolean };
}

const agentName = (t: AgentType) => AgentType[t]?.toLowerCase().replace(/_/g, "-") ?? String(t);

export async function workersList(args: Args, out: Out): Promise<void> {
  const a = api(args.values);
  const auth = createClient(AuthService, apiTransport(a.env));
  const workers: Worker[] = await all(async (pageToken) => {
    const page = await call(a, () => auth.listWorkers({ pageSize: 100, pageToken, includeUnregistered: args.flags.all === true }));
    return { items: page.workers, next: page.nextPageToken };
  });
  if (args.flags.json) return out(jsonLine({ workers: workers.map((w) => json(WorkerSchema, w)) }));
  if (workers.length === 0) return out("No workers. foreman serve starts local ones in single-user mode; foreman worker --help says how to run one.");
  const rows = workers.map((w) => [
    w.id,
    w.name,
    WorkerStatus[w.status]?.toLowerCase() ?? String(w.status),
    w.agentTypes.length === 0 ? "any" : w.agentTypes.map(agentName).join(","),
    `${w.heldSessionCount}/${w.maxConcurrentSessions}`,
    w.servesEveryUser ? "everyone" : "you",
    time(w.lastHeartbeatTime),
    w.hostname,
  ]);
  for (const line of table(["ID", "NAME", "STATUS", "AGENTS", "SESSIONS", "SERVES", "LAST SEEN", "HOST"], rows, paint(colourFor(process.stdout)))) out(line);
}
