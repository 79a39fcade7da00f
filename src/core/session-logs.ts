// A session's log: the worker appends batches (WorkerService.AppendLogs), fenced by the
// session's lease; users read them back (SessionService.GetLog). Every line is masked
// (core/log-masking.ts) against the task's secrets before it is stored, so neither the table,
// a reader nor this server's log ever holds a secret value. Lines are never logged, only counts.
import type { Logger } from "../logger.js";
import { LOG_LINE_KINDS, LOG_STREAMS, type LogLine } from "../model/logs.js";
import { LEASED_SESSION_STATES } from "../model/tasks.js";
import * as sessions from "../store/agent-sessions.js";
import * as logBatches from "../store/log-batches.js";
import type { Core } from "./context.js";
import { heldSession, leaseProblem } from "./leases.js";
import { leaseLost, logSequenceRefused, notFound } from "./errors.js";
import { isJsonObject, maskLines, maskPatterns } from "./log-masking.js";
import { secretValuesToMask } from "./secret-vault.js";
import { Violations } from "./validation.js";

/** Lines in one batch (the contract's max_items on LogBatch.lines). */
export const MAX_LINES_PER_BATCH = 5000;
/** Text and payload of one line together, in bytes of UTF-8. */
export const MAX_LINE_BYTES = 64 * 1024;
/** The lines of one batch together (about what a worker keeps unacknowledged in its outbox). */
export const MAX_BATCH_BYTES = 1024 * 1024;
/** The batches of one call together; FOREMAN_MAX_MESSAGE_BYTES bounds the whole request too. */
export const MAX_CALL_BYTES = 4 * 1024 * 1024;
export const DEFAULT_MAX_LOG_BYTES_PER_SESSION = 100 * 1024 * 1024;
export const DEFAULT_GET_LOG_BATCHES = 500;
export const MAX_GET_LOG_BATCHES = 5000;

/** FOREMAN_MAX_LOG_BYTES_PER_SESSION: past it a session's log is cut off. */
export interface LogLimits {
  maxBytesPerSession: number;
}

export interface AppendInput {
  sessionId: string;
  leaseToken: string;
  /** As the API read them: stream and kind as core's names (an unknown number as its digits). */
  batches: { sequence: number; lines: { stream: string; kind: string; text: string; time: Date | null; payload: string }[] }[];
}

interface CheckedBatch {
  sequence: number;
  lines: LogLine[];
  bytes: number;
  /** The bytes of each line, for a cut-off inside the batch. */
  lineBytes: number[];
}

const STREAMS: readonly string[] = LOG_STREAMS;
const KINDS: readonly string[] = LOG_LINE_KINDS;

/** The request's batches checked against the bounds; violations name the field, never a line's text. */
function readBatches(v: Violations, raw: AppendInput["batches"]): CheckedBatch[] {
  const out: CheckedBatch[] = [];
  let callBytes = 0;
  raw.forEach((b, i) => {
    const field = `batches[${i}]`;
    if (b.sequence < 1) v.add(`${field}.sequence`, "must be at least 1: a session's first batch is 1");
    else if (i > 0 && b.sequence !== raw[i - 1]!.sequence + 1) v.add(`${field}.sequence`, `must be ${raw[i - 1]!.sequence + 1}, the one after the batch before it, got ${b.sequence}`);
    if (b.lines.length > MAX_LINES_PER_BATCH) v.add(`${field}.lines`, `must hold at most ${MAX_LINES_PER_BATCH} lines, got ${b.lines.length}`);
    const lines: LogLine[] = [];
    const lineBytes: number[] = [];
    let bytes = 0;
    b.lines.slice(0, MAX_LINES_PER_BATCH).forEach((l, j) => {
      const at = `${field}.lines[${j}]`;
      if (!STREAMS.includes(l.stream)) v.add(`${at}.stream`, `${l.stream} is not a known log stream`);
      if (!KINDS.includes(l.kind)) v.add(`${at}.kind`, `${l.kind} is not a known log line kind`);
      const n = Buffer.byteLength(l.text, "utf8") + Buffer.byteLength(l.payload, "utf8");
      if (n > MAX_LINE_BYTES) v.add(`${at}.text`, `a line's text and payload_json together must be at most ${MAX_LINE_BYTES} bytes (UTF-8), got ${n}`);
      if (l.text.includes("\0")) v.add(`${at}.text`, "must not hold a NUL character");
      if (l.payload !== "") {
        if (l.payload.includes("\0")) v.add(`${at}.payload_json`, "must not hold a NUL character");
        else if (!isJsonObject(l.payload)) v.add(`${at}.payload_json`, "must be the JSON text of one object, or empty");
      }
      bytes += n;
      lineBytes.push(n);
      lines.push({ stream: l.stream as LogLine["stream"], kind: l.kind as LogLine["kind"], text: l.text, time: l.time, payload: l.payload === "" ? null : l.payload });
    });
    if (bytes > MAX_BATCH_BYTES) v.add(field, `a batch's lines must be at most ${MAX_BATCH_BYTES} bytes (UTF-8) together, got ${bytes}`);
    callBytes += bytes;
    out.push({ sequence: b.sequence, lines, bytes, lineBytes });
  });
  if (callBytes > MAX_CALL_BYTES) v.add("batches", `the batches of one call must be at most ${MAX_CALL_BYTES} bytes (UTF-8) together, got ${callBytes}`);
  return out;
}

