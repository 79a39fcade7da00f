// StreamLog: a session's log replayed from a sequence, then followed live, ending with the
// session's end. Every reader of a session shares one reader of the database (shared-feed.ts):
// it reads each new batch once into a bounded buffer that every stream takes the same batch
// objects from (so the API encodes each batch's message once), and a stream behind the buffer
// (a slow reader, or one that reconnects from an old sequence) catches up from the database on
// its own, without slowing the worker or the other readers.
//
// No gap and no duplicate: a stream joins the feed (subscribes) before it reads anything, and
// takes only batches after the last sequence it sent. The feed is woken when a batch commits
// (here, or by NOTIFY from the replica the worker appends through, carrying the session id and
// sequence, never text), when the session ends, and by its own poll, in case a NOTIFY was lost.
// The end is an item of the feed, after the last batch: the feed reads the session before its
// batches, and an append holds the session's row until it commits (store/log-batches.ts
// lockForAppend), so once the session reads as ended every batch it will ever have is stored.
//
// TTY requests (questions the agent asked) are not batches: each stream reads the session's
// requests when one is raised or answered (the key `<session id>:tty` of the logs channel),
// when it opens, and with each keep-alive, and sends a request again whenever its status changed.
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { Logger } from "../logger.js";
import { ACTIVE_SESSION_STATES, type SessionState } from "../model/tasks.js";
import type { TtyInputRequest } from "../model/tty.js";
import * as sessions from "../store/agent-sessions.js";
import { listBatches, type StoredBatch } from "../store/log-batches.js";
import { ttyRequestsOf } from "../store/tty-requests.js";
import type { Core } from "./context.js";
import { invalidArgument, notFound } from "./errors.js";
import type { NotifierChannel } from "./notifier.js";
import { SharedFeeds } from "./shared-feed.js";
import { Violations } from "./validation.js";
import { waitForWake } from "./wait.js";

/** Batches kept per session; a stream further behind reads the database instead. */
const BUFFER_SIZE = 512;
const READ_BATCH = 200;
/** The end's place in the feed: after every sequence. */
const END_ID = Number.MAX_SAFE_INTEGER;

export interface SessionEnd {
  state: SessionState;
  exitCode: number | null;
  errorMessage: string;
  lastSequence: number;
}

/** An item of a session's feed: a stored batch (id: its sequence), or the session's end. */
export type LogFeedItem = { id: number; batch: StoredBatch; end?: undefined } | { id: typeof END_ID; end: SessionEnd; batch?: undefined };

/** The key of the logs channel a session's TTY requests wake. */
export function ttyKey(sessionId: string): string {
  return `${sessionId}:tty`;
}

const ended = (state: SessionState) => !(ACTIVE_SESSION_STATES as readonly SessionState[]).includes(state);

/** The session's batches after `afterId`, then its end once it has ended and every batch is read. */
async function readLog(db: Kysely<Database>, sessionId: string, afterId: number, limit: number): Promise<LogFeedItem[]> {
  if (afterId >= END_ID) return [];
  // The session before its batches: see the top of this file.
  const session = await sessions.getSession(db, sessionId);
  if (session === undefined) {
    // Deleted with its task: nothing more will come.
    return [{ id: END_ID, end: { state: "cancelled", exitCode: null, errorMessage: "its task was deleted", lastSequence: afterId } }];
  }
  const batches = await listBatches(db, sessionId, afterId, limit);
  const items: LogFeedItem[] = batches.map((batch) => ({ id: batch.sequence, batch }));
  // Ended before its batches were read: every batch it has is among them.
  if (ended(session.state) && batches.length < limit) {
    const lastSequence = batches.at(-1)?.sequence ?? afterId;
    // A stopped or cancelled session has no error, but the reason it was stopped.
    const errorMessage = session.errorMessage ?? session.stopReason ?? "";
    items.push({ id: END_ID, end: { state: session.state, exitCode: session.exitCode, errorMessage, lastSequence } });
  }
  return items;
}

/** The shared readers of session logs, one per session that streams follow now. */
export class LogFeeds {
  private readonly feeds: SharedFeeds<LogFeedItem>;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly logs: NotifierChannel,
    pollMs: number,
    logger: Logger,
  ) {
    this.feeds = new SharedFeeds({ pollMs, bufferSize: BUFFER_SIZE, batchSize: READ_BATCH, logger, what: "a session's log", keyField: "session_id" });
  }

  async join(sessionId: string, lastSequence: number, wake: () => void) {
    const source = {
      readAfter: (afterId: number, limit: number) => readLog(this.db, sessionId, afterId, limit),
      latestId: () => Promise.resolve(lastSequence),
      subscribe: (wakeFeed: () => void) => this.logs.subscribe(sessionId, wakeFeed),
    };
    const joined = await this.feeds.join(sessionId, source, wake);
    // A read now, so that a session that ended before anyone listened ends its streams at once.
    void joined.feed.read();
    return joined;
  }

  /** Streams following a session's log now, on this server. */
  get streams(): number {
    return this.feeds.streams;
  }
}

