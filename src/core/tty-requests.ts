// TTY input: an agent's question, raised by the worker holding its session
// (CreateTtyInputRequest, fenced by the lease), seen by its user's clients (StreamLog,
// ListTtyInputRequests) and answered once (SubmitTtyInput); the answer goes to the worker as a
// tty_input_answer command (core/commands.ts), queued in the transaction that answers.
// A pending request of a session that has ended reads as cancelled (model/tty.ts), so nothing
// that ends a session needs to know about questions; requests are rows, so they outlive a
// worker's or the server's restart.
import type { Logger } from "../logger.js";
import * as sessions from "../store/agent-sessions.js";
import { newId } from "../store/codec.js";
import { LOGS_CHANNEL } from "../store/log-batches.js";
import { ttyKey } from "./log-stream.js";
import { getTask } from "../store/tasks.js";
import * as store from "../store/tty-requests.js";
import { insertTtyAnswerCommand } from "../store/worker-commands.js";
import type { TtyInputRequest, TtyInputStatus, TtyInputType } from "../model/tty.js";
import { commandsQueued } from "./commands.js";
import type { Core } from "./context.js";
import { heldSession } from "./leases.js";
import { failedPrecondition, invalidArgument, notFound } from "./errors.js";
import { readPage, writePage } from "./pagination.js";
import { quote } from "./text.js";
import { Violations } from "./validation.js";

export const PROMPT_MAX = 4000;
export const OPTIONS_MIN = 2;
export const OPTIONS_MAX = 64;
export const OPTION_MAX = 200;
export const RESPONSE_MAX = 4000;
const CLIENT_REQUEST_ID_MAX = 128;

const INPUT_TYPES: TtyInputType[] = ["text", "confirm", "choice"];
const STATUSES: TtyInputStatus[] = ["pending", "answered", "cancelled"];

/** What a CONFIRM answer may be (case-insensitive, trimmed), and the canonical answer stored and sent. */
const CONFIRM_ANSWERS: Record<string, "yes" | "no"> = { yes: "yes", y: "yes", true: "yes", no: "no", n: "no", false: "no" };

export interface TtyWorker {
  workerId: string;
  /** null: a worker of the configured token, serving every user. */
  ownerId: string | null;
}

export interface CreateInput {
  sessionId: string;
  leaseToken: string;
  prompt: string;
  /** core's name of the input type; undefined when not given. */
  inputType: string | undefined;
  options: string[];
  clientRequestId: string;
}

/**
 * CreateTtyInputRequest: stores a pending question for the session the worker holds. A retry
 * with the same client_request_id returns the request it made; the same id with another
 * question is InvalidArgument (the id names one question).
 */
export async function createTtyRequest(core: Core, log: Logger, caller: TtyWorker, input: CreateInput): Promise<TtyInputRequest> {
  const v = new Violations();
  const sessionId = v.id("session_id", input.sessionId);
  if (input.leaseToken === "") v.add("lease_token", "is required: the token of the session's lease, from GetTask");
  if (input.clientRequestId === "") v.add("client_request_id", "is required: an id the worker chooses per question (a UUID, say), the same when it retries");
  else v.text("client_request_id", input.clientRequestId, { max: CLIENT_REQUEST_ID_MAX, singleLine: true });
  if (input.prompt.trim() === "") v.add("prompt", "is required: the agent's question");
  else v.text("prompt", input.prompt, { max: PROMPT_MAX });
  const inputType = input.inputType as TtyInputType;
  if (input.inputType === undefined) v.add("input_type", "is required: TEXT, CONFIRM or CHOICE");
  else if (!INPUT_TYPES.includes(inputType)) v.add("input_type", `must be TEXT, CONFIRM or CHOICE, got ${input.inputType.toUpperCase()}`);
  const options = input.options.map((o) => o.trim());
  if (inputType === "choice") {
    if (options.length < OPTIONS_MIN || options.length > OPTIONS_MAX) v.add("options", `a CHOICE needs ${OPTIONS_MIN} to ${OPTIONS_MAX} options, got ${options.length}`);
    const seen = new Set<string>();
    options.forEach((o, i) => {
      if (o === "") v.add(`options[${i}]`, "is empty");
      else v.text(`options[${i}]`, o, { max: OPTION_MAX, singleLine: true });
      if (o !== "" && seen.has(o)) v.add(`options[${i}]`, `repeats ${quote(o)}: options must be distinct`);
      seen.add(o);
    });
  } else if (options.length > 0 && input.inputType !== undefined && INPUT_TYPES.includes(inputType)) {
    v.add("options", `only a CHOICE takes options; a ${inputType.toUpperCase()} takes none`);
  }
  v.throwIfAny();

  const { session } = await heldSession(core, caller, sessionId, input.leaseToken);

  const asked = { prompt: input.prompt, inputType, options: inputType === "choice" ? options : [] };
  const earlier = await store.findByClientRequestId(core.db, sessionId, input.clientRequestId);
  if (earlier !== undefined) return sameQuestion(earlier, asked);
  const { task } = await sessions.workOf(core.db, session);
  const now = core.now();
  const id = newId(now.getTime());
  const inserted = await core.adapter.transaction(core.db, async (trx) => {
    const stored = await store.insertTtyRequest(
      trx,
      { id, ownerId: session.ownerId, sessionId, taskId: task.id, clientRequestId: input.clientRequestId, ...asked },
      now,
    );
    if (stored) await core.adapter.notifyOnCommit(trx, LOGS_CHANNEL, ttyKey(sessionId));
    return stored;
  });
  const request = await store.findByClientRequestId(core.db, sessionId, input.clientRequestId);
  // Deleted with its task meanwhile.
  if (request === undefined) throw notFound("session", sessionId);
  // A retry that raced the first call: the first one's request.
  if (!inserted) return sameQuestion(request, asked);
  core.logs.notify(ttyKey(sessionId));
  log.info({ tty_request_id: id, session_id: sessionId, task_id: task.id, input_type: inputType, worker_id: caller.workerId }, "tty input requested");
  return request;
}

