// In-process wake-ups keyed by (channel, key): a channel is one kind of change (task changes;
// later claims, a session's log, a worker's commands), the key says whose (a workspace id).
// Listeners are called synchronously after the change commits. On PostgreSQL the server LISTENs
// on every channel of the notifier on one connection, and a NOTIFY on channel C with payload K
// is notify(C, K) here, so other replicas' changes wake this one's listeners too.
//
// Two ways to wake. notify wakes every listener of the key, which stays subscribed: right for
// a reader that follows a key for good (a shared feed). wake(n) wakes the n that have waited
// longest, and each one woken leaves the set until it subscribes again: right for a long poll
// that one piece of work should end, not every worker's. Were the woken to stay, three wakes in
// a row (three tasks queued at once) would all reach the same poll before it could run and
// unsubscribe; leaving makes them reach three. Oldest first is fair, and a poll that
// re-subscribes goes to the back, which makes it round-robin. A woken poll that then finds
// nothing (another replica claimed it) subscribes again; a wake that reaches a poll just as it
// times out is lost, which the poll backstop covers.
//
// From other replicas (deliver): on a channel of wake-ups for long polls (wakeOne, the claims
// channel) each NOTIFY wakes one listener of its key, as a wake(1) here would: a notification
// stands for one piece of work. On every other channel it wakes them all (notify). A payload is
// the key, optionally followed by a space and anything that tells notifications apart:
// PostgreSQL delivers only one of the identical notifications a transaction sends, so two
// sessions queued in one transaction need two payloads to wake two polls.

type Listener = () => void;

/** One channel of a Notifier: its keys' listeners. */
export interface NotifierChannel {
  /** Returns the unsubscribe function; call it in `finally`. */
  subscribe(key: string, listener: Listener): () => void;
  /** Wakes every listener of the key; they stay subscribed. */
  notify(key: string): void;
  /** Wakes the `count` listeners of the key that have waited longest; they leave. Returns how many it woke. */
  wake(key: string, count?: number): number;
}

export class Notifier {
  /** channel → key → listeners, in the order they subscribed (a Set keeps it). */
  private readonly listeners = new Map<string, Map<string, Set<Listener>>>();
  /** channel → who hears every key's notifications (observe). */
  private readonly observers = new Map<string, Set<(key: string | undefined) => void>>();

  private readonly wakeOne: ReadonlySet<string>;

  /**
   * `channels`: every channel there is; the server listens on them all across replicas.
   * `wakeOne`: those of them on which a notification from another replica wakes one listener.
   */
  constructor(
    readonly channels: readonly string[],
    options: { wakeOne?: readonly string[] } = {},
  ) {
    for (const channel of channels) this.listeners.set(channel, new Map());
    this.wakeOne = new Set(options.wakeOne ?? []);
    for (const channel of this.wakeOne) this.keysOf(channel);
  }

  channel(name: string): NotifierChannel {
    this.keysOf(name);
    return {
      subscribe: (key, listener) => this.subscribe(name, key, listener),
      notify: (key) => this.notify(name, key),
      wake: (key, count) => this.wake(name, key, count),
    };
  }

  subscribe(channel: string, key: string, listener: Listener): () => void {
    const keys = this.keysOf(channel);
    let set = keys.get(key);
    if (set === undefined) keys.set(key, (set = new Set()));
    set.add(listener);
    const joined = set;
    return () => {
      joined.delete(listener);
      if (joined.size === 0 && keys.get(key) === joined) keys.delete(key);
    };
  }

  /**
   * Calls `observer` with the key of each notify on the channel (a NOTIFY from another replica
   * included, on a channel that is not wakeOne), and with undefined when some may have been lost
   * (notifyAll). For a cache that forgets what a notification names. Returns the unsubscribe.
   */
  observe(channel: string, observer: (key: string | undefined) => void): () => void {
    this.keysOf(channel);
    let set = this.observers.get(channel);
    if (set === undefined) this.observers.set(channel, (set = new Set()));
    set.add(observer);
    const joined = set;
    return () => void joined.delete(observer);
  }

  /** Wakes every listener of (channel, key); a channel this notifier lacks has none. */
  notify(channel: string, key: string): void {
    const observers = this.observers.get(channel);
    if (observers !== undefined) for (const observer of [...observers]) observer(key);
    const set = this.listeners.get(channel)?.get(key);
    // A copy: a listener may subscribe or unsubscribe while it is called.
    if (set !== undefined) for (const listener of [...set]) listener();
  }

  wake(channel: string, key: string, count = 1): number {
    const keys = this.keysOf(channel);
    const set = keys.get(key);
    if (set === undefined) return 0;
    const woken: Listener[] = [];
    for (const listener of set) {
      if (woken.length >= count) break;
      woken.push(listener);
    }
    for (const listener of woken) set.delete(listener);
    if (set.size === 0) keys.delete(key);
    for (const listener of woken) listener();
    return woken.length;
  }

  /** A notification from another replica (or this one's own NOTIFY, which comes back too). */
  deliver(channel: string, payload: string): void {
    const space = payload.indexOf(" ");
    const key = space === -1 ? payload : payload.slice(0, space);
    if (this.wakeOne.has(channel)) this.wake(channel, key, 1);
    else this.notify(channel, key);
  }

  /** Wakes every listener of every channel, e.g. after wake-ups from other replicas may have been lost. */
  notifyAll(): void {
    for (const observers of this.observers.values()) for (const observer of [...observers]) observer(undefined);
    const all = [...this.listeners.values()].flatMap((keys) => [...keys.values()].flatMap((set) => [...set]));
    for (const listener of all) listener();
  }

  private keysOf(channel: string): Map<string, Set<Listener>> {
    const keys = this.listeners.get(channel);
    if (keys === undefined) throw new Error(`the notifier has no channel "${channel}"`);
    return keys;
  }
}