/** The calling worker, as dispatch knows it. */
export interface LogCaller {
  workerId: string;
  ownerId: string | null;
}

/**
 * AppendLogs: stores the batches after the session's acknowledged sequence, in one transaction,
 * and wakes its readers. Returns the acknowledged sequence (stored_sequence).
 */
export async function appendLogs(core: Core, log: Logger, caller: LogCaller, input: AppendInput): Promise<{ storedSequence: number }> {
  const v = new Violations();
  const sessionId = v.id("session_id", input.sessionId);
  if (input.leaseToken === "") v.add("lease_token", "is required: the token of the session's lease, from GetTask");
  const batches = readBatches(v, input.batches);
  v.throwIfAny();

  // Checked before asking for the secrets, which only the lease's holder may have.
  const { session, tokenHash } = await heldSession(core, caller, sessionId, input.leaseToken);
  const writer = { sessionId, workerId: caller.workerId, tokenHash };
  const now = core.now();
  // Outside the transaction: the values may come from another replica.
  const { task } = await sessions.workOf(core.db, session);
  const patterns = maskPatterns(await secretValuesToMask(core, { taskId: task.id, sessionId, workerId: caller.workerId, leaseTokenHash: tokenHash }));
  const masked = batches.map((b) => ({ ...b, lines: maskLines(b.lines, patterns) }));
  const cap = core.logLimits?.maxBytesPerSession ?? DEFAULT_MAX_LOG_BYTES_PER_SESSION;

  const result = await core.adapter.transaction(core.db, async (trx) => {
    const head = await logBatches.lockForAppend(trx, writer, now);
    if (head === undefined) return undefined;
    let received = head.receivedBytes;
    const cutOff = () => received > cap;
    const retried = masked.filter((b) => b.sequence <= head.lastSequence);
    const fresh = masked.filter((b) => b.sequence > head.lastSequence);
    if (fresh.length > 0 && fresh[0]!.sequence !== head.lastSequence + 1) {
      throw logSequenceRefused(
        "SEQUENCE_GAP",
        `session ${sessionId}: batch ${fresh[0]!.sequence} does not follow the stored sequence ${head.lastSequence}; send from ${head.lastSequence + 1}`,
        { session_id: sessionId, stored_sequence: String(head.lastSequence), sequence: String(fresh[0]!.sequence) },
      );
    }
    // A cut-off log stored its last batch cut short (or not at all): a retry cannot be compared, and changes nothing.
    if (retried.length > 0 && !cutOff()) {
      const stored = await logBatches.listBatches(trx, sessionId, retried[0]!.sequence - 1, retried.length);
      for (const b of retried) {
        const s = stored.find((x) => x.sequence === b.sequence);
        if (s !== undefined && !sameLines(s.lines, b.lines)) {
          throw logSequenceRefused(
            "SEQUENCE_CONFLICT",
            `session ${sessionId}: batch ${b.sequence} is stored already with other lines; send the next batch after ${head.lastSequence}`,
            { session_id: sessionId, stored_sequence: String(head.lastSequence), sequence: String(b.sequence) },
          );
        }
      }
    }
    const toStore: logBatches.NewBatch[] = [];
    let dropped = 0;
    for (const b of fresh) {
      if (cutOff()) {
        dropped++;
      } else if (received + b.bytes > cap) {
        // Whole lines up to the cap, then the line that says so.
        const kept: LogLine[] = [];
        let at = received;
        for (let i = 0; i < b.lines.length && at + b.lineBytes[i]! <= cap; i++) {
          kept.push(b.lines[i]!);
          at += b.lineBytes[i]!;
        }
        kept.push(cutOffLine(cap, now));
        toStore.push({ sequence: b.sequence, lines: kept, receivedBytes: received + b.bytes });
        log.warn({ session_id: sessionId, sequence: b.sequence, max_bytes: cap }, "a session's log passed its cap and was cut off");
      } else {
        toStore.push({ sequence: b.sequence, lines: b.lines, receivedBytes: received + b.bytes });
      }
      received += b.bytes;
    }
    const last = fresh.length > 0 ? fresh[fresh.length - 1]!.sequence : head.lastSequence;
    if (last > head.lastSequence) await logBatches.appendBatches(trx, core.adapter, sessionId, toStore, last, now);
    return { last, appended: last > head.lastSequence, stored: toStore.length, dropped, lines: toStore.reduce((n, b) => n + b.lines.length, 0) };
  });

  if (result === undefined) {
    const current = await sessions.getSession(core.db, sessionId);
    if (current === undefined) throw notFound("session", sessionId);
    throw leaseLost(sessionId, leaseProblem(current, caller.workerId, tokenHash, core.now()) ?? "the lease changed during the call");
  }
  if (result.appended) core.logs.notify(sessionId);
  log.debug({ session_id: sessionId, stored_sequence: result.last, batches: result.stored, lines: result.lines, dropped: result.dropped }, "log batches appended");
  return { storedSequence: result.last };
}

