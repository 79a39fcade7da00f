// The worker daemon: registers (keeping its identity in the state folder), then runs its loops
// side by side until it stops: the heartbeat (heartbeat.ts), the command stream (commands.ts)
// and one poll slot per session it may hold (poll.ts), each claimed session run by session.ts.
// Stopping: drain() claims nothing more and lets running sessions finish; stopNow() ends the
// agents and unregisters, so the server requeues their runs at once.
import path from "node:path";
import type { Client } from "@connectrpc/connect";
import type { Logger } from "pino";
import { AgentType } from "../../gen/foreman/v1/common_pb.js";
import { WorkerStatus, type Assignment, type Lease, type WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import type { AgentAdapter } from "./agents/agent.js";
import { AskServer } from "./ask-server.js";
import { Commands } from "./commands.js";
import { heartbeats } from "./heartbeat.js";
import { forgetIdentity, register } from "./identity.js";
import { pollSlot } from "./poll.js";
import { DEFAULT_GRACE_MS } from "./agent-process.js";
import { endOrphanAgents } from "./orphans.js";
import { openOutbox, recoverOutboxes, type OutboxError, type RecoveredOutbox } from "./outbox.js";
import { SessionState } from "../../gen/foreman/v1/common_pb.js";
import { isLeaseLost } from "./retry.js";
import { AGENT_NAMES, Session } from "./session.js";
import { pruneWorkspaces, taskFolder } from "./workspace.js";

export interface WorkerDaemonOptions {
  server: string;
  registrationToken: string;
  /** Its identity, the log outbox and the task workspaces live here. */
  stateDir: string;
  name: string;
  /** How many sessions it runs at once. */
  concurrency: number;
  agents: readonly AgentAdapter[];
  labels: Record<string, string>;
  version: string;
  /** How long to keep trying to reach the server at startup. */
  connectTimeoutMs: number;
  log: Logger;
  /** The environment every agent starts from. */
  baseEnv: Readonly<Record<string, string>>;
  /** How many task workspaces to keep for later runs of the same task. */
  keepWorkspaces?: number;
}

const AGENT_TYPES = new Map(Object.entries(AGENT_NAMES).map(([type, name]) => [name, Number(type) as AgentType]));

/** The agent type an adapter runs, by its name. */
export function agentTypeOf(adapter: AgentAdapter): AgentType {
  const type = AGENT_TYPES.get(adapter.name);
  if (type === undefined || type === AgentType.UNSPECIFIED) throw new Error(`unknown agent ${adapter.name}`);
  return type;
}

export class WorkerDaemon {
  private worker!: Client<typeof WorkerService>;
  private workerId = "";
  private readonly sessions = new Map<string, Session>();
  private readonly polling = new AbortController();
  /** Aborted when the daemon stops for good: every loop and retry ends. */
  private readonly stopping = new AbortController();
  private draining = false;
  private abandoned = false;
  private refusedWith: string | undefined;
  private readonly askServer = new AskServer();
  private readonly agents: Map<AgentType, AgentAdapter>;
  private commands!: Commands;

  constructor(private readonly options: WorkerDaemonOptions) {
    this.agents = new Map(options.agents.map((a) => [agentTypeOf(a), a]));
  }

  get id(): string {
    return this.workerId;
  }

  /** Registers; throws RegistrationFailed (a bad token, a server that never answered). */
  async start(): Promise<{ workerId: string; again: boolean; heartbeatIntervalSeconds: number; maxPollSeconds: number }> {
    const o = this.options;
    // Agents a killed predecessor left running would go on working on runs the server gives to others.
    const orphans = await endOrphanAgents(this.agentGroupsDir, o.log, DEFAULT_GRACE_MS);
    if (orphans > 0) o.log.warn({ agents: orphans }, "ended the agents the previous worker process left running");
    const registration = await register({
      server: o.server,
      registrationToken: o.registrationToken,
      stateDir: o.stateDir,
      name: o.name,
      agentTypes: [...this.agents.keys()],
      labels: o.labels,
      maxConcurrentSessions: o.concurrency,
      version: o.version,
      connectTimeoutMs: o.connectTimeoutMs,
      signal: this.stopping.signal,
      onRetry: (e, attempt) => o.log.warn({ server: o.server, error: e.rawMessage, attempt }, "cannot reach the server yet; trying again"),
    });
    this.worker = registration.worker;
    this.workerId = registration.response.workerId;
    this.commands = new Commands(this.worker, { stopSession: (id, reason) => this.sessions.get(id)?.stop(reason), answer: (id, requestId, response) => this.sessions.get(id)?.answer(requestId, response) }, o.log);
    // Listed before anything is claimed, so no session of this process is taken for a leftover.
    void this.recover(await recoverOutboxes(this.outboxRoot).catch(() => []));
    const r = registration.response;
    return { workerId: r.workerId, again: registration.again, heartbeatIntervalSeconds: r.heartbeatIntervalSeconds, maxPollSeconds: r.maxPollSeconds };
  }

  /** Runs until drained or stopped; resolves with the process's exit code. */
  async run(intervals: { heartbeatIntervalSeconds: number; maxPollSeconds: number }): Promise<number> {
    const o = this.options;
    const loops = Promise.all([
      heartbeats(
        this.worker,
        {
          leases: () => [...this.sessions.values()].map((s) => s.lease as Lease),
          draining: () => this.draining,
          lost: (ids) => ids.forEach((id) => this.sessions.get(id)?.leaseLost()),
          commands: (commands) => this.commands.handle(commands),
          refused: (message) => this.refused(message),
        },
        intervals.heartbeatIntervalSeconds,
        o.log,
        this.stopping.signal,
      ),
      this.commands.stream(this.stopping.signal),
    ]);
    const slots = Array.from({ length: o.concurrency }, () =>
      pollSlot(
        this.worker,
        { commands: (commands) => this.commands.handle(commands), run: (a) => this.runSession(a), refused: (message) => this.refused(message) },
        intervals.maxPollSeconds,
        o.log,
        this.polling.signal,
      ),
    );
    await Promise.all(slots);
    // Drained or stopped: every slot has finished its session.
    if (this.abandoned && this.refusedWith === undefined) await this.unregister();
    else if (this.refusedWith === undefined) await this.lastHeartbeat();
    this.stopping.abort();
    await loops;
    await this.askServer.close();
    if (this.refusedWith !== undefined) return 1;
    return 0;
  }

  /** No new claims; running sessions finish, then run() returns. */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    this.options.log.info({ running: this.sessions.size }, "draining: claiming nothing more; running sessions finish");
    this.polling.abort();
  }

  /** Ends every agent now; the runs go back to the queue (the worker unregisters). */
  stopNow(): void {
    this.drain();
    if (this.sessions.size > 0 && !this.abandoned) {
      this.abandoned = true;
      this.options.log.info({ running: this.sessions.size }, "stopping now: ending the agents; their runs go back to the queue");
      for (const session of this.sessions.values()) session.abandon("the worker stopped");
    }
  }

  private refused(message: string): void {
    if (this.refusedWith !== undefined) return;
    this.refusedWith = message;
    this.options.log.error({ error: message }, "the server no longer accepts this worker's credential; stopping");
    this.stopNow();
  }

  /**
   * Says it is draining and holds nothing, so a claim whose answer the drain cut off goes back
   * to the queue now instead of when its lease expires. Its next registration makes it active.
   */
  private async lastHeartbeat(): Promise<void> {
    try {
      await this.worker.heartbeat({ status: WorkerStatus.DRAINING, leases: [] }, { timeoutMs: 5_000 });
    } catch (error) {
      this.options.log.debug({ err: error }, "the last heartbeat was not answered");
    }
  }

  private async unregister(): Promise<void> {
    try {
      await this.worker.unregisterWorker({}, { timeoutMs: 5_000 });
      await forgetIdentity(this.options.stateDir);
      this.options.log.info({ worker_id: this.workerId }, "unregistered: its runs are requeued; the next start registers a new worker");
    } catch (error) {
      this.options.log.warn({ err: error }, "could not unregister; the server requeues the runs when their leases expire");
    }
  }

  private get agentGroupsDir(): string {
    return path.join(this.options.stateDir, "agents");
  }

  private get outboxRoot(): string {
    return path.join(this.options.stateDir, "outbox");
  }

  private readonly outboxError = (e: OutboxError) => this.options.log.error({ ...e, error: e.message }, "a log batch was refused");

  /**
   * The sessions an earlier process of this worker left mid-run (it was killed): their agents
   * died with it or were ended at the start (endOrphanAgents), so what they printed is sent
   * from the outbox and the run reported failed, while the lease lasts (else the server has
   * requeued it already and refuses both: nothing to do).
   */
  private async recover(sessions: RecoveredOutbox[]): Promise<void> {
    for (const left of sessions) {
      const outbox = await openOutbox({ worker: this.worker, dir: left.dir, sessionId: left.sessionId, leaseToken: left.leaseToken, signal: this.stopping.signal, onError: this.outboxError });
      await outbox.close();
      try {
        await this.worker.reportStatus({ sessionId: left.sessionId, leaseToken: left.leaseToken, state: SessionState.FAILED, errorMessage: "the worker restarted during the run" });
        this.options.log.warn({ session_id: left.sessionId, batches: left.batches }, "a run the worker's previous process left was reported failed");
      } catch (error) {
        if (!isLeaseLost(error)) this.options.log.warn({ session_id: left.sessionId, err: error }, "could not report a run the previous process left");
      }
    }
  }

  private async runSession(assignment: Assignment): Promise<void> {
    const o = this.options;
    const session = new Session(assignment, {
      worker: this.worker,
      server: o.server,
      workerName: o.name,
      log: o.log,
      agents: this.agents,
      workspaceRoot: path.join(o.stateDir, "workspaces"),
      agentGroupsDir: this.agentGroupsDir,
      openLog: (a, onLeaseLost, signal) =>
        openOutbox({ worker: this.worker, dir: path.join(this.outboxRoot, a.lease!.sessionId), sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken, onLeaseLost, signal, onError: this.outboxError }),
      askServer: this.askServer,
      baseEnv: o.baseEnv,
      signal: this.stopping.signal,
    });
    this.sessions.set(session.id, session);
    o.log.info({ session_id: session.id, task_id: assignment.taskId, attempt: assignment.lease!.attempt }, "claimed");
    try {
      if (this.abandoned) session.abandon("the worker stopped");
      await session.run();
    } finally {
      this.sessions.delete(session.id);
      const inUse = new Set([...this.sessions.values()].map((s) => taskFolder(s.assignment.taskId)));
      await pruneWorkspaces(path.join(o.stateDir, "workspaces"), o.keepWorkspaces ?? 10, inUse).catch(() => {});
    }
  }
}
