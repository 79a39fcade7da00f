// A scripted worker daemon, run as its own process, speaking the public worker protocol with the
// generated clients over HTTP and nothing else: it registers (presenting its saved credential,
// when it has one, to get its id back), heartbeats at the interval the server gave it listing
// the leases it holds, long-polls GetTask, reports RUNNING and then, after a delay or when told
// on stdin, SUCCEEDED. It writes one JSON line per event to stdout, for the test to count.
// Usage: node --import tsx test/helpers/worker-process.ts '<WorkerSettings as JSON>'
// stdin lines: "finish" ends every run it holds now (SUCCEEDED); "stop" ends the process.
// test/helpers/worker-processes.ts starts it and reads its lines.
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { SessionState } from "../../gen/foreman/v1/common_pb.js";
import { ReportStatusRequestSchema, WorkerService, type Assignment, type ReportStatusRequest } from "../../gen/foreman/v1/worker_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";

export interface WorkerSettings {
  url: string;
  registrationToken: string;
  /** Where its credential is kept: presented to RegisterWorker when the file exists, and written after. */
  credentialFile: string;
  name?: string;
  maxConcurrentSessions?: number;
  /** GetTask's wait_seconds. */
  waitSeconds?: number;
  /** How long a run takes between RUNNING and SUCCEEDED; "hold" runs until stdin says "finish". */
  runMs?: number | "hold";
  /** A folder to save, for each claim, the SUCCEEDED ReportStatus request it will send (<session id>.bin, binary protobuf). */
  saveReportsTo?: string;
  /**
   * Replays stale reports once, after its second completed run: the first run's RUNNING again
   * (its session ended), and the first run's lease token on the session it holds next. Each is
   * expected refused; the outcome is a "replayed" event.
   */
  replayStale?: boolean;
}

/** One line on stdout. */
export type WorkerEvent =
  | { event: "registered"; workerId: string; heartbeatIntervalSeconds: number; maxPollSeconds: number; presentedCredential: boolean }
  | { event: "claimed"; sessionId: string; taskId: string; attempt: number; pollId: string; expireTime: string }
  | { event: "saved"; sessionId: string; file: string }
  | { event: "reported"; sessionId: string; taskId: string; state: "RUNNING" | "SUCCEEDED" }
  | { event: "refused"; sessionId: string; state: string; code: string; reason: string; message: string }
  | { event: "replayed"; what: "ended-session" | "other-lease"; sessionId: string; code: string; reason: string; message: string }
  | { event: "heartbeat"; renewed: { sessionId: string; expireTime: string }[]; lost: string[] }
  | { event: "heartbeat-failed"; code: string; message: string }
  | { event: "retry"; call: string; code: string; message: string }
  | { event: "stopped" };

const settings = JSON.parse(process.argv[2] ?? "{}") as WorkerSettings;
if (settings.url === undefined || settings.registrationToken === undefined || settings.credentialFile === undefined) {
  throw new Error("usage: worker-process.ts '{\"url\": …, \"registrationToken\": …, \"credentialFile\": …}'");
}

const emit = (e: WorkerEvent) => process.stdout.write(`${JSON.stringify(e)}\n`);
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });

let credential = existsSync(settings.credentialFile) ? readFileSync(settings.credentialFile, "utf8").trim() : undefined;
const bearer: Interceptor = (next) => (req) => {
  if (credential !== undefined) req.header.set("authorization", `Bearer ${credential}`);
  return next(req);
};
const worker = createClient(WorkerService, createConnectTransport({ baseUrl: settings.url, httpVersion: "1.1", interceptors: [bearer] }));

const stopping = new AbortController();
const codeName = (e: ConnectError) => Code[e.code];
const reasonOf = (e: ConnectError) => e.findDetails(ErrorInfoSchema)[0]?.reason ?? "";
/** The server is away (restarting) or the connection broke: try again. An answer of the server's (internal included) is no such thing. */
const transient = (e: unknown) => e instanceof ConnectError && [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded].includes(e.code);

/** A call retried until it is answered, while the server is away. */
async function answered<T>(call: string, run: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await run();
    } catch (error) {
      if (!transient(error) || stopping.signal.aborted) throw error;
      const e = error as ConnectError;
      emit({ event: "retry", call, code: codeName(e), message: e.rawMessage });
      await sleep(200, stopping.signal);
    }
  }
}

const registered = await answered("RegisterWorker", () =>
  worker.registerWorker({
    registrationToken: settings.registrationToken,
    name: settings.name ?? "scripted worker",
    hostname: "test",
    version: "0.0.0-test",
    maxConcurrentSessions: settings.maxConcurrentSessions ?? 1,
  }),
);
const presentedCredential = credential !== undefined;
credential = registered.workerToken;
// Written whole or not at all: a worker killed meanwhile keeps its previous credential.
writeFileSync(`${settings.credentialFile}.tmp`, credential, { mode: 0o600 });
renameSync(`${settings.credentialFile}.tmp`, settings.credentialFile);
emit({
  event: "registered",
  workerId: registered.workerId,
  heartbeatIntervalSeconds: registered.heartbeatIntervalSeconds,
  maxPollSeconds: registered.maxPollSeconds,
  presentedCredential,
});

interface Run {
  assignment: Assignment;
  finish: () => void;
  /** Set when a heartbeat names the session lost. */
  lost: AbortController;
}
const held = new Map<string, Run>();
let completed = 0;
/** The first run it completed, while its stale reports are still to be replayed. */
let firstRun: Assignment | undefined;
let replayed = false;

