// The queue the server's clones run through (core/clones.ts): one key's tasks one after another
// in order, at most N of all keys at once, a shared run joining one that has not started, and a
// failed task not holding up the next.
import { describe, expect, it } from "vitest";
import { KeyedQueue } from "../../src/core/clones.js";

/** A task that records when it runs and ends when released. */
function gate() {
  let release!: () => void;
  const done = new Promise<void>((resolve) => (release = resolve));
  return { release, done };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("KeyedQueue", () => {
  it("runs one key's tasks one at a time, in the order given", async () => {
    const queue = new KeyedQueue(4);
    const order: string[] = [];
    const gates = [gate(), gate(), gate()];
    const runs = gates.map((g, i) =>
      queue.run("repo", async () => {
        order.push(`start ${i}`);
        await g.done;
        order.push(`end ${i}`);
        return i;
      }),
    );
    await tick();
    expect(order).toEqual(["start 0"]);
    gates[1]!.release();
    gates[2]!.release();
    await tick();
    expect(order).toEqual(["start 0"]);
    gates[0]!.release();
    expect(await Promise.all(runs)).toEqual([0, 1, 2]);
    expect(order).toEqual(["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]);
  });

  it("runs at most maxConcurrent tasks of all keys at once, and hands a freed slot on", async () => {
    const queue = new KeyedQueue(2);
    let running = 0;
    let most = 0;
    const gates = Array.from({ length: 6 }, () => gate());
    const runs = gates.map((g, i) =>
      queue.run(`repo-${i}`, async () => {
        running += 1;
        most = Math.max(most, running);
        await g.done;
        running -= 1;
      }),
    );
    await tick();
    expect(running).toBe(2);
    for (const g of gates) {
      g.release();
      await tick();
      await tick();
      expect(running).toBeLessThanOrEqual(2);
    }
    await Promise.all(runs);
    expect(most).toBe(2);
    expect(queue.active).toBe(0);
  });

  it("lets a shared run join one of its key that has not started, and not one that has", async () => {
    const queue = new KeyedQueue(1);
    let calls = 0;
    const first = gate();
    const started = queue.shared("repo", async () => {
      calls += 1;
      await first.done;
      return "first";
    });
    await tick();
    const a = queue.shared("repo", async () => {
      calls += 1;
      return "second";
    });
    const b = queue.shared("repo", async () => {
      calls += 1;
      return "third";
    });
    expect(b).toBe(a);
    first.release();
    expect(await started).toBe("first");
    expect(await a).toBe("second");
    expect(await b).toBe("second");
    expect(calls).toBe(2);
  });

  it("goes on after a task fails", async () => {
    const queue = new KeyedQueue(1);
    const failed = queue.run("repo", async () => {
      throw new Error("remote gone");
    });
    const next = queue.run("repo", async () => "fetched");
    await expect(failed).rejects.toThrow("remote gone");
    expect(await next).toBe("fetched");
    expect(queue.active).toBe(0);
  });
});
