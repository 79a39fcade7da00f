// One session, from claim to report: RUNNING, the workspace fetched, the task's secrets
// fetched into the agent's environment only, the agent run with its output streamed to the log
// outbox and its questions raised as TTY requests, then the result committed and pushed back
// and the outcome reported. A stop (its command) ends the agent and reports CANCELLED; a lost
// lease ends the agent and reports nothing (it would be refused: someone else holds the run).
import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { Logger } from "pino";
import { AgentType, SessionState } from "../../gen/foreman/v1/common_pb.js";
import { LogLineKind, LogStream, TtyInputStatus, TtyInputType } from "../../gen/foreman/v1/session_pb.js";
import type { Assignment, WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import type { AgentAdapter, AgentOutcome, AgentQuestion, RunningAgent } from "./agents/agent.js";
import type { AskServer } from "./ask-server.js";
import { lineOfAgentEvent } from "./outbox.js";
import { isLeaseLost, untilAnswered } from "./retry.js";
import { deliverResult, prepareWorkspace, resultMessage, WorkspaceError, type Workspace } from "./workspace.js";

/** What a session writes its log through (the on-disk outbox). */
export interface SessionLog {
  push(line: { stream: LogStream; kind?: LogLineKind; text: string; payloadJson?: string }): void;
  /** Resolves once everything pushed is acknowledged (or can never be). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface SessionDeps {
  worker: Client<typeof WorkerService>;
  /** The server's base URL (clone_url is a path on it). */
  server: string;
  workerName: string;
  log: Logger;
  agents: ReadonlyMap<AgentType, AgentAdapter>;
  workspaceRoot: string;
  /** Where each agent's process group is recorded while it runs (orphans.ts). */
  agentGroupsDir: string;
  /** abandoned aborts when the daemon stops now: the outbox stops sending and keeps what is left on disk. */
  openLog: (assignment: Assignment, onLeaseLost: () => void, abandoned: AbortSignal) => Promise<SessionLog>;
  askServer: AskServer;
  /** The environment every agent starts from (PATH, HOME, ...). */
  baseEnv: Readonly<Record<string, string>>;
  /** Aborted when the daemon stops for good: calls stop retrying. */
  signal: AbortSignal;
}

export const AGENT_NAMES: Record<AgentType, string> = {
  [AgentType.UNSPECIFIED]: "unspecified",
  [AgentType.CLAUDE_CODE]: "claude-code",
  [AgentType.CODEX]: "codex",
  [AgentType.GEMINI_CLI]: "gemini-cli",
  [AgentType.OPENCODE]: "opencode",
  [AgentType.AIDER]: "aider",
  [AgentType.AMP]: "amp",
  [AgentType.COMMAND]: "command",
};


const TTY_TYPES: Record<AgentQuestion["type"], TtyInputType> = {
  text: TtyInputType.TEXT,
  confirm: TtyInputType.CONFIRM,
  choice: TtyInputType.CHOICE,
};

/** The server's bound on error_message. */
const MAX_ERROR_CHARS = 4000;

type End = { state: SessionState.SUCCEEDED; headCommit: string } | { state: SessionState.FAILED; error: string } | { state: SessionState.CANCELLED; reason: string };

export class Session {
  readonly id: string;
  private agent: RunningAgent | undefined;
  /** Set once the session must end: why, and whether to report it. */
  private ending: { reason: string; report: boolean } | undefined;
  private readonly ended = new AbortController();
  private readonly abandoned = new AbortController();
  private readonly waiting = new Map<string, { resolve: (answer: string) => void; reject: (error: Error) => void }>();
  private readonly early = new Map<string, string>();

  constructor(
    readonly assignment: Assignment,
    private readonly deps: SessionDeps,
  ) {
    this.id = assignment.lease!.sessionId;
  }

  get lease() {
    return this.assignment.lease!;
  }

  /** Its user (or the server) stopped it: end the agent, report CANCELLED. */
  stop(reason: string): void {
    this.end(reason, true);
  }

  /** Its lease is gone: end the agent and report nothing. */
  leaseLost(): void {
    this.end("its lease was lost", false);
  }

  /** The daemon stops now: end the agent and report nothing (the server requeues the run). */
  abandon(reason: string): void {
    this.end(reason, false);
    this.abandoned.abort();
  }

  /** A TTY answer for one of this session's questions; false when it is not this session's. */
  answer(requestId: string, response: string): void {
    const waiter = this.waiting.get(requestId);
    if (waiter === undefined) this.early.set(requestId, response);
    else waiter.resolve(response);
  }

  private end(reason: string, report: boolean): void {
    if (this.ending !== undefined) {
      // A lost lease overrides a stop: there is no one to report to.
      if (!report) this.ending.report = false;
      return;
    }
    this.ending = { reason, report };
    this.ended.abort();
    this.agent?.stop(reason);
    for (const waiter of this.waiting.values()) waiter.reject(new Error(`the session ended: ${reason}`));
  }

  async run(): Promise<void> {
    const { log } = this.deps;
    const a = this.assignment;
    const sessionLog = await this.deps.openLog(a, () => this.leaseLost(), this.abandoned.signal);
    const system = (text: string) => sessionLog.push({ stream: LogStream.SYSTEM, text });
    let end: End | undefined;
    try {
      if (!(await this.report({ state: SessionState.RUNNING }))) return;
      const agentName = AGENT_NAMES[a.agentType] ?? String(a.agentType);
      system(`${this.deps.workerName} runs attempt ${this.lease.attempt} with ${agentName}${a.agentModel === "" ? "" : ` (${a.agentModel})`}`);
      end = await this.runAgent(sessionLog, system);
    } catch (error) {
      log.error({ err: error, session_id: this.id }, "session failed in the worker");
      end = { state: SessionState.FAILED, error: `the worker failed: ${error instanceof Error ? error.message : String(error)}` };
    } finally {
      if (end !== undefined && this.ending?.report !== false) {
        if (end.state === SessionState.FAILED) system(`failed: ${end.error}`);
        if (end.state === SessionState.CANCELLED) system(`stopped: ${end.reason}`);
      }
      // The log is complete before the task moves on, so a reader that sees the end has every line
      // (unless the daemon stops now: what is left stays in the outbox for its next start).
      if (!this.abandoned.signal.aborted) await Promise.race([sessionLog.flush(), aborted(this.abandoned.signal)]);
      if (end !== undefined && this.ending?.report !== false) await this.report(end);
      await sessionLog.close();
      this.end("the session ended", false);
    }
  }

  private async runAgent(sessionLog: SessionLog, system: (text: string) => void): Promise<End> {
    const a = this.assignment;
    const adapter = this.deps.agents.get(a.agentType);
    if (adapter === undefined) return { state: SessionState.FAILED, error: `this worker does not run ${AGENT_NAMES[a.agentType] ?? a.agentType}` };

    let workspace: Workspace;
    try {
      workspace = await prepareWorkspace(a.repositories, { server: this.deps.server, leaseToken: this.lease.leaseToken, root: this.deps.workspaceRoot, taskId: a.taskId, signal: this.ended.signal });
    } catch (error) {
      if (this.ending !== undefined) return this.stopped();
      if (error instanceof WorkspaceError && error.leaseLost) {
        this.leaseLost();
        return this.stopped();
      }
      return { state: SessionState.FAILED, error: `could not fetch the workspace: ${error instanceof Error ? error.message : String(error)}` };
    }
    system(`workspace ready: ${workspace.repositories.map((r) => `${r.name} at ${r.branch} ${r.startCommit.slice(0, 12)}`).join(", ")}`);

    let secrets: Record<string, string> = {};
    if (a.hasSecrets) {
      try {
        secrets = (await this.call(() => this.deps.worker.getSecrets({ sessionId: this.id, leaseToken: this.lease.leaseToken }))).secrets;
      } catch (error) {
        if (this.ending !== undefined || isLeaseLost(error)) return this.stopped(error);
        return { state: SessionState.FAILED, error: `could not fetch the task's secrets: ${ConnectError.from(error).rawMessage}` };
      }
    }
    if (this.ending !== undefined) return this.stopped();

    const asking = await this.deps.askServer.open((q) => this.ask(q));
    let outcome: AgentOutcome;
    try {
      this.agent = adapter.start({
        taskId: a.taskId,
        sessionId: this.id,
        workspace: workspace.dir,
        prompt: a.prompt,
        model: a.agentModel,
        env: this.deps.baseEnv,
        secrets,
        onEvent: (event) => sessionLog.push(lineOfAgentEvent(event)),
        askUrl: asking.url,
        ask: (q) => this.ask(q),
        groupRecord: { dir: this.deps.agentGroupsDir, sessionId: this.id },
      });
      // A stop that came while the agent was starting (TS narrowed ending above; it may have changed since).
      const ending = this.ending as { reason: string } | undefined;
      if (ending !== undefined) this.agent.stop(ending.reason);
      outcome = await this.agent.done;
    } finally {
      asking.release();
    }
    if (this.ending !== undefined) return this.stopped();
    if (outcome.state === "cancelled") return { state: SessionState.CANCELLED, reason: outcome.reason };
    if (outcome.state === "failed") return { state: SessionState.FAILED, error: outcome.error };

    try {
      const { headCommit, moved } = await deliverResult(workspace, { leaseToken: this.lease.leaseToken, message: resultMessage(a.prompt, a.taskId, this.id), signal: this.ended.signal });
      system(moved.length === 0 ? "the agent changed nothing" : `pushed ${moved.join(", ")}`);
      return { state: SessionState.SUCCEEDED, headCommit };
    } catch (error) {
      if (this.ending !== undefined) return this.stopped();
      if (error instanceof WorkspaceError && error.leaseLost) {
        this.leaseLost();
        return this.stopped();
      }
      return { state: SessionState.FAILED, error: `could not push the result: ${error instanceof Error ? error.message : String(error)}` };
    }
  }

  private stopped(error?: unknown): End {
    if (error !== undefined && isLeaseLost(error)) this.leaseLost();
    return { state: SessionState.CANCELLED, reason: this.ending?.reason ?? "stopped" };
  }

  /** A question of the agent's, raised as a TTY request; resolves with the answer. */
  private async ask(question: AgentQuestion): Promise<string> {
    if (this.ending !== undefined) throw new Error(`the session ended: ${this.ending.reason}`);
    const clientRequestId = randomUUID();
    const { request } = await this.call(() =>
      this.deps.worker.createTtyInputRequest({
        sessionId: this.id,
        leaseToken: this.lease.leaseToken,
        prompt: question.prompt,
        inputType: TTY_TYPES[question.type],
        options: question.choices ?? [],
        clientRequestId,
      }),
    );
    const id = request!.id;
    if (request!.status === TtyInputStatus.ANSWERED) return request!.response;
    const early = this.early.get(id);
    if (early !== undefined) return early;
    this.deps.log.info({ session_id: this.id, request_id: id }, "the agent asked a question");
    return new Promise<string>((resolve, reject) => {
      this.waiting.set(id, {
        resolve: (answer) => (this.waiting.delete(id), resolve(answer)),
        reject: (error) => (this.waiting.delete(id), reject(error)),
      });
    });
  }

  /** A call about this session, retried while the server is away (until the daemon stops). */
  private call<T>(run: () => Promise<T>): Promise<T> {
    return untilAnswered(run, {
      signal: this.deps.signal,
      onRetry: (e, attempt) => this.deps.log.warn({ session_id: this.id, code: Code[e.code], error: e.rawMessage, attempt }, "the server did not answer; trying again"),
    });
  }

  /** Reports a state; false when the lease is gone (the session must end quietly). */
  private async report(end: { state: SessionState.RUNNING } | End): Promise<boolean> {
    try {
      const response = await this.call(() =>
        this.deps.worker.reportStatus({
          sessionId: this.id,
          leaseToken: this.lease.leaseToken,
          state: end.state,
          exitCode: end.state === SessionState.SUCCEEDED ? 0 : undefined,
          errorMessage: end.state === SessionState.FAILED ? end.error.slice(0, MAX_ERROR_CHARS) : end.state === SessionState.CANCELLED ? end.reason.slice(0, MAX_ERROR_CHARS) : "",
          headCommit: end.state === SessionState.SUCCEEDED ? end.headCommit : "",
        }),
      );
      if (response.stopRequested) this.stop("stopped by its user");
      this.deps.log.info({ session_id: this.id, task_id: this.assignment.taskId, state: SessionState[end.state] }, "reported");
      return true;
    } catch (error) {
      if (isLeaseLost(error)) {
        this.leaseLost();
        this.deps.log.warn({ session_id: this.id, state: SessionState[end.state] }, "the lease was lost; the report was refused");
        return false;
      }
      const e = ConnectError.from(error);
      this.deps.log.error({ session_id: this.id, state: SessionState[end.state], code: Code[e.code], error: e.rawMessage }, "the report was refused");
      return false;
    }
  }
}


const aborted = (signal: AbortSignal) => new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true })));
