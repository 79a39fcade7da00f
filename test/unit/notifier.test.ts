// The in-process notifier: wake all, one or n listeners of a (channel, key), and nothing else.
import { describe, expect, it } from "vitest";
import { Notifier } from "../../src/core/notifier.js";
import { waitForWake } from "../../src/core/wait.js";

/** Listeners that record their name when called. */
function recorder() {
  const calls: string[] = [];
  return { calls, listener: (name: string) => () => void calls.push(name) };
}

describe("Notifier", () => {
  it("wakes every listener of a key with notify, and they stay subscribed", () => {
    const n = new Notifier(["tasks"]);
    const { calls, listener } = recorder();
    n.subscribe("tasks", "w1", listener("a"));
    n.subscribe("tasks", "w1", listener("b"));
    n.notify("tasks", "w1");
    n.notify("tasks", "w1");
    expect(calls).toEqual(["a", "b", "a", "b"]);
  });

  it("wakes one listener with wake, the one that has waited longest, and it leaves until it subscribes again", () => {
    const n = new Notifier(["claims"]);
    const { calls, listener } = recorder();
    const a = listener("a");
    n.subscribe("claims", "q", a);
    n.subscribe("claims", "q", listener("b"));
    n.subscribe("claims", "q", listener("c"));
    expect(n.wake("claims", "q")).toBe(1);
    expect(n.wake("claims", "q")).toBe(1);
    expect(calls).toEqual(["a", "b"]);
    // a polls again: it goes to the back, behind c.
    n.subscribe("claims", "q", a);
    expect(n.wake("claims", "q")).toBe(1);
    expect(n.wake("claims", "q")).toBe(1);
    expect(n.wake("claims", "q")).toBe(0);
    expect(calls).toEqual(["a", "b", "c", "a"]);
  });

  it("wakes at most n listeners with wake(n), oldest first", () => {
    const n = new Notifier(["claims"]);
    const { calls, listener } = recorder();
    for (const name of ["a", "b", "c", "d"]) n.subscribe("claims", "q", listener(name));
    expect(n.wake("claims", "q", 3)).toBe(3);
    expect(calls).toEqual(["a", "b", "c"]);
    expect(n.wake("claims", "q", 3)).toBe(1);
    expect(calls).toEqual(["a", "b", "c", "d"]);
    n.notify("claims", "q");
    expect(calls).toHaveLength(4);
  });

  it("keeps keys and channels apart: a key on one channel does not wake the same key on another", () => {
    const n = new Notifier(["tasks", "logs"]);
    const { calls, listener } = recorder();
    n.subscribe("tasks", "k", listener("tasks k"));
    n.subscribe("tasks", "other", listener("tasks other"));
    n.subscribe("logs", "k", listener("logs k"));
    n.notify("tasks", "k");
    expect(n.wake("logs", "other")).toBe(0);
    expect(calls).toEqual(["tasks k"]);
    n.channel("logs").notify("k");
    expect(calls).toEqual(["tasks k", "logs k"]);
  });

  it("wakes every listener of every channel with notifyAll, and they stay subscribed", () => {
    const n = new Notifier(["tasks", "logs"]);
    const { calls, listener } = recorder();
    n.subscribe("tasks", "a", listener("tasks a"));
    n.subscribe("logs", "b", listener("logs b"));
    n.notifyAll();
    n.notify("logs", "b");
    expect(calls).toEqual(["tasks a", "logs b", "logs b"]);
  });

  it("ignores a notification on a channel it lacks, and refuses to subscribe to one", () => {
    const n = new Notifier(["tasks"]);
    n.notify("unknown", "k");
    expect(() => n.subscribe("unknown", "k", () => undefined)).toThrow(/no channel "unknown"/);
    expect(() => n.channel("unknown")).toThrow(/no channel "unknown"/);
  });

  it("stops calling a listener once it unsubscribes in finally, after a wake or a timeout", async () => {
    const n = new Notifier(["claims"]);
    const channel = n.channel("claims");
    /** A long poll: subscribe, wait for a wake or the deadline, unsubscribe in finally. */
    const poll = async (timeoutMs: number) => {
      let wake: (() => void) | undefined;
      const unsubscribe = channel.subscribe("q", () => wake?.());
      try {
        return await waitForWake(new AbortController().signal, timeoutMs, (w) => (wake = w));
      } finally {
        unsubscribe();
      }
    };
    const woken = poll(10_000);
    const timedOut = poll(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The one that timed out has left; the wake reaches the other.
    expect(channel.wake("q")).toBe(1);
    const first = await Promise.race([woken.then(() => "woken"), new Promise((resolve) => setTimeout(resolve, 2_000, "still waiting"))]);
    expect(first).toBe("woken");
    await timedOut;
    // Both have left: nothing is called any more.
    expect(channel.wake("q")).toBe(0);
    let called = false;
    channel.subscribe("q", () => (called = true))();
    channel.notify("q");
    expect(called).toBe(false);
  });

  it("delivers another replica's notification as a wake of one on a wakeOne channel, and of all elsewhere", () => {
    const n = new Notifier(["tasks", "claims"], { wakeOne: ["claims"] });
    const { calls, listener } = recorder();
    n.subscribe("tasks", "w1", listener("t1"));
    n.subscribe("tasks", "w1", listener("t2"));
    for (const name of ["c1", "c2", "c3"]) n.subscribe("claims", "alice:codex", listener(name));
    n.deliver("tasks", "w1");
    expect(calls).toEqual(["t1", "t2"]);
    // What follows the first space only tells notifications apart: the key is before it.
    n.deliver("claims", "alice:codex session-1");
    n.deliver("claims", "alice:codex session-2");
    n.deliver("claims", "bob:codex session-3");
    expect(calls).toEqual(["t1", "t2", "c1", "c2"]);
    n.notifyAll();
    expect(calls).toEqual(["t1", "t2", "c1", "c2", "t1", "t2", "c3"]);
  });

  it("tells an observer every key notified on its channel, here or by another replica, and undefined on notifyAll", () => {
    const n = new Notifier(["credentials", "tasks"]);
    const seen: (string | undefined)[] = [];
    const stop = n.observe("credentials", (key) => seen.push(key));
    n.notify("credentials", "worker-1");
    n.deliver("credentials", "worker-2");
    n.notify("tasks", "w1");
    n.notifyAll();
    expect(seen).toEqual(["worker-1", "worker-2", undefined]);
    stop();
    n.notify("credentials", "worker-3");
    expect(seen).toHaveLength(3);
    expect(() => n.observe("claims", () => undefined)).toThrow(/claims/);
  });

  it("refuses a wakeOne channel it does not have", () => {
    expect(() => new Notifier(["tasks"], { wakeOne: ["claims"] })).toThrow(/claims/);
  });
});
