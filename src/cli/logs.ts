// `foreman logs [-f] TASK_OR_SESSION_ID`: a session's log (GetLog pages), or followed live
// (StreamLog), resuming after a dropped connection from the last sequence seen so that no line
// is lost or repeated. Given a task, its sessions in order; followed, its current one and then
// the next (a requeued attempt, a retry, RequestChanges), learnt of from WatchTasks, until the
// task leaves agent work. The agent's questions are printed as they are raised, with the
// command that answers them.
import { Code, ConnectError } from "@connectrpc/connect";
import { SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import {
  LogLineSchema,
  SessionEndedSchema,
  TtyInputRequestSchema,
  TtyInputStatus,
  type LogBatch,
  type SessionEnded,
  type TtyInputRequest,
} from "../../gen/foreman/v1/session_pb.js";
import type { AgentSession, AgentTask, Task } from "../../gen/foreman/v1/task_pb.js";
import { all, api, call, failure, unreachable, type Api } from "./calls.js";
import { ServerRefused } from "./errors.js";
import { colourFor, json, jsonLine, paint, renderLine, renderQuestion, sessionStateName, statusName, type Out } from "./render.js";

/** How long following keeps trying to reach the server again before it gives up. */
const RECONNECT_BUDGET_MS = 60_000;

/** A task in these statuses is in agent work: another session may yet come. */
const WORKING = [TaskStatus.IN_PROGRESS, TaskStatus.PLANNING];
/** A run that ended well leaves its task in one of these. */
const GOOD = [TaskStatus.IN_REVIEW, TaskStatus.PENDING_APPROVAL, TaskStatus.APPROVED, TaskStatus.PR_OPEN, TaskStatus.DONE];

const note = (line: string) => process.stderr.write(`${line}\n`);
/** A note for a person watching, not for a script: only on a terminal. */
const progress = (line: string) => {
  if (process.stderr.isTTY) note(line);
};

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });

/** Where the lines go: as a person reads them, or as JSON lines. */
export class Sink {
  private readonly asked = new Map<string, TtyInputStatus>();
  private readonly p = paint(colourFor(process.stdout));

  constructor(
    private readonly out: Out,
    private readonly asJson: boolean,
  ) {}

  batch(sessionId: string, b: LogBatch): void {
    for (const line of b.lines) {
      this.out(this.asJson ? jsonLine({ sessionId, sequence: b.sequence, line: json(LogLineSchema, line) }) : renderLine(line, this.p));
    }
  }

  /** Each question once per status it reaches (a stream sends them again when it reconnects). */
  question(q: TtyInputRequest): void {
    if (this.asked.get(q.id) === q.status) return;
    this.asked.set(q.id, q.status);
    if (this.asJson) this.out(jsonLine({ sessionId: q.sessionId, question: json(TtyInputRequestSchema, q) }));
    else for (const line of renderQuestion(q, this.p)) this.out(line);
  }

  ended(sessionId: string, end: SessionEnded): void {
    if (this.asJson) {
      this.out(jsonLine({ sessionId, ended: json(SessionEndedSchema, end) }));
      return;
    }
    const code = end.exitCode === undefined ? "" : ` (exit code ${end.exitCode})`;
    const why = end.errorMessage ? `: ${end.errorMessage.split("\n")[0]}` : "";
    note(`session ${sessionId} ${sessionStateName(end.state)}${code}${why}`);
  }
}

/** Whether a failed call is worth making again: the connection went, or the server was busy or stopping. */
function transient(error: unknown, signal: AbortSignal): boolean {
  if (signal.aborted) return false;
  if (unreachable(error)) return true;
  if (!(error instanceof ConnectError)) return false;
  return [Code.Unavailable, Code.Unknown, Code.Aborted, Code.DeadlineExceeded, Code.Canceled, Code.Internal].includes(error.code);
}

/** Retries `attempt` while its failures are transient, within the reconnect budget since the last progress. */
class Reconnects {
  private failingSince: number | undefined;
  private tries = 0;

  constructor(
    private readonly a: Api,
    private readonly signal: AbortSignal,
  ) {}

  progressed(): void {
    this.failingSince = undefined;
    this.tries = 0;
  }

  /** Waits before the next try, or throws the failure when it is not worth another. */
  async after(error: unknown, what: string): Promise<void> {
    if (!transient(error, this.signal)) throw failure(this.a, error);
    const now = Date.now();
    this.failingSince ??= now;
    if (now - this.failingSince > RECONNECT_BUDGET_MS) {
      throw new ServerRefused(`lost the connection to ${this.a.server} and could not get it back for ${RECONNECT_BUDGET_MS / 1000} s (${(error as Error).message})`);
    }
    if (this.tries === 0) note(`connection to ${this.a.server} lost (${(error as Error).message}); reconnecting, ${what}`);
    this.tries += 1;
    await sleep(Math.min(5000, 200 * 2 ** Math.min(this.tries - 1, 5)), this.signal);
  }
}