export type LogStreamItem = { batch: LogFeedItem & { batch: StoredBatch } } | { tty: TtyInputRequest } | { end: SessionEnd } | { keepAlive: true };

/**
 * StreamLog for the session's owner: the batches after `afterSequence`, then each new one, the
 * TTY requests as they are raised and answered, keep-alives between (the first message comes at
 * once: a keep-alive when nothing is stored after the sequence), and last the session's end.
 * Ends early when `signal` aborts (the reader left, or the server shuts down).
 */
export async function* streamLog(
  core: Core,
  ownerId: string,
  input: { sessionId: string; afterSequence: number },
  signal: AbortSignal,
): AsyncGenerator<LogStreamItem> {
  const v = new Violations();
  const sessionId = v.id("session_id", input.sessionId);
  v.throwIfAny();
  const session = await sessions.getSession(core.db, sessionId);
  if (session === undefined || session.ownerId !== ownerId) throw notFound("session", sessionId);
  if (input.afterSequence > session.lastLogSequence) {
    // No stream of this session sent it: following from it would skip every batch up to it.
    throw invalidArgument([
      { field: "after_sequence", description: `is past the session's last stored sequence, ${session.lastLogSequence}; use 0, or the last sequence a stream or GetLog gave` },
    ]);
  }

  if (ended(session.state)) {
    // Over already: its stored batches from the database, then its end; no feed to follow.
    yield* replayEnded(core, sessionId, input.afterSequence);
    return;
  }

  let wake: (() => void) | undefined;
  let pending = false;
  let ttyPending = true;
  const { feed, leave } = await core.logFeeds.join(sessionId, session.lastLogSequence, () => {
    pending = true;
    wake?.();
  });
  const leaveTty = core.logs.subscribe(ttyKey(sessionId), () => {
    ttyPending = true;
    wake?.();
  });
  /** What this stream sent of each TTY request: its status. */
  const ttySent = new Map<string, string>();
  async function* ttyChanges(): AsyncGenerator<LogStreamItem> {
    ttyPending = false;
    for (const request of await ttyRequestsOf(core.db, sessionId)) {
      if (ttySent.get(request.id) === request.status) continue;
      ttySent.set(request.id, request.status);
      yield { tty: request };
    }
  }
  try {
    let after = input.afterSequence;
    // Never sent yet: the first message goes at once.
    let lastSent = -Infinity;
    while (!signal.aborted) {
      pending = false;
      if (ttyPending) {
        for await (const item of ttyChanges()) {
          yield item;
          lastSent = performance.now();
        }
      }
      const items = await feed.itemsAfter(after);
      for (const item of items) {
        if (item.end !== undefined) {
          // The questions' last word (a pending one of an ended session is cancelled), then the end.
          yield* ttyChanges();
          yield { end: item.end };
          return;
        }
        yield { batch: item };
        after = item.id;
        lastSent = performance.now();
      }
      if (items.length > 0 || pending || ttyPending) continue;
      const keepAliveIn = core.streams.keepAliveMs - (performance.now() - lastSent);
      if (keepAliveIn <= 0) {
        // A TTY notification lost between replicas shows up by the next keep-alive (the opening one read them just now).
        if (lastSent !== -Infinity) ttyPending = true;
        yield { keepAlive: true };
        lastSent = performance.now();
        continue;
      }
      // No poll of its own: the feed polls, once for all its streams, and wakes them.
      await waitForWake(signal, keepAliveIn, (w) => (wake = w));
    }
  } finally {
    leaveTty();
    leave();
  }
}

/** An ended session's stream: its batches after the sequence, its TTY requests as they ended, and its end. */
async function* replayEnded(core: Core, sessionId: string, afterSequence: number): AsyncGenerator<LogStreamItem> {
  let after = afterSequence;
  for (;;) {
    const items = await readLog(core.db, sessionId, after, READ_BATCH);
    if (items.length === 0) return;
    for (const item of items) {
      if (item.end !== undefined) {
        for (const request of await ttyRequestsOf(core.db, sessionId)) yield { tty: request };
        yield { end: item.end };
        return;
      }
      yield { batch: item };
      after = item.id;
    }
  }
}
