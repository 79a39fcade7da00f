// Ends a task's agent run the way a worker does, for tests that need a task whose run finished
// (in review, a plan pending approval, failed by its run): a worker of the caller claims the
// run's session through GetTask and reports its end through ReportStatus, over HTTP.
//
// A claim takes the oldest queued session the worker may serve, which may be another task's.
// The runner keeps such claims (their tasks show as assigned) and ends them when asked for
// their task, registering another worker when one holds its most sessions. Calls are made one
// at a time, so tests that drive tasks concurrently share one runner safely.
import { randomUUID } from "node:crypto";
import type { Client } from "@connectrpc/connect";
import { SessionState } from "../../gen/foreman/v1/common_pb.js";
import { TaskService, type AgentSession, type Task } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService, type Lease } from "../../gen/foreman/v1/worker_pb.js";
import { registerWorker, type Caller } from "./fixtures.js";
import { clientWith } from "./oidc.js";
import type { TestServer } from "./server.js";

const ACTIVE = [SessionState.QUEUED, SessionState.ASSIGNED, SessionState.RUNNING];

/** The task's session that is queued or held, if any (at most one is). */
export function activeSession(task: Task | undefined): AgentSession | undefined {
  const value = task?.task.value;
  const runs = value === undefined ? [] : "agentTasks" in value ? value.agentTasks : value.planningAgentTask ? [value.planningAgentTask] : [];
  return runs.flatMap((run) => run.sessions).find((s) => ACTIVE.includes(s.state));
}

export interface RunEnd {
  state?: SessionState.SUCCEEDED | SessionState.FAILED | SessionState.CANCELLED;
  errorMessage?: string;
  exitCode?: number;
}

export class Runner {
  private readonly workers: Client<typeof WorkerService>[] = [];
  private readonly held = new Map<string, { lease: Lease; worker: Client<typeof WorkerService> }>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly who: Caller) {}

  /** Ends the task's queued or running run as `end` says (succeeded by default); returns the task after. */
  finish(taskId: string, end: RunEnd = {}): Promise<Task> {
    const next = this.queue.then(() => this.run(taskId, end));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async run(taskId: string, end: RunEnd): Promise<Task> {
    const tasks = this.who.client(TaskService);
    const session = activeSession((await tasks.getTask({ id: taskId })).task);
    if (session === undefined) throw new Error(`task ${taskId} has no run to finish`);
    while (!this.held.has(session.id)) {
      const worker = this.workers.at(-1) ?? (await this.addWorker());
      const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 0 });
      if (assignment?.lease !== undefined) {
        this.held.set(assignment.lease.sessionId, { lease: assignment.lease, worker });
        continue;
      }
      const now = activeSession((await tasks.getTask({ id: taskId })).task);
      if (now?.id !== session.id || now.state !== SessionState.QUEUED) throw new Error(`session ${session.id} of task ${taskId} is held by another worker`);
      if (this.workers.length > 20) throw new Error(`no worker of the runner can claim session ${session.id}`);
      await this.addWorker();
    }
    const { lease, worker } = this.held.get(session.id)!;
    this.held.delete(session.id);
    await worker.reportStatus({
      sessionId: lease.sessionId,
      leaseToken: lease.leaseToken,
      state: end.state ?? SessionState.SUCCEEDED,
      errorMessage: end.errorMessage ?? "",
      ...(end.exitCode === undefined ? {} : { exitCode: end.exitCode }),
    });
    return (await tasks.getTask({ id: taskId })).task!;
  }

  private async addWorker(): Promise<Client<typeof WorkerService>> {
    const { secret } = await this.who.registrationToken(`runner ${randomUUID().slice(0, 8)}`);
    const { workerToken } = await registerWorker(this.who.server, secret, { name: "test runner", maxConcurrentSessions: 64 });
    const worker = clientWith(this.who.server, WorkerService, workerToken);
    this.workers.push(worker);
    return worker;
  }
}

const runners = new WeakMap<TestServer, Map<string, Runner>>();

/** The caller's runner on its server (one per server and credential). */
export function runner(who: Caller): Runner {
  let byToken = runners.get(who.server);
  if (byToken === undefined) runners.set(who.server, (byToken = new Map()));
  let r = byToken.get(who.token ?? "");
  if (r === undefined) byToken.set(who.token ?? "", (r = new Runner(who)));
  return r;
}
