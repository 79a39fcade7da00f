// Heartbeats written together (group commit). Ten thousand idle workers heartbeat a thousand
// times a second at the default interval; one UPDATE each, each its own commit (on PostgreSQL a
// WAL flush), took every connection of the pool: bench dispatch-idle saw 276,295 calls refused
// as Unavailable in five 30 s windows on PostgreSQL. Here a heartbeat waits for the next write,
// which takes every heartbeat that arrived since the last one began: one write at a time, and
// the next at least GAP_MS after the last began. A lone heartbeat is written at once; a thousand
// a second make about 1000 / GAP_MS writes. The answer still waits for its write, so a
// heartbeat that was answered is in the database, and one whose write failed fails.
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import * as workers from "../store/workers.js";

/** The least time between the starts of two writes. */
const GAP_MS = 20;

/** What a heartbeat's write found: whether the worker is registered (else nothing was written) and has commands waiting. */
export interface Touched {
  registered: boolean;
  hasCommands: boolean;
}

interface Pending {
  /** When it was seen: the latest of its heartbeats since the last write. */
  seenAt: Date;
  waiters: { resolve: (r: Touched) => void; reject: (error: unknown) => void }[];
}

export class HeartbeatWriter {
  private pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | undefined;
  private writing = false;
  private lastStart = -Infinity;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly gapMs = GAP_MS,
  ) {}

  /** The worker was seen at `seenAt` and is active again, unless it is unregistered. */
  touch(workerId: string, seenAt: Date): Promise<Touched> {
    return new Promise((resolve, reject) => {
      let entry = this.pending.get(workerId);
      if (entry === undefined) this.pending.set(workerId, (entry = { seenAt, waiters: [] }));
      else if (seenAt > entry.seenAt) entry.seenAt = seenAt;
      entry.waiters.push({ resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.timer !== undefined || this.writing || this.pending.size === 0) return;
    const wait = Math.max(0, this.lastStart + this.gapMs - performance.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.write();
    }, wait);
  }

  private async write(): Promise<void> {
    const batch = this.pending;
    this.pending = new Map();
    this.writing = true;
    this.lastStart = performance.now();
    try {
      // One time for the whole write, the earliest: a heartbeat is never recorded as later than
      // it was (at most the gap and a write's time earlier, against intervals of seconds).
      let seenAt = [...batch.values()][0]!.seenAt;
      for (const p of batch.values()) if (p.seenAt < seenAt) seenAt = p.seenAt;
      const touched = await workers.touchWorkers(this.db, [...batch.keys()], seenAt);
      for (const [id, p] of batch) {
        const hasCommands = touched.get(id);
        for (const w of p.waiters) w.resolve({ registered: hasCommands !== undefined, hasCommands: hasCommands === true });
      }
    } catch (error) {
      for (const p of batch.values()) for (const w of p.waiters) w.reject(error);
    } finally {
      this.writing = false;
      this.schedule();
    }
  }
}
