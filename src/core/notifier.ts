// In-process wake-ups by key (a workspace's task changes, later a session's log): listeners
// are called synchronously after the change commits. Other replicas are reached by polling.
export class Notifier {
  private readonly listeners = new Map<string, Set<() => void>>();

  /** Returns the unsubscribe function; call it in `finally`. */
  subscribe(key: string, listener: () => void): () => void {
    let set = this.listeners.get(key);
    if (set === undefined) this.listeners.set(key, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.listeners.get(key) === set) this.listeners.delete(key);
    };
  }

  notify(key: string): void {
    for (const listener of this.listeners.get(key) ?? []) listener();
  }

  /** Wakes everyone, e.g. after wake-ups from other replicas may have been lost. */
  notifyAll(): void {
    for (const set of this.listeners.values()) for (const listener of set) listener();
  }
}
