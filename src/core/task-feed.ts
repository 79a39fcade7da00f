// One reader per watched workspace: however many WatchTasks streams follow a workspace, a
// change is read from the database once (its event and the task as it is then) and kept in a
// short in-memory buffer that every stream reads from. A stream whose cursor is older than the
// buffer catches up from the database on its own, then joins. The feed is woken by the
// in-process notifier (this replica's changes, and NOTIFY from others) and by its own poll, and
// lives while it has streams.
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { Logger } from "../logger.js";
import * as taskEvents from "../store/task-events.js";
import * as store from "../store/tasks.js";
import type * as model from "./model/tasks.js";
import type { NotifierChannel } from "./notifier.js";

export interface FeedItem {
  id: number;
  type: model.TaskChangeType;
  taskId: string;
  /** The task when the feed read the change; undefined when deleted (then or since). */
  task: model.Task | undefined;
  at: Date;
}

/**
 * Changes kept per workspace; a stream further behind reads the database instead. Each holds a
 * whole task, which can be large, so the buffer is kept short.
 */
const BUFFER_SIZE = 256;
const READ_BATCH = 200;

/** Reads the changes after `afterId` (at most READ_BATCH), each with its task as it is now. */
export async function readChanges(db: Kysely<Database>, ownerId: string, workspaceId: string, afterId: number): Promise<FeedItem[]> {
  const events = await taskEvents.listTaskEvents(db, ownerId, workspaceId, afterId, READ_BATCH);
  const items: FeedItem[] = [];
  for (const e of events) {
    const task = e.type === "deleted" ? undefined : await store.getTask(db, ownerId, e.taskId);
    items.push({ id: e.id, type: e.type, taskId: e.taskId, task, at: e.createdAt });
  }
  return items;
}

class Feed {
  private readonly buffer: FeedItem[] = [];
  /** Every change after `floor`, up to `lastId`, is in the buffer. */
  private floor: number;
  private lastId: number;
  private reading: Promise<void> | undefined;
  private readAgain = false;
  readonly streams = new Set<() => void>();
  private readonly stopNotifier: () => void;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly ownerId: string,
    private readonly workspaceId: string,
    startId: number,
    notifier: NotifierChannel,
    pollMs: number,
    private readonly logger: Logger,
  ) {
    this.floor = this.lastId = startId;
    this.stopNotifier = notifier.subscribe(workspaceId, () => void this.read());
    this.timer = setInterval(() => void this.read(), pollMs);
    this.timer.unref();
  }

  /** Whether the buffer holds everything after `afterId`. */
  covers(afterId: number): boolean {
    return afterId >= this.floor;
  }

  /** The buffered changes after `afterId`; call only when covers(afterId). */
  after(afterId: number): FeedItem[] {
    // The buffer is in id order; most streams are at its end, so look from there.
    let i = this.buffer.length;
    while (i > 0 && this.buffer[i - 1]!.id > afterId) i--;
    return this.buffer.slice(i);
  }

  /** Reads new changes into the buffer (one read at a time), then wakes every stream. */
  read(): Promise<void> {
    if (this.reading !== undefined) {
      // A change may have committed after the running read's query: read once more after it.
      this.readAgain = true;
      return this.reading;
    }
    this.reading = (async () => {
      try {
        do {
          this.readAgain = false;
          for (;;) {
            const items = await readChanges(this.db, this.ownerId, this.workspaceId, this.lastId);
            for (const item of items) {
              this.buffer.push(item);
              this.lastId = item.id;
            }
            if (this.buffer.length > BUFFER_SIZE) this.floor = this.buffer.splice(0, this.buffer.length - BUFFER_SIZE).at(-1)!.id;
            if (items.length < READ_BATCH) break;
          }
        } while (this.readAgain);
      } catch (error) {
        // The streams keep waiting; the next wake-up or poll reads again.
        this.logger.warn({ err: error, workspace_id: this.workspaceId }, "reading task changes failed");
      } finally {
        this.reading = undefined;
        for (const wake of this.streams) wake();
      }
    })();
    return this.reading;
  }

  close(): void {
    clearInterval(this.timer);
    this.stopNotifier();
  }
}

export class TaskFeeds {
  private readonly feeds = new Map<string, Feed>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly notifier: NotifierChannel,
    private readonly pollMs: number,
    private readonly logger: Logger,
  ) {}

  /**
   * Joins the workspace's feed; `wake` is called after each read. Returns the feed and the
   * function that leaves it (call it in `finally`).
   */
  async join(ownerId: string, workspaceId: string, wake: () => void): Promise<{ feed: Feed; leave: () => void }> {
    let feed = this.feeds.get(workspaceId);
    if (feed === undefined) {
      const startId = await taskEvents.latestTaskEventId(this.db, workspaceId);
      // Another stream may have made the feed while this one read.
      feed = this.feeds.get(workspaceId);
      if (feed === undefined) {
        feed = new Feed(this.db, ownerId, workspaceId, startId, this.notifier, this.pollMs, this.logger);
        this.feeds.set(workspaceId, feed);
      }
    }
    const joined = feed;
    joined.streams.add(wake);
    return {
      feed: joined,
      leave: () => {
        joined.streams.delete(wake);
        if (joined.streams.size === 0 && this.feeds.get(workspaceId) === joined) {
          joined.close();
          this.feeds.delete(workspaceId);
        }
      },
    };
  }

  /** Streams following a feed now, on this server. */
  get streams(): number {
    let n = 0;
    for (const feed of this.feeds.values()) n += feed.streams.size;
    return n;
  }
}
