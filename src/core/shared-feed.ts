// One reader per key, shared by every stream that follows the key (WatchTasks per workspace;
// the log hub per session): an item is read from the database once and kept in a short
// in-memory buffer that every stream reads from, so a thousand streams cost one query, not a
// thousand. A stream whose cursor is older than the buffer catches up from the database on its
// own, then joins. The reader is woken by the notifier (this replica's changes, and NOTIFY from
// others) and by its own poll, wakes its streams after each read, and lives while it has streams.
// Every stream gets the same item objects from the buffer, so the API can convert an item to
// its message once for all of them (api/task-service.ts keeps the message per item).

import type { Logger } from "../logger.js";

/** What a key's reader reads: items in the order of their id, which is the streams' cursor. */
export interface FeedSource<T extends { id: number }> {
  /** The key's items after `afterId`, oldest first, at most `limit`. */
  readAfter(afterId: number, limit: number): Promise<T[]>;
  /** The key's newest id: where a reader that starts now begins. */
  latestId(): Promise<number>;
  /** Subscribes to the key's wake-ups; returns the unsubscribe function. */
  subscribe(wake: () => void): () => void;
}

export interface SharedFeedOptions {
  /** How often a reader looks for new items itself (a NOTIFY may be lost). */
  pollMs: number;
  /** Items kept per key; a stream further behind reads the database instead. */
  bufferSize: number;
  /** Most items one read asks for. */
  batchSize: number;
  logger: Logger;
  /** For the warning when a read fails: what is read ("task changes") and the key's log field ("workspace_id"). */
  what: string;
  keyField: string;
}

/** A key's reader and its buffer. */
export class SharedFeed<T extends { id: number }> {
  private readonly buffer: T[] = [];
  /** Every item after `floor`, up to `lastId`, is in the buffer. */
  private floor: number;
  private lastId: number;
  private reading: Promise<void> | undefined;
  private readAgain = false;
  /** The wake functions of the streams following this key. */
  readonly streams = new Set<() => void>();
  private readonly unsubscribe: () => void;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly key: string,
    private readonly source: FeedSource<T>,
    startId: number,
    private readonly options: SharedFeedOptions,
  ) {
    this.floor = this.lastId = startId;
    this.unsubscribe = source.subscribe(() => void this.read());
    this.timer = setInterval(() => void this.read(), options.pollMs);
    this.timer.unref();
  }

  /** Whether the buffer holds everything after `afterId`. */
  covers(afterId: number): boolean {
    return afterId >= this.floor;
  }

  /** The buffered items after `afterId`; call only when covers(afterId). */
  after(afterId: number): T[] {
    // The buffer is in id order; most streams are at its end, so look from there.
    let i = this.buffer.length;
    while (i > 0 && this.buffer[i - 1]!.id > afterId) i--;
    return this.buffer.slice(i);
  }

  /** The items after `afterId`: from the buffer, or for a stream behind it, the next batch from the database. */
  async itemsAfter(afterId: number): Promise<T[]> {
    return this.covers(afterId) ? this.after(afterId) : this.source.readAfter(afterId, this.options.batchSize);
  }

  /** Reads new items into the buffer (one read at a time), then wakes every stream. */
  read(): Promise<void> {
    if (this.reading !== undefined) {
      // An item may have committed after the running read's query: read once more after it.
      this.readAgain = true;
      return this.reading;
    }
    this.reading = (async () => {
      try {
        do {
          this.readAgain = false;
          for (;;) {
            const items = await this.source.readAfter(this.lastId, this.options.batchSize);
            for (const item of items) {
              this.buffer.push(item);
              this.lastId = item.id;
            }
            const over = this.buffer.length - this.options.bufferSize;
            if (over > 0) this.floor = this.buffer.splice(0, over).at(-1)!.id;
            if (items.length < this.options.batchSize) break;
          }
        } while (this.readAgain);
      } catch (error) {
        // The streams keep waiting; the next wake-up or poll reads again.
        this.options.logger.warn({ err: error, [this.options.keyField]: this.key }, `reading ${this.options.what} failed`);
      } finally {
        this.reading = undefined;
        for (const wake of this.streams) wake();
      }
    })();
    return this.reading;
  }

  close(): void {
    clearInterval(this.timer);
    this.unsubscribe();
  }
}

/** The readers of one kind of item, one per key that streams follow now. */
export class SharedFeeds<T extends { id: number }> {
  private readonly feeds = new Map<string, SharedFeed<T>>();

  constructor(private readonly options: SharedFeedOptions) {}

  /**
   * Joins the key's reader, starting one on `source` when the key has none; `wake` is called
   * after each read. Returns the reader and the function that leaves it (call it in `finally`);
   * the last stream to leave stops the reader.
   */
  async join(key: string, source: FeedSource<T>, wake: () => void): Promise<{ feed: SharedFeed<T>; leave: () => void }> {
    let feed = this.feeds.get(key);
    if (feed === undefined) {
      const startId = await source.latestId();
      // Another stream may have started the reader while this one read.
      feed = this.feeds.get(key);
      if (feed === undefined) {
        feed = new SharedFeed(key, source, startId, this.options);
        this.feeds.set(key, feed);
      }
    }
    const joined = feed;
    joined.streams.add(wake);
    return {
      feed: joined,
      leave: () => {
        joined.streams.delete(wake);
        if (joined.streams.size === 0 && this.feeds.get(key) === joined) {
          joined.close();
          this.feeds.delete(key);
        }
      },
    };
  }

  /** Streams following a reader now, on this server. */
  get streams(): number {
    let n = 0;
    for (const feed of this.feeds.values()) n += feed.streams.size;
    return n;
  }
}
