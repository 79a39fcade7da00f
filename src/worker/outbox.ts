// The worker's log outbox for one session: the agent's lines are cut into batches (by lines,
// bytes and time), each batch gets the session's next sequence, is written to a folder on disk
// and then sent with AppendLogs; its file goes once the server acknowledges it. A network blip,
// a server restart or a worker restart loses no output: whatever is unacknowledged is resent,
// and the server, not the worker, says which sequence it has. Memory and disk are bounded:
// when the server stays away too long, new lines are dropped and counted, and one SYSTEM line
// says how many once there is room again. Nothing here logs: the caller hears through callbacks.
import { randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { LogBatchSchema, LogLineKind, LogLineSchema, LogStream, type LogBatch, type LogLine } from "../../gen/foreman/v1/session_pb.js";
import type { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { AgentEvent, AgentEventKind } from "./agents/agent.js";
import { backoffMs, isLeaseLost, isTransient, reasonOf, sleep } from "./retry.js";

/** The server's bounds (core/session-logs.ts): text and payload of one line, one batch, one call. */
export const MAX_LINE_BYTES = 64 * 1024;
const SERVER_MAX_BATCH_LINES = 5000;
const SERVER_MAX_BATCH_BYTES = 1024 * 1024;
const SERVER_MAX_CALL_BATCHES = 100;
/** 4 MiB per call, text and payload; the encoded request (FOREMAN_MAX_MESSAGE_BYTES, 4 MiB by default) is bounded too, so leave room for its framing. */
const MAX_CALL_BYTES = 4 * 1024 * 1024 - 64 * 1024;

export const DEFAULT_MAX_BATCH_LINES = 500;
export const DEFAULT_MAX_BATCH_BYTES = 256 * 1024;
export const DEFAULT_FLUSH_MS = 200;
export const DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024;

/** The session's id, its lease token and where the server is, kept beside the batch files. */
const SESSION_FILE = "session.json";
const BATCH_SUFFIX = ".batch";
const TEMP_SUFFIX = ".tmp";

export interface OutboxLine {
  stream: LogStream;
  /** Absent: a plain line (TEXT). */
  kind?: LogLineKind;
  text: string;
  /** The JSON text of one object, for a structured event. */
  payloadJson?: string;
  /** Absent: now. */
  time?: Date;
}

/** A problem the outbox met and dealt with (never a line's text, never the lease token). */
export interface OutboxError {
  kind:
    | "batch_refused" // InvalidArgument: the batch's lines were dropped, a SYSTEM line took its sequence
    | "sequence_conflict" // the server holds other lines under a sequence: it keeps its own
    | "sequences_lost" // the server lacks batches it had acknowledged: later ones are renumbered
    | "send_failed" // an answer that is neither transient nor one of the above: retried with backoff
    | "outbox_refused" // the server refuses the session itself: the outbox stops
    | "disk" // a file could not be written, read or removed: sending goes on from memory
    | "internal"; // a bug: a line could not be taken, or the sending stopped
  sessionId: string;
  /** The sequences concerned, when there are some. */
  firstSequence?: number;
  lastSequence?: number;
  /** How many lines were dropped, when some were. */
  lines?: number;
  /** The ConnectError's code name and ErrorInfo reason, for server answers. */
  code?: string;
  reason?: string;
  /** The fields a BadRequest named. */
  fields?: string[];
  message: string;
  /** For send_failed: the error's own message (the server's messages never quote a line). */
  detail?: string;
}

export interface OutboxOptions {
  /** The session's folder: its batch files and session.json (see outboxDir). */
  dir: string;
  sessionId: string;
  leaseToken: string;
  worker: Client<typeof WorkerService>;
  maxBatchLines?: number;
  /** Text and payload bytes of a batch. */
  maxBatchBytes?: number;
  /** A batch is cut this long after its first line at the latest. */
  flushMs?: number;
  /** Text and payload bytes kept unacknowledged (in memory and on disk) before lines are dropped. */
  maxPendingBytes?: number;
  /** The lease is gone: nothing more is sent and nothing is kept. Called once. */
  onLeaseLost?: () => void;
  onError?: (error: OutboxError) => void;
  /** Aborting stops sending at once; unacknowledged batches stay in dir for the next start. */
  signal?: AbortSignal;
}

/** A session folder left by an earlier process (recoverOutboxes). */
export interface RecoveredOutbox {
  dir: string;
  sessionId: string;
  leaseToken: string;
  /** Batch files waiting to be sent. */
  batches: number;
}

interface SessionFile {
  sessionId: string;
  leaseToken: string;
  /** The highest sequence the server acknowledged: numbering goes on after it when no batch file is left. */
  storedSequence: number;
}

/** Mutable: renumbering and replacing a refused batch change it in place, so flush's waiters keep holding it. */
interface PendingBatch {
  message: LogBatch;
  /** Text and payload bytes of its lines. */
  bytes: number;
  /** Its encoded size, for the call's bound. */
  encodedBytes: number;
  file: string;
  /** Resolves when its file is written (or failed to be). */
  written: Promise<void>;
  /** Set on the SYSTEM line that took the place of a refused batch. */
  replacement?: boolean;
}

type Stopped = "closed" | "aborted" | "lease_lost" | "refused";

const KINDS: Record<AgentEventKind, LogLineKind> = {
  assistant_message: LogLineKind.ASSISTANT_MESSAGE,
  thinking: LogLineKind.THINKING,
  tool_call: LogLineKind.TOOL_CALL,
  tool_result: LogLineKind.TOOL_RESULT,
  usage: LogLineKind.USAGE,
  result: LogLineKind.RESULT,
  error: LogLineKind.ERROR,
  session_event: LogLineKind.SESSION_EVENT,
};

/** An agent's event as a line for push(). */
export function lineOfAgentEvent(event: AgentEvent): OutboxLine {
  return {
    stream: event.stream === "stderr" ? LogStream.STDERR : LogStream.STDOUT,
    kind: event.kind === undefined ? LogLineKind.TEXT : KINDS[event.kind],
    text: event.text,
    ...(event.payloadJson === undefined ? {} : { payloadJson: event.payloadJson }),
  };
}

/** The folder of one session's outbox under the daemon's outbox folder. */
export function outboxDir(parentDir: string, sessionId: string): string {
  return path.join(parentDir, sessionId);
}

/** The session folders in parentDir left by an earlier process, with their session and lease token, so the daemon can resend them. */
export async function recoverOutboxes(parentDir: string): Promise<RecoveredOutbox[]> {
  let names: string[];
  try {
    names = await readdir(parentDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  const found: RecoveredOutbox[] = [];
  for (const name of names.sort()) {
    const dir = path.join(parentDir, name);
    const session = await readSessionFile(dir);
    if (session === undefined) continue;
    const files = await readdir(dir);
    found.push({ dir, sessionId: session.sessionId, leaseToken: session.leaseToken, batches: files.filter((f) => f.endsWith(BATCH_SUFFIX)).length });
  }
  return found;
}

async function readSessionFile(dir: string): Promise<SessionFile | undefined> {
  try {
    const value = JSON.parse(await readFile(path.join(dir, SESSION_FILE), "utf8")) as Partial<SessionFile>;
    if (typeof value.sessionId !== "string" || typeof value.leaseToken !== "string") return undefined;
    return { sessionId: value.sessionId, leaseToken: value.leaseToken, storedSequence: typeof value.storedSequence === "number" ? value.storedSequence : 0 };
  } catch {
    return undefined;
  }
}

/** Written to a temp file and renamed, so a crash leaves the old file or the new one, whole. */
async function writeWhole(file: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
  const temp = `${file}.${randomUUID().slice(0, 8)}${TEMP_SUFFIX}`;
  await writeFile(temp, data, { mode });
  await rename(temp, file);
}

const batchFileName = (sequence: number) => `${String(sequence).padStart(10, "0")}${BATCH_SUFFIX}`;

/** Bytes of a line as the server counts them: UTF-8 of text and payload. */
const lineBytes = (l: { text: string; payloadJson: string }) => Buffer.byteLength(l.text, "utf8") + Buffer.byteLength(l.payloadJson, "utf8");

// A lone surrogate has no UTF-8 encoding, and the server refuses invalid UTF-8.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
/** What the server refuses in a line, replaced: lone surrogates and NUL. */
const clean = (s: string) => s.replace(LONE_SURROGATE, "\uFFFD").replace(/\0/g, "\uFFFD");

/** The first `maxBytes` bytes of s in UTF-8, not splitting a character. */
function cutUtf8(s: string, maxBytes: number): string {
  const buf = Buffer.from(s, "utf8");
  if (buf.length <= maxBytes) return s;
  let end = Math.max(0, maxBytes);
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--;
  return buf.subarray(0, end).toString("utf8");
}

function isJsonObject(text: string): boolean {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}

/**
 * The line as the server accepts it: no lone surrogate or NUL, a payload that is a JSON object
 * (else dropped), and at most MAX_LINE_BYTES, cut with a marker (a payload too big to keep
 * beside the text is dropped, as JSON cannot be cut).
 */
export function boundedLine(line: OutboxLine): LogLine {
  let text = clean(line.text);
  let payloadJson = line.payloadJson === undefined ? "" : clean(line.payloadJson);
  let note = "";
  if (payloadJson !== "" && !isJsonObject(payloadJson)) {
    note = " [payload_json dropped: not a JSON object]";
    payloadJson = "";
  }
  const total = lineBytes({ text, payloadJson });
  if (total + Buffer.byteLength(note) > MAX_LINE_BYTES) {
    const payloadBytes = Buffer.byteLength(payloadJson, "utf8");
    // Room for the marker and a little text beside a payload; otherwise the payload goes.
    if (payloadBytes > MAX_LINE_BYTES - 1024) {
      note += ` [payload_json of ${payloadBytes} bytes dropped: over ${MAX_LINE_BYTES} bytes]`;
      payloadJson = "";
    }
    const marker = `… [cut: the line was ${total} bytes, over ${MAX_LINE_BYTES}]${note}`;
    text = cutUtf8(text, MAX_LINE_BYTES - Buffer.byteLength(payloadJson, "utf8") - Buffer.byteLength(marker, "utf8")) + marker;
  } else {
    text += note;
  }
  const time = line.time !== undefined && Number.isFinite(line.time.getTime()) ? line.time : new Date();
  return create(LogLineSchema, { stream: line.stream, kind: line.kind ?? LogLineKind.UNSPECIFIED, text, payloadJson, time: timestampFromDate(time) });
}

function systemLine(text: string): LogLine {
  return boundedLine({ stream: LogStream.SYSTEM, kind: LogLineKind.TEXT, text });
}

const storedSequenceOf = (error: unknown): number | undefined => {
  if (!(error instanceof ConnectError)) return undefined;
  const value = error.findDetails(ErrorInfoSchema)[0]?.metadata.stored_sequence;
  const n = value === undefined ? NaN : Number(value);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
};

const fieldsOf = (error: ConnectError): string[] => error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => v.field));

/** A failure about the call itself rather than one batch (the session id, the token). */
const isCallLevel = (fields: string[]) => fields.length > 0 && fields.every((f) => !f.startsWith("batches"));

/**
 * One session's outbox: push() lines as the agent prints them; flush() or close() when it is
 * done. One outbox per folder at a time.
 */
export class LogOutbox {
  private readonly sessionId: string;
  private readonly leaseToken: string;
  private readonly dir: string;
  private readonly worker: Client<typeof WorkerService>;
  private readonly maxBatchLines: number;
  private readonly maxBatchBytes: number;
  private readonly flushMs: number;
  private readonly maxPendingBytes: number;
  private readonly onLeaseLost: () => void;
  private readonly onError: (error: OutboxError) => void;

  /** The batch being filled. */
  private current: LogLine[] = [];
  private currentBytes = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  /** Cut and unacknowledged, in sequence order. */
  private readonly queue: PendingBatch[] = [];
  /** Text and payload bytes of current and queue. */
  private pendingBytes = 0;
  private nextSequence: number;
  private stored: number;
  /** Lines dropped since the outbox filled up; while set, every new line is dropped until an acknowledgement makes room. */
  private dropping = false;
  private droppedLines = 0;
  /** After InvalidArgument on a call of several batches: send one at a time up to this sequence, to find the refused one. */
  private singleUntil = 0;

  private stopped: Stopped | undefined;
  private closing = false;
  /** Ends backoff sleeps and the in-flight call when the outbox stops. */
  private readonly stopController = new AbortController();
  private wakeSender: (() => void) | undefined;
  private readonly sender: Promise<void>;
  private readonly flushWaiters: { batch: PendingBatch; resolve: () => void }[] = [];
  /** Every file operation, one after another, so files appear and go in the order they were decided. */
  private disk: Promise<void> = Promise.resolve();
  private closed: Promise<void> | undefined;
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort = () => this.stop("aborted");

  private constructor(options: OutboxOptions, recovered: PendingBatch[], storedSequence: number) {
    this.sessionId = options.sessionId;
    this.leaseToken = options.leaseToken;
    this.dir = options.dir;
    this.worker = options.worker;
    this.maxBatchLines = Math.max(1, Math.min(options.maxBatchLines ?? DEFAULT_MAX_BATCH_LINES, SERVER_MAX_BATCH_LINES));
    this.maxBatchBytes = Math.max(1, Math.min(options.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES, SERVER_MAX_BATCH_BYTES));
    this.flushMs = options.flushMs ?? DEFAULT_FLUSH_MS;
    this.maxPendingBytes = options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    // A callback that throws must not stop the sending.
    const onLeaseLost = options.onLeaseLost ?? (() => {});
    const onError = options.onError ?? (() => {});
    this.onLeaseLost = () => {
      try {
        onLeaseLost();
      } catch {
        // the caller's problem, not the outbox's
      }
    };
    this.onError = (error) => {
      try {
        onError(error);
      } catch {
        // the caller's problem, not the outbox's
      }
    };
    this.signal = options.signal;
    this.stored = storedSequence;
    this.queue.push(...recovered);
    this.pendingBytes = recovered.reduce((n, b) => n + b.bytes, 0);
    this.nextSequence = Math.max(storedSequence, recovered.at(-1)?.message.sequence ?? 0) + 1;
    if (options.signal?.aborted) this.stop("aborted");
    else options.signal?.addEventListener("abort", this.onAbort, { once: true });
    this.sender = this.sendLoop().catch((error: unknown) => {
      this.onError({ kind: "internal", sessionId: this.sessionId, message: `the outbox stopped sending: ${(error as Error).message}` });
      this.stop("refused");
    });
  }

  /**
   * Opens the outbox of a session in dir (created if need be, mode 0700). Batches left there
   * by an earlier process for the same session are sent first, and numbering goes on after
   * them. The lease token is kept in dir (session.json, mode 0600).
   */
  static async open(options: OutboxOptions): Promise<LogOutbox> {
    await mkdir(options.dir, { recursive: true, mode: 0o700 });
    const previous = await readSessionFile(options.dir);
    if (previous !== undefined && previous.sessionId !== options.sessionId) {
      throw new Error(`the outbox folder ${options.dir} belongs to session ${previous.sessionId}, not ${options.sessionId}`);
    }
    const storedSequence = previous?.storedSequence ?? 0;
    const recovered: PendingBatch[] = [];
    for (const name of (await readdir(options.dir)).sort()) {
      const file = path.join(options.dir, name);
      // A temp file is a write that a crash cut short: its batch was never sent.
      if (name.endsWith(TEMP_SUFFIX)) {
        await rm(file, { force: true });
        continue;
      }
      if (!name.endsWith(BATCH_SUFFIX)) continue;
      let message: LogBatch;
      try {
        message = fromBinary(LogBatchSchema, await readFile(file));
      } catch {
        options.onError?.({ kind: "disk", sessionId: options.sessionId, message: `the batch file ${name} could not be read and was removed` });
        await rm(file, { force: true });
        continue;
      }
      if (message.sequence <= storedSequence) {
        // Acknowledged already; the crash came before its file went.
        await rm(file, { force: true });
        continue;
      }
      recovered.push({
        message,
        bytes: message.lines.reduce((n, l) => n + lineBytes(l), 0),
        encodedBytes: toBinary(LogBatchSchema, message).length,
        file,
        written: Promise.resolve(),
      });
    }
    recovered.sort((a, b) => a.message.sequence - b.message.sequence);
    await writeWhole(path.join(options.dir, SESSION_FILE), sessionFileText({ sessionId: options.sessionId, leaseToken: options.leaseToken, storedSequence }));
    return new LogOutbox(options, recovered, storedSequence);
  }

  /** The highest sequence the server has acknowledged. */
  get storedSequence(): number {
    return this.stored;
  }

  /** Lines dropped since the outbox filled up and not yet reported by a SYSTEM line. */
  get droppedLineCount(): number {
    return this.droppedLines;
  }

  /** Adds a line; never blocks, never throws. A line that does not fit in maxPendingBytes is dropped and counted. */
  push(line: OutboxLine): void {
    if (this.stopped !== undefined || this.closing) return;
    try {
      const bounded = boundedLine(line);
      const bytes = lineBytes(bounded);
      // With nothing pending no acknowledgement is coming to end the dropping: room is here now.
      if (this.dropping && this.pendingBytes === 0) this.sayDropped();
      if (this.dropping || this.pendingBytes + bytes > this.maxPendingBytes) {
        this.dropping = true;
        this.droppedLines++;
        return;
      }
      this.add(bounded, bytes);
    } catch (error) {
      this.onError({ kind: "internal", sessionId: this.sessionId, lines: 1, message: `a line could not be added: ${(error as Error).message}` });
    }
  }

  /** Resolves when every line pushed so far is acknowledged, or the outbox stopped (lease lost, closed, aborted). */
  flush(): Promise<void> {
    this.cut();
    const last = this.queue.at(-1);
    if (last === undefined || this.stopped !== undefined) return Promise.resolve();
    return new Promise((resolve) => {
      this.flushWaiters.push({ batch: last, resolve });
      this.settleWaiters();
    });
  }

  /**
   * Flushes, then stops: timers end, and dir is removed when everything was acknowledged. While
   * the server is away this waits; abort the signal to give up (then dir keeps what is left,
   * for the next start).
   */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.closing = true;
      // Again while acknowledgements add lines (the SYSTEM line about dropped ones).
      while (this.stopped === undefined && (this.queue.length > 0 || this.current.length > 0)) await this.flush();
      const everythingSent = this.queue.length === 0 && this.current.length === 0 && this.stopped === undefined;
      this.stop(this.stopped ?? "closed");
      await this.sender;
      if (everythingSent) this.onDisk(() => rm(this.dir, { recursive: true, force: true }), "the outbox folder could not be removed");
      await this.disk;
    })();
    return this.closed;
  }

  private add(line: LogLine, bytes: number): void {
    if (this.current.length > 0 && this.currentBytes + bytes > this.maxBatchBytes) this.cut();
    this.current.push(line);
    this.currentBytes += bytes;
    this.pendingBytes += bytes;
    if (this.current.length >= this.maxBatchLines || this.currentBytes >= this.maxBatchBytes) this.cut();
    else this.flushTimer ??= setTimeout(() => this.cut(), this.flushMs);
  }

  /** The batch being filled gets the next sequence, goes to disk and joins the queue. */
  private cut(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.current.length === 0 || this.stopped !== undefined) return;
    const message = create(LogBatchSchema, { sequence: this.nextSequence++, lines: this.current });
    const bytes = this.currentBytes;
    this.current = [];
    this.currentBytes = 0;
    this.queue.push(this.writeBatch(message, bytes));
    this.wakeSender?.();
  }

  private writeBatch(message: LogBatch, bytes: number): PendingBatch {
    const batch = { message, bytes } as PendingBatch;
    this.setMessage(batch, message);
    return batch;
  }

  /** Gives the batch its message and writes its file. */
  private setMessage(batch: PendingBatch, message: LogBatch): void {
    const encoded = toBinary(LogBatchSchema, message);
    const file = path.join(this.dir, batchFileName(message.sequence));
    batch.message = message;
    batch.encodedBytes = encoded.length;
    batch.file = file;
    batch.written = this.onDisk(() => writeWhole(file, encoded), `batch ${message.sequence} could not be written`);
  }

  /** Queues a file operation after the others; a failure is reported, never thrown. */
  private onDisk(op: () => Promise<void>, what: string): Promise<void> {
    this.disk = this.disk.then(op).catch((error: unknown) => {
      this.onError({ kind: "disk", sessionId: this.sessionId, message: `${what}: ${(error as Error).message}` });
    });
    return this.disk;
  }

  private stop(why: Stopped): void {
    if (this.stopped !== undefined) return;
    this.stopped = why;
    // A daemon-wide signal outlives its outboxes.
    this.signal?.removeEventListener("abort", this.onAbort);
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.stopController.abort();
    this.wakeSender?.();
    for (const w of this.flushWaiters.splice(0)) w.resolve();
  }

  private settleWaiters(): void {
    for (let i = this.flushWaiters.length - 1; i >= 0; i--) {
      const w = this.flushWaiters[i]!;
      if (this.stopped !== undefined || !this.queue.includes(w.batch)) {
        this.flushWaiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  /** The server has everything up to `sequence`: those batches and their files go. */
  private acknowledge(sequence: number): void {
    if (sequence > this.stored) {
      this.stored = sequence;
      // Where numbering goes on after a restart, written before the files that said it go.
      const stateFile = path.join(this.dir, SESSION_FILE);
      const state = sessionFileText({ sessionId: this.sessionId, leaseToken: this.leaseToken, storedSequence: sequence });
      this.onDisk(() => writeWhole(stateFile, state), "the outbox's session file could not be written");
    }
    // The server may know more than this outbox numbered (its session file lost): number after it.
    this.nextSequence = Math.max(this.nextSequence, sequence + 1);
    while (this.queue.length > 0 && this.queue[0]!.message.sequence <= sequence) {
      const done = this.queue.shift()!;
      this.pendingBytes -= done.bytes;
      this.onDisk(() => unlink(done.file).catch(ignoreMissing), `the file of batch ${done.message.sequence} could not be removed`);
    }
    this.settleWaiters();
    this.sayDropped();
  }

  /** After lines were dropped, once there is room: one SYSTEM line says how many. */
  private sayDropped(): void {
    if (!this.dropping) return;
    const line = systemLine(
      `${this.droppedLines} lines of output were dropped: the server did not acknowledge the log for a while and the worker's outbox was full (${this.maxPendingBytes} bytes)`,
    );
    const bytes = lineBytes(line);
    if (this.pendingBytes + bytes > this.maxPendingBytes) return;
    this.dropping = false;
    this.droppedLines = 0;
    this.add(line, bytes);
  }

  /** The batches of the next call: from the head, within the call's bounds. */
  private nextCall(): PendingBatch[] {
    const call: PendingBatch[] = [];
    let bytes = 0;
    for (const b of this.queue) {
      if (call.length > 0 && (call.length >= SERVER_MAX_CALL_BATCHES || bytes + b.encodedBytes > MAX_CALL_BYTES)) break;
      call.push(b);
      bytes += b.encodedBytes;
      if (b.message.sequence <= this.singleUntil) break;
    }
    return call;
  }

  private async sendLoop(): Promise<void> {
    let attempt = 0;
    while (this.stopped === undefined) {
      if (this.queue.length === 0) {
        await new Promise<void>((resolve) => (this.wakeSender = resolve));
        this.wakeSender = undefined;
        continue;
      }
      const call = this.nextCall();
      await Promise.all(call.map((b) => b.written));
      if (this.stopped !== undefined) return;
      try {
        const res = await this.worker.appendLogs(
          { sessionId: this.sessionId, leaseToken: this.leaseToken, batches: call.map((b) => b.message) },
          { signal: this.stopController.signal },
        );
        attempt = 0;
        this.acknowledge(res.storedSequence);
        continue;
      } catch (error) {
        if (this.stopped !== undefined) return;
        if (this.handleRefusal(error, call)) {
          attempt = 0;
          continue;
        }
      }
      await sleep(backoffMs(++attempt), this.stopController.signal);
    }
  }

  /** Deals with a failed call; true when the next call can go at once, false to back off first. */
  private handleRefusal(error: unknown, call: PendingBatch[]): boolean {
    const first = call[0]!.message.sequence;
    const last = call.at(-1)!.message.sequence;
    if (isTransient(error)) return false;
    if (isLeaseLost(error)) {
      this.leaseLost();
      return true;
    }
    const connectError = error instanceof ConnectError ? error : undefined;
    const code = connectError === undefined ? undefined : Code[connectError.code];
    const reason = reasonOf(error);
    const stored = storedSequenceOf(error);
    if ((reason === "SEQUENCE_GAP" || reason === "SEQUENCE_CONFLICT") && stored !== undefined) {
      if (reason === "SEQUENCE_CONFLICT") {
        // Under a stored sequence the server keeps what it has (the same batch masked against
        // other secrets, say); ours up to there go, the rest follow it.
        const dropped = this.queue.filter((b) => b.message.sequence <= stored).reduce((n, b) => n + b.message.lines.length, 0);
        this.onError({ kind: "sequence_conflict", sessionId: this.sessionId, firstSequence: first, lastSequence: stored, lines: dropped, code, reason, message: `the server holds other lines under sequences up to ${stored}; this worker's were dropped` });
      }
      this.acknowledge(stored);
      const head = this.queue[0];
      if (head !== undefined && head.message.sequence > stored + 1) {
        // The server lacks batches it acknowledged before (its database went back): what is
        // left follows what it has, or nothing would ever be accepted again.
        this.onError({ kind: "sequences_lost", sessionId: this.sessionId, firstSequence: stored + 1, lastSequence: head.message.sequence - 1, code, reason, message: `the server has sequences up to ${stored} only; later batches are renumbered from ${stored + 1}` });
        this.renumber(stored + 1);
      }
      return true;
    }
    if (connectError?.code === Code.InvalidArgument) {
      const fields = fieldsOf(connectError);
      if (isCallLevel(fields) || (call.length === 1 && call[0]!.replacement === true)) {
        this.onError({ kind: "outbox_refused", sessionId: this.sessionId, firstSequence: first, lastSequence: last, code, reason, fields, message: "the server refuses this session's appends; the outbox stops and keeps nothing" });
        this.discard("refused");
        return true;
      }
      if (call.length > 1) {
        // One call is all or nothing: send them one by one to find the refused batch.
        this.singleUntil = last;
        return true;
      }
      this.replaceRefused(call[0]!, code, reason, fields);
      return true;
    }
    this.onError({ kind: "send_failed", sessionId: this.sessionId, firstSequence: first, lastSequence: last, code, reason, message: `AppendLogs failed (${code ?? "not a ConnectError"}); trying again`, detail: connectError?.rawMessage ?? String(error) });
    return false;
  }

  /**
   * A batch the server refuses keeps its sequence with one SYSTEM line in place of its lines:
   * the server accepts only the sequence after the one it has, so skipping it would refuse
   * every later batch as a gap.
   */
  private replaceRefused(refused: PendingBatch, code: string | undefined, reason: string, fields: string[]): void {
    const sequence = refused.message.sequence;
    const lines = refused.message.lines.length;
    this.onError({ kind: "batch_refused", sessionId: this.sessionId, firstSequence: sequence, lastSequence: sequence, lines, code, reason, fields, message: `the server refused batch ${sequence}; its ${lines} lines were dropped` });
    const line = systemLine(`${lines} lines of output were dropped: the server refused them (${code ?? "error"}${fields.length > 0 ? `: ${fields.slice(0, 5).join(", ")}` : ""})`);
    const bytes = lineBytes(line);
    this.pendingBytes += bytes - refused.bytes;
    refused.bytes = bytes;
    refused.replacement = true;
    this.setMessage(refused, create(LogBatchSchema, { sequence, lines: [line] }));
  }

  /** The queued batches, numbered from `from` on (always down: the server has less than they assumed). */
  private renumber(from: number): void {
    // In order, each new file taking the name of one already rewritten: a crash midway leaves every batch in some file.
    const oldFiles = this.queue.map((b) => b.file);
    this.queue.forEach((b, i) => this.setMessage(b, create(LogBatchSchema, { sequence: from + i, lines: b.message.lines })));
    const newFiles = new Set(this.queue.map((b) => b.file));
    for (const file of oldFiles) if (!newFiles.has(file)) this.onDisk(() => unlink(file).catch(ignoreMissing), "an old batch file could not be removed");
    this.nextSequence = from + this.queue.length;
    this.singleUntil = 0;
  }

  private leaseLost(): void {
    this.discard("lease_lost");
    this.onLeaseLost();
  }

  /** Stops and keeps nothing: the queue, the batch being filled and the folder go. */
  private discard(why: Stopped): void {
    this.queue.splice(0);
    this.current = [];
    this.currentBytes = 0;
    this.pendingBytes = 0;
    this.stop(why);
    this.onDisk(() => rm(this.dir, { recursive: true, force: true }), "the outbox folder could not be removed");
  }
}

function sessionFileText(session: SessionFile): string {
  return `${JSON.stringify(session)}\n`;
}

function ignoreMissing(error: NodeJS.ErrnoException): void {
  if (error.code !== "ENOENT") throw error;
}

/** Opens a session's log outbox (LogOutbox.open). */
export const openOutbox = (options: OutboxOptions): Promise<LogOutbox> => LogOutbox.open(options);
