// The worst single requests a client may send, each against a fresh server: the largest body the
// message size limit allows, filled with list elements that each break a rule, and a JSON body
// whose error would echo a lone UTF-16 surrogate. For each: how long until the answer, how big
// the answer is, how much the server's memory grew (peak RSS), how long its event loop stalled
// (the slowest /healthz answer while the request ran), and whether the server survived.
import http from "node:http";
import http2 from "node:http2";
import { readFileSync } from "node:fs";
import { create, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { CreateRepositoryGroupRequestSchema } from "../gen/foreman/v1/repository_pb.js";
import { ListTasksRequestSchema } from "../gen/foreman/v1/task_pb.js";
import { RegisterWorkerRequestSchema } from "../gen/foreman/v1/worker_pb.js";
import { startBenchServer } from "./server.js";

const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** A request still unanswered after this long counts as hung. */
const REQUEST_TIMEOUT_MS = 120_000;

export interface HostileResult {
  name: string;
  requestBytes: number;
  /** undefined when no answer came before the timeout or the connection broke. */
  status: string | undefined;
  responseBytes: number;
  durationMs: number;
  rssGrowthMb: number;
  maxHealthzMs: number;
  survived: boolean;
}

interface HostileCase {
  name: string;
  path: string;
  contentType: string;
  /** The request body, for a server whose one workspace has this id. */
  body(workspaceId: string): Buffer;
}

function envelope(message: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** As many copies of `element` as fit in `budget` bytes of encoded message. */
function fill<T>(element: T, bytesPerElement: number, budget: number): T[] {
  return new Array<T>(Math.floor(budget / bytesPerElement)).fill(element);
}

function binary<D extends DescMessage>(schema: D, init: MessageInitShape<D>): Uint8Array {
  return toBinary(schema, create(schema, init));
}

const BUDGET = MAX_MESSAGE_BYTES - 64;

/** Map entries "-<n>" → "" (a key no label may have): as many as fit. */
function badLabels(): Uint8Array {
  const labels: Record<string, string> = {};
  for (let n = Math.floor(BUDGET / 16); ; n = Math.floor(n * 0.97)) {
    for (const key of Object.keys(labels)) delete labels[key];
    for (let i = 0; i < n; i++) labels[`-${i}`] = "";
    const encoded = binary(RegisterWorkerRequestSchema, { name: "w", labels });
    if (encoded.length <= BUDGET) return encoded;
  }
}

// Each repeated string "x" costs 3 bytes (tag, length, one byte); a packed enum such as 99,
// unknown to the server, one byte.
const group = (workspaceId: string) => binary(CreateRepositoryGroupRequestSchema, { workspaceId, repositoryIds: fill("x", 3, BUDGET) });

export const HOSTILE_CASES: HostileCase[] = [
  { name: "CreateRepositoryGroup, bad repository_ids, Connect", path: "/foreman.v1.RepositoryService/CreateRepositoryGroup", contentType: "application/proto", body: (ws) => Buffer.from(group(ws)) },
  { name: "CreateRepositoryGroup, bad repository_ids, gRPC", path: "/foreman.v1.RepositoryService/CreateRepositoryGroup", contentType: "application/grpc", body: (ws) => envelope(group(ws)) },
  {
    name: "ListTasks, unknown statuses, gRPC",
    path: "/foreman.v1.TaskService/ListTasks",
    contentType: "application/grpc",
    body: (workspaceId) => envelope(binary(ListTasksRequestSchema, { workspaceId, statuses: fill(99, 1, BUDGET) })),
  },
  {
    name: "RegisterWorker, unknown agent_types, gRPC, no token",
    path: "/foreman.v1.WorkerService/RegisterWorker",
    contentType: "application/grpc",
    body: () => envelope(binary(RegisterWorkerRequestSchema, { name: "w", agentTypes: fill(99, 1, BUDGET) })),
  },
  { name: "RegisterWorker, bad labels, Connect, no token", path: "/foreman.v1.WorkerService/RegisterWorker", contentType: "application/proto", body: () => Buffer.from(badLabels()) },
  {
    name: "ListWorkspaces, lone surrogate, gRPC JSON",
    path: "/foreman.v1.WorkspaceService/ListWorkspaces",
    contentType: "application/grpc+json",
    body: () => envelope(Buffer.from('{"pageSize":"\\ud800"}')),
  },
];

/** Creates the workspace the requests name (an unknown one would stop validation early). */
async function createWorkspace(url: string): Promise<string> {
  const res = await fetch(`${url}/foreman.v1.WorkspaceService/CreateWorkspace`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "hostile" }),
  });
  const answer = (await res.json()) as { workspace?: { id: string } };
  if (answer.workspace === undefined) throw new Error(`CreateWorkspace failed: ${JSON.stringify(answer)}`);
  return answer.workspace.id;
}