function cutOffLine(cap: number, now: Date): LogLine {
  return {
    stream: "system",
    kind: "text",
    text: `the log was cut off at ${cap} bytes (FOREMAN_MAX_LOG_BYTES_PER_SESSION): later output of this session is not stored`,
    time: now,
    payload: null,
  };
}

/** Whether a retried batch's lines (masked) are those stored: the same stream, kind, text, time (to the millisecond) and payload. */
function sameLines(a: readonly LogLine[], b: readonly LogLine[]): boolean {
  return (
    a.length === b.length &&
    a.every((x, i) => {
      const y = b[i]!;
      return x.stream === y.stream && x.kind === y.kind && x.text === y.text && x.payload === y.payload && (x.time?.getTime() ?? null) === (y.time?.getTime() ?? null);
    })
  );
}

export interface LogPage {
  batches: logBatches.StoredBatch[];
  lastSequence: number;
  sessionEnded: boolean;
}

/**
 * GetLog: the caller's session's stored batches after `afterSequence`, at most `maxBatches`
 * (0: DEFAULT_GET_LOG_BATCHES). Past the end there are none, which is no error.
 */
export async function getLog(core: Core, userId: string, input: { sessionId: string; afterSequence: number; maxBatches: number }): Promise<LogPage> {
  const v = new Violations();
  const sessionId = v.id("session_id", input.sessionId);
  if (input.maxBatches < 0 || input.maxBatches > MAX_GET_LOG_BATCHES) {
    v.add("max_batches", `must be 0 (the default, ${DEFAULT_GET_LOG_BATCHES}) or 1 to ${MAX_GET_LOG_BATCHES}, got ${input.maxBatches}`);
  }
  v.throwIfAny();
  // The session first, so that last_sequence is never behind the batches read after it.
  const session = await sessions.getSession(core.db, sessionId);
  if (session === undefined || session.ownerId !== userId) throw notFound("session", sessionId);
  const batches = await logBatches.listBatches(core.db, sessionId, input.afterSequence, input.maxBatches === 0 ? DEFAULT_GET_LOG_BATCHES : input.maxBatches);
  const lastSequence = Math.max(session.lastLogSequence, batches.at(-1)?.sequence ?? 0);
  return { batches, lastSequence, sessionEnded: session.state !== "queued" && !LEASED_SESSION_STATES.includes(session.state) };
}
