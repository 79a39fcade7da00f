// The RPC peer for dispatch-throughput: a bare connect-node server on h2c that answers
// WorkerService.GetTask with a fixed assignment and ReportStatus with a fixed answer, and does
// nothing else (no database, no auth, no log). Its jobs/s is what the three calls of a job alone
// allow on this machine, so the project's cost on top of them, and how far any dispatch that
// crosses RPC can go, can be read off beside graphile-worker's two SQL calls.
// With BARE_DISPATCH_LONG_POLL=1 it is the peer for dispatch-latency and dispatch-idle instead:
// GetTask waits, up to its wait_seconds (at most 30, the server's default), until a
// TaskService.CreateUnitTask arrives, which hands its new task to the poll that has waited
// longest (or keeps it for the next poll) and answers with its id: the two RPC legs from a task
// created to a waiting worker having it, with nothing behind them. RegisterWorker and Heartbeat
// answer with the server's default intervals and keep nothing: what thousands of idle workers'
// open polls and heartbeats cost the framework alone.
// Started by bench/dispatch.ts (startBenchChild) with BARE_DISPATCH_PORT; prints {"listening":true}.
import { randomUUID } from "node:crypto";
import http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AgentType, SessionState } from "../gen/foreman/v1/common_pb.js";
import { TaskService } from "../gen/foreman/v1/task_pb.js";
import { AssignmentSchema, WorkerService, type Assignment } from "../gen/foreman/v1/worker_pb.js";

const port = Number(process.env.BARE_DISPATCH_PORT);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write("bare-dispatch-server.ts: BARE_DISPATCH_PORT must be a port number\n");
  process.exit(2);
}

// About the size of the project's answer: ids, a lease token, a prompt and one repository.
const assignment = create(AssignmentSchema, {
  lease: { sessionId: "019a0000-0000-7000-8000-000000000001", attempt: 1, leaseToken: `fls_${"x".repeat(43)}`, expireTime: timestampFromDate(new Date()) },
  taskId: "019a0000-0000-7000-8000-000000000002",
  agentTaskId: "019a0000-0000-7000-8000-000000000003",
  prompt: "job 1",
  agentType: AgentType.CLAUDE_CODE,
  repositories: [{ repositoryId: "019a0000-0000-7000-8000-000000000004", name: "app", baseBranch: "main", branchName: "foreman/job-1-0001" }],
});

const longPoll = process.env.BARE_DISPATCH_LONG_POLL === "1";
/** The server's defaults (FOREMAN_HEARTBEAT_SECONDS, FOREMAN_MAX_POLL_SECONDS). */
const HEARTBEAT_SECONDS = 10;
const MAX_POLL_SECONDS = 30;
/** Long-poll mode: polls waiting for a task, oldest first, and tasks created with no poll waiting. */
const polls: ((a: Assignment) => void)[] = [];
const created: Assignment[] = [];
let tasks = 0;

const handler = connectNodeAdapter({
  routes: (router: ConnectRouter) => {
    router.service(WorkerService, {
      registerWorker: () => ({ workerId: randomUUID(), workerToken: `fwk_${randomUUID()}`, heartbeatIntervalSeconds: HEARTBEAT_SECONDS, maxPollSeconds: MAX_POLL_SECONDS }),
      heartbeat: () => ({ heartbeatIntervalSeconds: HEARTBEAT_SECONDS }),
      getTask: async (req, ctx) => {
        if (!longPoll) return { assignment };
        const ready = created.shift();
        if (ready !== undefined) return { assignment: ready };
        return await new Promise((resolve) => {
          const leave = () => {
            clearTimeout(timer);
            const at = polls.indexOf(take);
            if (at !== -1) polls.splice(at, 1);
            resolve({});
          };
          const take = (a: Assignment) => {
            clearTimeout(timer);
            resolve({ assignment: a });
          };
          const timer = setTimeout(leave, Math.min(req.waitSeconds, MAX_POLL_SECONDS) * 1000);
          polls.push(take);
          ctx.signal.addEventListener("abort", leave, { once: true });
        });
      },
      reportStatus: (req) => ({ state: req.state === SessionState.RUNNING ? SessionState.RUNNING : SessionState.SUCCEEDED }),
    });
    router.service(TaskService, {
      createUnitTask: (req) => {
        const id = `019a0000-0000-7000-8000-${String(++tasks).padStart(12, "0")}`;
        const a = create(AssignmentSchema, { ...assignment, taskId: id, prompt: req.prompt });
        const poll = polls.shift();
        if (poll === undefined) created.push(a);
        else poll(a);
        return { unitTask: { id, prompt: req.prompt } };
      },
    });
  },
});
const server = http2.createServer(handler);
server.listen(port, "127.0.0.1", () => process.stdout.write(`${JSON.stringify({ listening: true })}\n`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