function sameQuestion(earlier: TtyInputRequest, asked: { prompt: string; inputType: TtyInputType; options: string[] }): TtyInputRequest {
  const same =
    earlier.prompt === asked.prompt &&
    earlier.inputType === asked.inputType &&
    earlier.options.length === asked.options.length &&
    earlier.options.every((o, i) => o === asked.options[i]);
  if (same) return earlier;
  throw invalidArgument([
    {
      field: "client_request_id",
      description: `was used for request ${earlier.id} of this session with another prompt, input type or options; use a fresh id for each question`,
    },
  ]);
}

export interface ListInput {
  sessionId: string;
  taskId: string;
  /** core's name of the status filter; undefined: any. */
  status: string | undefined;
  pageSize: number;
  pageToken: string;
}

/** ListTtyInputRequests: the owner's requests of a session and/or a task, oldest first. */
export async function listTtyRequests(core: Core, ownerId: string, input: ListInput): Promise<{ items: TtyInputRequest[]; nextPageToken: string }> {
  const v = new Violations();
  const sessionId = v.optionalId("session_id", input.sessionId);
  const taskId = v.optionalId("task_id", input.taskId);
  if (sessionId === undefined && taskId === undefined) {
    v.add("session_id", "is required unless task_id is given: the requests of which session or task");
  }
  const status = input.status as TtyInputStatus | undefined;
  if (input.status !== undefined && !STATUSES.includes(input.status as TtyInputStatus)) {
    v.add("status", `must be PENDING, ANSWERED or CANCELLED, got ${input.status.toUpperCase()}`);
  }
  const page = readPage(v, input.pageSize, input.pageToken, `tty_requests:${sessionId ?? ""}:${taskId ?? ""}:${status ?? ""}`);
  v.throwIfAny();
  if (sessionId !== undefined) {
    const session = await sessions.getSession(core.db, sessionId);
    if (session === undefined || session.ownerId !== ownerId) throw notFound("session", sessionId);
  }
  if (taskId !== undefined && (await getTask(core.db, ownerId, taskId)) === undefined) throw notFound("task", taskId);
  return writePage(page, await store.listTtyRequests(core.db, ownerId, { sessionId, taskId, status }, page));
}

/**
 * SubmitTtyInput: the owner's one answer to a pending request. The request becomes answered and
 * a tty_input_answer command is queued for the worker holding the session, in one transaction;
 * of two answers at once exactly one wins, and the other is FailedPrecondition, as is any later one.
 */
export async function submitTtyInput(core: Core, log: Logger, ownerId: string, input: { requestId: string; response: string }): Promise<TtyInputRequest> {
  const v = new Violations();
  const requestId = v.id("request_id", input.requestId);
  v.text("response", input.response, { max: RESPONSE_MAX });
  v.throwIfAny();
  const request = await store.getTtyRequest(core.db, ownerId, requestId);
  if (request === undefined) throw notFound("tty input request", requestId);
  refuseUnlessPending(request);
  const response = readAnswer(request, input.response);
  const now = core.now();
  const answered = await core.adapter.transaction(core.db, async (trx) => {
    const held = await store.answerTtyRequest(trx, ownerId, requestId, response, now);
    if (held === undefined) return undefined;
    await insertTtyAnswerCommand(trx, core.adapter, { ...held, requestId, response }, now);
    await core.adapter.notifyOnCommit(trx, LOGS_CHANNEL, ttyKey(held.sessionId));
    return held;
  });
  const current = await store.getTtyRequest(core.db, ownerId, requestId);
  if (current === undefined) throw notFound("tty input request", requestId);
  if (answered === undefined) {
    // Answered by another call meanwhile, or the session ended or went back to the queue.
    refuseUnlessPending(current);
    throw failedPrecondition(
      `no worker holds session ${current.sessionId} now (it is waiting for one), so request ${requestId} cannot be answered yet`,
      { current_status: current.status, session_id: current.sessionId },
    );
  }
  commandsQueued(core, [answered.workerId]);
  core.logs.notify(ttyKey(answered.sessionId));
  // The answer is the user's, maybe private: logged by its length only.
  log.info({ tty_request_id: requestId, session_id: answered.sessionId, worker_id: answered.workerId, response_chars: response.length }, "tty input answered");
  return current;
}

function refuseUnlessPending(request: TtyInputRequest): void {
  if (request.status === "answered") {
    throw failedPrecondition(`request ${request.id} was already answered; it is answered once`, { current_status: "answered" });
  }
  if (request.status === "cancelled") {
    throw failedPrecondition(`request ${request.id} was cancelled: the session ended before an answer came`, { current_status: "cancelled" });
  }
}

/** The answer to store and send: CONFIRM's canonical yes or no, CHOICE's option, TEXT as typed. */
function readAnswer(request: TtyInputRequest, raw: string): string {
  switch (request.inputType) {
    case "text":
      return raw;
    case "confirm": {
      const answer = CONFIRM_ANSWERS[raw.trim().toLowerCase()];
      if (answer === undefined) throw invalidArgument([{ field: "response", description: `a CONFIRM takes yes or no (also y, n, true, false), got ${quote(raw)}` }]);
      return answer;
    }
    case "choice": {
      const answer = raw.trim();
      if (!request.options.includes(answer)) {
        throw invalidArgument([{ field: "response", description: `must be one of the request's ${request.options.length} options, got ${quote(raw)}` }]);
      }
      return answer;
    }
  }
}