function peakRssKb(pid: number): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match === null ? 0 : Number(match[1]);
}

/** Sends one request over h2c; resolves with the status and the bytes that came back. */
function send(url: string, c: HostileCase, body: Buffer): Promise<{ status: string | undefined; bytes: number }> {
  return new Promise((resolve) => {
    const session = http2.connect(url);
    let bytes = 0;
    let status: string | undefined;
    const finish = () => {
      clearTimeout(timer);
      session.destroy();
      resolve({ status, bytes });
    };
    const timer = setTimeout(finish, REQUEST_TIMEOUT_MS);
    session.on("error", finish);
    const headers: http2.OutgoingHttpHeaders = { ":method": "POST", ":path": c.path, "content-type": c.contentType };
    if (c.contentType.startsWith("application/grpc")) headers.te = "trailers";
    const stream = session.request(headers);
    const count = (h: http2.IncomingHttpHeaders) => {
      for (const [k, v] of Object.entries(h)) bytes += k.length + String(v).length;
      if (h["grpc-status"] !== undefined) status = `grpc-status ${String(h["grpc-status"])}`;
    };
    stream.on("response", (h) => {
      count(h);
      if (!c.contentType.startsWith("application/grpc")) status = `HTTP ${String(h[":status"])}`;
    });
    stream.on("trailers", count);
    stream.on("data", (chunk: Buffer) => (bytes += chunk.length));
    stream.on("end", finish);
    stream.on("error", finish);
    stream.end(body);
  });
}

function healthzMs(url: string): Promise<number> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = http.get(`${url}/healthz`, { agent: false, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      res.resume();
      res.on("end", () => resolve(performance.now() - started));
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(performance.now() - started));
  });
}

export async function runHostile(): Promise<HostileResult[]> {
  const results: HostileResult[] = [];
  for (const c of HOSTILE_CASES) {
    process.stderr.write(`hostile: ${c.name}\n`);
    const server = await startBenchServer({ FOREMAN_LOG_LEVEL: "fatal" });
    try {
      const body = c.body(await createWorkspace(server.url));
      await healthzMs(server.url);
      const rssBefore = peakRssKb(server.pid);
      let running = true;
      let maxHealthzMs = 0;
      const pinger = (async () => {
        while (running) {
          maxHealthzMs = Math.max(maxHealthzMs, await healthzMs(server.url));
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      const started = performance.now();
      const answer = await send(server.url, c, body);
      const durationMs = performance.now() - started;
      running = false;
      await pinger;
      let rssAfter = rssBefore;
      let survived = true;
      try {
        rssAfter = peakRssKb(server.pid);
        survived = (await healthzMs(server.url)) < REQUEST_TIMEOUT_MS && process.kill(server.pid, 0);
      } catch {
        survived = false;
      }
      results.push({
        name: c.name,
        requestBytes: body.length,
        status: answer.status,
        responseBytes: answer.bytes,
        durationMs,
        rssGrowthMb: (rssAfter - rssBefore) / 1024,
        maxHealthzMs,
        survived,
      });
    } finally {
      await server.stop();
    }
  }
  return results;
}

export function formatHostile(results: HostileResult[]): string {
  const lines = [
    "hostile requests: each the largest the 4 MiB limit allows, against a fresh server (SQLite, single-user)",
    "| request | bytes in | answer | bytes out | time | peak RSS growth | slowest /healthz meanwhile | server survived |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const r of results) {
    lines.push(
      `| ${r.name} | ${r.requestBytes} | ${r.status ?? "none (hung or cut)"} | ${r.responseBytes} | ${r.durationMs.toFixed(0)} ms | ` +
        `${r.rssGrowthMb.toFixed(1)} MB | ${r.maxHealthzMs.toFixed(0)} ms | ${r.survived ? "yes" : "NO"} |`,
    );
  }
  return lines.join("\n");
}