/** Prints the session's stored log, every batch after `after`; returns the last sequence printed. */
async function printStored(a: Api, sessionId: string, sink: Sink, after = 0): Promise<number> {
  for (;;) {
    const page = await call(a, () => a.sessions.getLog({ sessionId, afterSequence: after, maxBatches: 500 }), `no session ${sessionId}; foreman task show TASK_ID lists a task's sessions`);
    for (const b of page.batches) {
      sink.batch(sessionId, b);
      after = b.sequence;
    }
    if (page.batches.length === 0 || after >= page.lastSequence) return after;
  }
}

/** Prints the session's questions still waiting for an answer. */
async function printPending(a: Api, sessionId: string, sink: Sink): Promise<void> {
  const pending = await call(a, () =>
    all(async (pageToken) => {
      const r = await a.sessions.listTtyInputRequests({ sessionId, status: TtyInputStatus.PENDING, pageSize: 1000, pageToken });
      return { items: r.requests, next: r.nextPageToken };
    }),
  );
  for (const q of pending) sink.question(q);
}

/** Follows the session live to its end, resuming from the last sequence after a dropped connection. */
export async function followSession(a: Api, sessionId: string, sink: Sink, signal: AbortSignal, after = 0): Promise<SessionEnded | undefined> {
  const reconnects = new Reconnects(a, signal);
  while (!signal.aborted) {
    try {
      for await (const res of a.sessions.streamLog({ sessionId, afterSequence: after }, { signal })) {
        reconnects.progressed();
        const event = res.event;
        if (event.case === "batch") {
          // A resumed stream starts after `after`; this guards against a repeat all the same.
          if (event.value.sequence <= after) continue;
          sink.batch(sessionId, event.value);
          after = event.value.sequence;
        } else if (event.case === "ttyInputRequest") {
          sink.question(event.value);
        } else if (event.case === "ended") {
          sink.ended(sessionId, event.value);
          return event.value;
        }
      }
      if (signal.aborted) return undefined;
      // The stream closed without its last message: the connection went.
      throw new ConnectError("the stream closed before the session ended", Code.Unavailable);
    } catch (error) {
      if (signal.aborted) return undefined;
      if (error instanceof ConnectError && error.code === Code.NotFound) {
        throw failure(a, error, `no session ${sessionId}; foreman task show TASK_ID lists a task's sessions`);
      }
      await reconnects.after(error, `resuming after batch ${after}`);
    }
  }
  return undefined;
}

/** The task's runs, oldest first (a composite task's planning run). */
function runsOf(task: Task): AgentTask[] {
  const t = task.task;
  if (t.case === "unitTask") return t.value.agentTasks;
  if (t.case === "compositeTask") return t.value.planningAgentTask ? [t.value.planningAgentTask] : [];
  return [];
}

const sessionsOf = (task: Task): AgentSession[] => runsOf(task).flatMap((r) => r.sessions);
const statusOf = (task: Task) => task.task.value?.status ?? TaskStatus.UNSPECIFIED;
const workspaceOf = (task: Task) => task.task.value?.workspaceId ?? "";
const fingerprint = (task: Task) => `${statusOf(task)} ${task.task.value?.executionState} ${sessionsOf(task).map((s) => `${s.id}:${s.state}`).join(",")}`;

/** The task, or undefined when the id is no task of the caller's. */
async function findTask(a: Api, id: string): Promise<Task | undefined> {
  try {
    return (await a.tasks.getTask({ id })).task;
  } catch (error) {
    if (error instanceof ConnectError && (error.code === Code.NotFound || error.code === Code.InvalidArgument)) return undefined;
    throw failure(a, error);
  }
}

const getTask = async (a: Api, id: string): Promise<Task> =>
  (await call(a, () => a.tasks.getTask({ id }), `no task ${id}; foreman task list shows yours`)).task!;

/**
 * Waits for the task to change from `seen` (WatchTasks: the stream is live once its first
 * message came, and a read after that misses nothing). Undefined when the task was deleted.
 */
