// Simulated idle workers for bench/dispatch.ts's dispatch-idle, in a process of their own so that
// the server's CPU is the server's. Registers BENCH_WORKERS_COUNT workers with the configured
// registration token (64 registrations in flight), then each worker heartbeats at the interval
// RegisterWorker gave and long-polls GetTask for the longest wait it gave, again and again, its
// calls over BENCH_WORKERS_CONNECTIONS shared HTTP/2 connections. Failed calls are counted (the
// first one's message goes to stderr) and tried again after a pause. Each worker starts its
// heartbeats and its polls at a random point of their period, as workers started at different
// times would, so that the load is the steady one from the start. Prints a JSON stats line on
// stdout every 200 ms; exits on SIGTERM.
import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import { setTimeout as delay } from "node:timers/promises";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import { WorkerService, WorkerStatus } from "../gen/foreman/v1/worker_pb.js";

const url = process.env.BENCH_WORKERS_URL!;
const count = Number(process.env.BENCH_WORKERS_COUNT);
const connections = Number(process.env.BENCH_WORKERS_CONNECTIONS);
const registrationToken = process.env.BENCH_WORKERS_TOKEN!;
const REGISTRATIONS_IN_FLIGHT = 64;
const REGISTRATION_ATTEMPTS = 5;

/** What the parent reads: progress, calls started and answered, failures, and the intervals the server gave. */
const stats = { registered: 0, ready: false, heartbeats: 0, polls: 0, answered: 0, errors: 0, heartbeatSeconds: 0, maxPollSeconds: 0 };
let firstError: string | undefined;
const controller = new AbortController();
// Every worker's calls and waits listen to it: up to three each.
setMaxListeners(count * 3 + 10, controller.signal);
const sessions = Array.from({ length: connections }, () => new Http2SessionManager(url));

function failed(error: unknown): void {
  if (controller.signal.aborted) return;
  stats.errors++;
  if (firstError === undefined) {
    firstError = error instanceof Error ? error.message : String(error);
    process.stderr.write(`dispatch-workers: first error: ${firstError}\n`);
  }
}

function clientFor(i: number, workerToken: string | undefined): Client<typeof WorkerService> {
  const bearer: Interceptor = (next) => (req) => {
    if (workerToken !== undefined) req.header.set("authorization", `Bearer ${workerToken}`);
    return next(req);
  };
  return createClient(WorkerService, createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager: sessions[i % connections]!, interceptors: [bearer] }));
}

/** Waits, or less once the process is stopping (its abort listener removed either way). */
const sleep = (ms: number) => delay(ms, undefined, { signal: controller.signal }).catch(() => undefined);

function live(i: number, worker: Client<typeof WorkerService>, heartbeatSeconds: number, maxPollSeconds: number): void {
  void (async () => {
    await sleep(Math.random() * heartbeatSeconds * 1000);
    while (!controller.signal.aborted) {
      const next = performance.now() + heartbeatSeconds * 1000;
      try {
        // Counted as it starts, as polls are: the load offered, whether or not the server keeps up.
        stats.heartbeats++;
        await worker.heartbeat({ status: WorkerStatus.IDLE }, { signal: controller.signal });
        stats.answered++;
      } catch (error) {
        failed(error);
      }
      await sleep(Math.max(0, next - performance.now()));
    }
  })();
  void (async () => {
    await sleep(Math.random() * maxPollSeconds * 1000);
    while (!controller.signal.aborted) {
      // Counted as it starts: a window shorter than the longest wait sees polls start, not end.
      stats.polls++;
      try {
        const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: maxPollSeconds }, { signal: controller.signal });
        stats.answered++;
        if (assignment !== undefined) failed(new Error(`worker ${i} was assigned a task: nothing should be queued`));
      } catch (error) {
        failed(error);
        // A refused poll is not retried at once: that would be a busy loop against the server.
        await sleep(1000);
      }
    }
  })();
}

const printer = setInterval(() => process.stdout.write(`${JSON.stringify(stats)}\n`), 200);
process.on("SIGTERM", () => {
  controller.abort();
  clearInterval(printer);
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  for (const s of sessions) s.abort();
  // Outstanding calls end with the aborted connections; nothing else keeps the process.
  setTimeout(() => process.exit(0), 100).unref();
});

const anonymous = clientFor(0, undefined);
let next = 0;
await Promise.all(
  Array.from({ length: REGISTRATIONS_IN_FLIGHT }, async () => {
    while (next < count && !controller.signal.aborted) {
      const i = next++;
      // A refused registration is tried again a second later, as a worker daemon would, a few times.
      for (let attempt = 1; attempt <= REGISTRATION_ATTEMPTS && !controller.signal.aborted; attempt++) {
        try {
          const res = await anonymous.registerWorker({ registrationToken, name: `idle worker ${i}`, hostname: "bench", maxConcurrentSessions: 1 });
          stats.registered++;
          stats.heartbeatSeconds = res.heartbeatIntervalSeconds;
          stats.maxPollSeconds = res.maxPollSeconds;
          live(i, clientFor(i, res.workerToken), res.heartbeatIntervalSeconds, res.maxPollSeconds);
          break;
        } catch (error) {
          failed(error);
          await sleep(1000);
        }
      }
    }
  }),
);
stats.ready = true;
