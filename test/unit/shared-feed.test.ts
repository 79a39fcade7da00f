// The generic shared feed on an in-memory source: one reader per key however many streams
// follow it, keys apart, a stream behind the buffer catching up from the source, a failed read
// that streams outlive, and the last stream's leaving stopping the reader.
import { describe, expect, it } from "vitest";
import { createLogger } from "../../src/logger.js";
import { Notifier } from "../../src/core/notifier.js";
import { SharedFeeds, type FeedSource, type SharedFeedOptions } from "../../src/core/shared-feed.js";

interface Item {
  id: number;
  text: string;
}

const HOUR = 3_600_000;

/** Items per key in memory, the reads made of them, and the channel that wakes their readers. */
function memorySource() {
  const notifier = new Notifier(["items"]);
  const channel = notifier.channel("items");
  const items = new Map<string, Item[]>();
  const reads: { key: string; afterId: number }[] = [];
  let failNext = false;
  let nextId = 1;
  return {
    reads,
    channel,
    failNextRead: () => void (failNext = true),
    /** Appends an item to the key, as a commit would, and tells the key's readers (unless another process made it). */
    add(key: string, text: string, { notify = true } = {}): Item {
      const item = { id: nextId++, text };
      items.set(key, [...(items.get(key) ?? []), item]);
      if (notify) channel.notify(key);
      return item;
    },
    of(key: string): FeedSource<Item> {
      return {
        readAfter: async (afterId, limit) => {
          reads.push({ key, afterId });
          if (failNext) {
            failNext = false;
            throw new Error("database unreachable");
          }
          return (items.get(key) ?? []).filter((i) => i.id > afterId).slice(0, limit);
        },
        latestId: async () => (items.get(key) ?? []).at(-1)?.id ?? 0,
        subscribe: (wake) => channel.subscribe(key, wake),
      };
    },
  };
}

function options(overrides: Partial<SharedFeedOptions> = {}): SharedFeedOptions {
  return { pollMs: HOUR, bufferSize: 4, batchSize: 2, logger: createLogger("silent"), what: "items", keyField: "key", ...overrides };
}

/** Resolves once `wake` has been called `n` more times. */
function counter() {
  let count = 0;
  let waiting: { n: number; resolve: () => void } | undefined;
  return {
    wake: () => {
      count++;
      if (waiting !== undefined && count >= waiting.n) waiting.resolve();
    },
    reached: (n: number) => new Promise<void>((resolve) => (count >= n ? resolve() : (waiting = { n, resolve }))),
  };
}

describe("SharedFeeds", () => {
  it("reads a key once for all its streams, which get the very same items, and starts from the key's newest item", async () => {
    const src = memorySource();
    const before = src.add("a", "before the feed");
    const feeds = new SharedFeeds<Item>(options());
    const one = counter();
    const two = counter();
    const first = await feeds.join("a", src.of("a"), one.wake);
    const second = await feeds.join("a", src.of("a"), two.wake);
    expect(second.feed).toBe(first.feed);
    expect(feeds.streams).toBe(2);
    expect(first.feed.covers(before.id)).toBe(true);
    expect(first.feed.covers(0)).toBe(false);

    src.add("a", "x");
    await Promise.all([one.reached(1), two.reached(1)]);
    expect(src.reads).toEqual([{ key: "a", afterId: before.id }]);
    const forOne = await first.feed.itemsAfter(before.id);
    const forTwo = await second.feed.itemsAfter(before.id);
    expect(forOne.map((i) => i.text)).toEqual(["x"]);
    expect(forTwo[0]).toBe(forOne[0]);
    first.leave();
    second.leave();
  });

  it("keeps keys apart: a change to one key wakes only its own streams", async () => {
    const src = memorySource();
    const feeds = new SharedFeeds<Item>(options());
    const a = counter();
    let wokenB = 0;
    const joinedA = await feeds.join("a", src.of("a"), a.wake);
    const joinedB = await feeds.join("b", src.of("b"), () => wokenB++);
    expect(joinedA.feed).not.toBe(joinedB.feed);
    const item = src.add("a", "for a");
    await a.reached(1);
    expect(wokenB).toBe(0);
    expect(joinedB.feed.after(0)).toEqual([]);
    expect(joinedA.feed.after(0)).toEqual([item]);
    joinedA.leave();
    joinedB.leave();
  });

  it("keeps the newest bufferSize items; a stream behind them catches up from the source in batches, then from the buffer", async () => {
    const src = memorySource();
    const feeds = new SharedFeeds<Item>(options());
    const live = counter();
    const { feed, leave } = await feeds.join("a", src.of("a"), live.wake);
    for (let i = 1; i <= 9; i++) src.add("a", `item ${i}`);
    // The reads the adds woke run one at a time; the last wake-up comes once all nine are in.
    await feed.read();
    expect(feed.after(0).map((i) => i.id)).toEqual([6, 7, 8, 9]);
    expect(feed.covers(4)).toBe(false);
    expect(feed.covers(5)).toBe(true);

    // A stream from the start: batches of two from the source until it reaches the buffer.
    const readsBefore = src.reads.length;
    const seen: number[] = [];
    let after = 0;
    for (;;) {
      const items = await feed.itemsAfter(after);
      if (items.length === 0) break;
      for (const item of items) seen.push(item.id);
      after = items.at(-1)!.id;
    }
    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(src.reads.slice(readsBefore).map((r) => r.afterId)).toEqual([0, 2, 4]);
    leave();
  });

  it("wakes its streams after a read that failed, and reads again on the next wake-up", async () => {
    const lines: string[] = [];
    const src = memorySource();
    const feeds = new SharedFeeds<Item>(options({ logger: createLogger("warn", { write: (l: string) => void lines.push(l) }) }));
    const stream = counter();
    const { feed, leave } = await feeds.join("a", src.of("a"), stream.wake);
    src.failNextRead();
    src.add("a", "missed once");
    await stream.reached(1);
    expect(feed.after(0)).toEqual([]);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ msg: "reading items failed", key: "a" });
    src.add("a", "then read");
    await stream.reached(2);
    expect(feed.after(0).map((i) => i.text)).toEqual(["missed once", "then read"]);
    leave();
  });

  it("polls the source itself when no wake-up comes", async () => {
    const src = memorySource();
    const feeds = new SharedFeeds<Item>(options({ pollMs: 10 }));
    const stream = counter();
    const { feed, leave } = await feeds.join("a", src.of("a"), stream.wake);
    src.add("a", "unheard", { notify: false });
    await stream.reached(1);
    expect(feed.after(0).map((i) => i.text)).toEqual(["unheard"]);
    leave();
  });

  it("stops the reader when its last stream leaves: no more reads, no subscription, and a new reader on the next join", async () => {
    const src = memorySource();
    const feeds = new SharedFeeds<Item>(options({ pollMs: 10 }));
    const first = await feeds.join("a", src.of("a"), () => undefined);
    const second = await feeds.join("a", src.of("a"), () => undefined);
    first.leave();
    expect(feeds.streams).toBe(1);
    second.leave();
    expect(feeds.streams).toBe(0);
    const reads = src.reads.length;
    // Nothing listens on the key any more, and the poll has stopped.
    expect(src.channel.wake("a", Infinity)).toBe(0);
    src.add("a", "after everyone left");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(src.reads).toHaveLength(reads);
    const again = await feeds.join("a", src.of("a"), () => undefined);
    expect(again.feed).not.toBe(first.feed);
    expect(again.feed.covers(0)).toBe(false);
    again.leave();
  });
});