async function nextChange(a: Api, seen: Task, signal: AbortSignal): Promise<Task | undefined> {
  const id = seen.task.value!.id;
  const before = fingerprint(seen);
  const reconnects = new Reconnects(a, signal);
  let cursor = "";
  while (!signal.aborted) {
    // Leaving the loop early must end the call, or its open response keeps the process alive.
    const call = new AbortController();
    const ended = () => call.abort();
    signal.addEventListener("abort", ended, { once: true });
    try {
      let live = false;
      for await (const res of a.tasks.watchTasks({ workspaceId: workspaceOf(seen), cursor }, { signal: call.signal })) {
        reconnects.progressed();
        if (!live) {
          live = true;
          const now = await getTask(a, id);
          if (fingerprint(now) !== before) return now;
        }
        if (res.event.case !== "change") continue;
        cursor = res.event.value.cursor;
        if (res.event.value.taskId !== id) continue;
        if (res.event.value.task === undefined) return undefined;
        if (fingerprint(res.event.value.task) !== before) return res.event.value.task;
      }
      if (signal.aborted) return undefined;
      throw new ConnectError("the task stream closed", Code.Unavailable);
    } catch (error) {
      if (signal.aborted) return undefined;
      if (error instanceof ServerRefused) throw error;
      await reconnects.after(error, "watching the task");
    } finally {
      signal.removeEventListener("abort", ended);
      call.abort();
    }
  }
  return undefined;
}

/** The exit code for a task that left agent work: 0 when its run ended well, else 1. */
export const outcomeCode = (task: Task) => (GOOD.includes(statusOf(task)) ? 0 : 1);

/**
 * Follows the task's sessions, each once, in order, each to its end, until the task leaves
 * agent work; resolves to its exit code.
 */
export async function followTask(a: Api, first: Task, sink: Sink, signal: AbortSignal): Promise<number> {
  const id = first.task.value!.id;
  const done = new Set<string>();
  let task: Task | undefined = first;
  let announced = "";
  while (!signal.aborted) {
    for (const s of sessionsOf(task)) {
      if (done.has(s.id) || signal.aborted) continue;
      if (sessionsOf(task).length > 1 || done.size > 0) note(`── session ${s.id} (attempt ${s.attempt}) ──`);
      if (s.state === SessionState.QUEUED) {
        const reason = task.task.value?.waitingReason;
        progress(`waiting for a worker to take the task${reason ? ` (${reason})` : ""}…`);
      }
      // An ended session's stream replays its log and ends at once, so each session reads alike.
      const end = await followSession(a, s.id, sink, signal);
      if (end === undefined) return 130;
      done.add(s.id);
    }
    if (signal.aborted) break;
    task = await getTask(a, id);
    if (sessionsOf(task).some((s) => !done.has(s.id))) continue;
    if (!WORKING.includes(statusOf(task))) {
      note(`task ${id} is ${statusName(statusOf(task))}${task.task.value?.statusReason ? `: ${task.task.value.statusReason.split("\n")[0]}` : ""}`);
      return outcomeCode(task);
    }
    // In agent work with nothing queued or running (its run was cancelled): wait for what comes next.
    const waiting = `task ${id} is ${statusName(statusOf(task))} with no run queued; waiting for the next one`;
    if (announced !== waiting) progress((announced = waiting));
    task = await nextChange(a, task, signal);
    if (task === undefined) {
      if (signal.aborted) break;
      note(`task ${id} was deleted`);
      return 1;
    }
  }
  return 130;
}

/** Stops following on Ctrl-C: the verb then exits 130. */
export function interruptible(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once("SIGINT", stop);
  return {
    signal: controller.signal,
    dispose() {
      process.off("SIGINT", stop);
    },
  };
}

export async function logs(id: string, args: { values: { server?: string }; flags: { follow?: boolean; json?: boolean } }, out: Out): Promise<number> {
  const a = api(args.values);
  const sink = new Sink(out, args.flags.json === true);
  const task = await findTask(a, id);
  if (!args.flags.follow) {
    if (task === undefined) {
      await printStored(a, id, sink).catch((error: unknown) => {
        throw error instanceof ServerRefused && (error.cause as ConnectError | undefined)?.code === Code.NotFound
          ? new ServerRefused(`no task or session ${id}; foreman task list shows your tasks`)
          : error;
      });
      await printPending(a, id, sink);
      return 0;
    }
    const sessions = sessionsOf(task);
    for (const s of sessions) {
      if (sessions.length > 1) note(`── session ${s.id} (attempt ${s.attempt}, ${sessionStateName(s.state)}) ──`);
      await printStored(a, s.id, sink);
      await printPending(a, s.id, sink);
    }
    return 0;
  }
  const stop = interruptible();
  try {
    if (task !== undefined) return await followTask(a, task, sink, stop.signal);
    let end: SessionEnded | undefined;
    try {
      end = await followSession(a, id, sink, stop.signal);
    } catch (error) {
      if (error instanceof ServerRefused && (error.cause as ConnectError | undefined)?.code === Code.NotFound) {
        throw new ServerRefused(`no task or session ${id}; foreman task list shows your tasks`);
      }
      throw error;
    }
    if (end === undefined) return 130;
    return end.state === SessionState.SUCCEEDED ? 0 : 1;
  } finally {
    stop.dispose();
  }
}
