// WatchTasks' shared readers (see shared-feed.ts): one per watched workspace, reading the
// workspace's task changes, each with the task as it is then.
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import type { Logger } from "../logger.js";
import * as taskEvents from "../store/task-events.js";
import * as store from "../store/tasks.js";
import type * as model from "../model/tasks.js";
import type { NotifierChannel } from "./notifier.js";
import { SharedFeeds, type SharedFeed } from "./shared-feed.js";
import { waitingReasons } from "./waiting-reasons.js";

export interface FeedItem {
  id: number;
  type: model.TaskChangeType;
  taskId: string;
  /** The task when the feed read the change; undefined when deleted (then or since). */
  task: model.Task | undefined;
  /** Why the task's queued run has no worker, as of this read ("" for none). */
  waitingReason: string;
  at: Date;
}

/**
 * Changes kept per workspace; a stream further behind reads the database instead. Each holds a
 * whole task, which can be large, so the buffer is kept short.
 */
const BUFFER_SIZE = 256;
const READ_BATCH = 200;

/** Reads the changes after `afterId` (at most `limit`), each with its task as it is now. */
async function readChanges(db: Kysely<Database>, ownerId: string, workspaceId: string, afterId: number, limit: number): Promise<FeedItem[]> {
  const events = await taskEvents.listTaskEvents(db, ownerId, workspaceId, afterId, limit);
  // The batch's tasks in one read, not one read per change.
  const tasks = await store.getTasks(db, ownerId, events.filter((e) => e.type !== "deleted").map((e) => e.taskId));
  const reasons = await waitingReasons({ db }, [...tasks.values()]);
  return events.map((e) => ({
    id: e.id,
    type: e.type,
    taskId: e.taskId,
    task: e.type === "deleted" ? undefined : tasks.get(e.taskId),
    waitingReason: e.type === "deleted" ? "" : (reasons.get(e.taskId) ?? ""),
    at: e.createdAt,
  }));
}

export class TaskFeeds {
  private readonly feeds: SharedFeeds<FeedItem>;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly changes: NotifierChannel,
    pollMs: number,
    logger: Logger,
  ) {
    this.feeds = new SharedFeeds({ pollMs, bufferSize: BUFFER_SIZE, batchSize: READ_BATCH, logger, what: "task changes", keyField: "workspace_id" });
  }

  /**
   * Joins the workspace's feed; `wake` is called after each read. Returns the feed and the
   * function that leaves it (call it in `finally`).
   */
  join(ownerId: string, workspaceId: string, wake: () => void): Promise<{ feed: SharedFeed<FeedItem>; leave: () => void }> {
    const source = {
      readAfter: (afterId: number, limit: number) => readChanges(this.db, ownerId, workspaceId, afterId, limit),
      latestId: () => taskEvents.latestTaskEventId(this.db, workspaceId),
      subscribe: (wakeFeed: () => void) => this.changes.subscribe(workspaceId, wakeFeed),
    };
    return this.feeds.join(workspaceId, source, wake);
  }

  /** Streams following a feed now, on this server. */
  get streams(): number {
    return this.feeds.streams;
  }
}