async function heartbeats(): Promise<void> {
  let interval = registered.heartbeatIntervalSeconds * 1000;
  while (!stopping.signal.aborted) {
    let next = interval;
    try {
      const runs = [...held.values()];
      const res = await worker.heartbeat({ leases: runs.map((r) => r.assignment.lease!) }, { signal: stopping.signal });
      interval = res.heartbeatIntervalSeconds * 1000;
      next = interval;
      emit({
        event: "heartbeat",
        renewed: res.leases.map((l) => ({ sessionId: l.sessionId, expireTime: timestampDate(l.expireTime!).toISOString() })),
        lost: res.lostSessionIds,
      });
      for (const id of res.lostSessionIds) held.get(id)?.lost.abort();
    } catch (error) {
      if (stopping.signal.aborted) return;
      const e = ConnectError.from(error);
      emit({ event: "heartbeat-failed", code: codeName(e), message: e.rawMessage });
      // The server is away: look again soon, well within the lease.
      next = Math.min(1000, interval);
    }
    await sleep(next, stopping.signal);
  }
}

function succeededRequest(a: Assignment): ReportStatusRequest {
  return create(ReportStatusRequestSchema, { sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken, state: SessionState.SUCCEEDED, exitCode: 0 });
}

/** Reports, retried while the server is away; a refusal is an event, not an error. */
async function report(a: Assignment, state: SessionState.RUNNING | SessionState.SUCCEEDED): Promise<boolean> {
  const request = state === SessionState.SUCCEEDED ? succeededRequest(a) : create(ReportStatusRequestSchema, { ...succeededRequest(a), state, exitCode: undefined });
  const name = state === SessionState.SUCCEEDED ? "SUCCEEDED" : "RUNNING";
  try {
    await answered(`ReportStatus ${name}`, () => worker.reportStatus(request));
    emit({ event: "reported", sessionId: a.lease!.sessionId, taskId: a.taskId, state: name });
    return true;
  } catch (error) {
    const e = ConnectError.from(error);
    emit({ event: "refused", sessionId: a.lease!.sessionId, state: name, code: codeName(e), reason: reasonOf(e), message: e.rawMessage });
    return false;
  }
}

async function replay(what: "ended-session" | "other-lease", sessionId: string, leaseToken: string): Promise<void> {
  try {
    await worker.reportStatus({ sessionId, leaseToken, state: SessionState.RUNNING });
    emit({ event: "replayed", what, sessionId, code: "OK", reason: "", message: "" });
  } catch (error) {
    const e = ConnectError.from(error);
    emit({ event: "replayed", what, sessionId, code: codeName(e), reason: reasonOf(e), message: e.rawMessage });
  }
}

async function run(a: Assignment): Promise<void> {
  const sessionId = a.lease!.sessionId;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const r: Run = { assignment: a, finish, lost: new AbortController() };
  held.set(sessionId, r);
  try {
    if (settings.saveReportsTo !== undefined) {
      const file = path.join(settings.saveReportsTo, `${sessionId}.bin`);
      writeFileSync(`${file}.tmp`, toBinary(ReportStatusRequestSchema, succeededRequest(a)));
      renameSync(`${file}.tmp`, file);
      emit({ event: "saved", sessionId, file });
    }
    if (settings.replayStale === true && !replayed && completed >= 2 && firstRun !== undefined) {
      const first = firstRun;
      replayed = true;
      await replay("ended-session", first.lease!.sessionId, first.lease!.leaseToken);
      await replay("other-lease", sessionId, first.lease!.leaseToken);
    }
    if (!(await report(a, SessionState.RUNNING))) return;
    const runMs = settings.runMs ?? 0;
    if (runMs === "hold") await Promise.race([finished, aborted(r.lost.signal), aborted(stopping.signal)]);
    else if (runMs > 0) await sleep(runMs, AbortSignal.any([r.lost.signal, stopping.signal]));
    if (r.lost.signal.aborted || stopping.signal.aborted) return;
    if (await report(a, SessionState.SUCCEEDED)) {
      completed++;
      firstRun ??= a;
    }
  } finally {
    held.delete(sessionId);
  }
}

const aborted = (signal: AbortSignal) => new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true })));

/** One slot: polls, runs what it claims, polls again. */
async function slot(): Promise<void> {
  const wait = settings.waitSeconds ?? registered.maxPollSeconds;
  while (!stopping.signal.aborted) {
    // A poll retried after a lost answer keeps its id, and so gets the claim it made back.
    const pollId = randomUUID();
    let assignment: Assignment | undefined;
    try {
      ({ assignment } = await answered("GetTask", () => worker.getTask({ pollId, waitSeconds: wait }, { signal: stopping.signal })));
    } catch (error) {
      if (stopping.signal.aborted) return;
      throw error;
    }
    if (assignment?.lease === undefined) continue;
    const { sessionId, attempt, expireTime } = assignment.lease;
    emit({ event: "claimed", sessionId, taskId: assignment.taskId, attempt, pollId, expireTime: timestampDate(expireTime!).toISOString() });
    await run(assignment);
  }
}

const stop = () => stopping.abort();
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim() === "finish") for (const r of held.values()) r.finish();
  if (line.trim() === "stop") stop();
});
// The parent gone (its end of stdin closed) is a stop too: no orphan outlives its test.
lines.once("close", stop);

try {
  await Promise.all([heartbeats(), ...Array.from({ length: settings.maxConcurrentSessions ?? 1 }, () => slot())]);
} finally {
  lines.close();
  emit({ event: "stopped" });
}
// Done: nothing is left to wait for (its HTTP agent's idle sockets would keep it a while).
process.exit(0);
