// The server's clone of each repository, in <data folder>/repositories/<repository id>
// (core/paths.ts cloneDir): made in the background when a repository is added, fetched before
// each new task, removed with the repository. At most a few clones or fetches run at once (they
// hold sockets, memory and disk), and one repository's run one at a time, in order; a fetch asked
// for while another of the same repository waits joins that one.
//
// This is memory of one replica: with several replicas on one PostgreSQL each keeps its own
// clone in its own data folder, and the one-at-a-time rule holds per replica (two replicas may
// fetch one repository at once, each into its own clone).
import { removeClone, syncClone, type SyncResult } from "../git/clone.js";
import type { Core } from "./context.js";
import { failedPrecondition, remoteUnavailable } from "./errors.js";
import { cloneDir } from "./paths.js";
import { syncLocalClone } from "../git/local.js";
import { isLocalRemote, localRemotePath, parseRemoteUrl, type ProviderName } from "./remote-url.js";
import type { Repository } from "../store/repositories.js";
import { basicCredentials, credentialsFor, fetchUrl, remoteFailure, remoteOptions } from "./upstream.js";

export type { SyncResult };

/** Runs tasks by key: one key's one after another, in order, and at most `maxConcurrent` of all keys at once. */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();
  /** A run of the key queued and not started yet, which a shared run joins. */
  private readonly waitingShared = new Map<string, Promise<unknown>>();
  private running = 0;
  private readonly slots: (() => void)[] = [];

  constructor(readonly maxConcurrent: number) {
    if (!(maxConcurrent >= 1)) throw new Error("a queue runs at least one task at a time");
  }

  /** Resolves once every task queued so far has ended. */
  async settled(): Promise<void> {
    await Promise.all([...this.tails.values()]);
  }

  /** How many tasks run now. */
  get active(): number {
    return this.running;
  }

  /** Runs fn once every run of the key queued before it has ended and a slot is free. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(
      () => this.inSlot(fn),
      () => this.inSlot(fn),
    );
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  /** Like run, but joins a run of the key that is queued and has not started yet (its result is what this one would get). */
  shared<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const waiting = this.waitingShared.get(key);
    if (waiting !== undefined) return waiting as Promise<T>;
    const result = this.run(key, () => {
      if (this.waitingShared.get(key) === result) this.waitingShared.delete(key);
      return fn();
    });
    this.waitingShared.set(key, result);
    return result;
  }

  private async inSlot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running < this.maxConcurrent) this.running += 1;
    // A slot freed is handed over as it is (the count stays), so none is taken twice.
    else await new Promise<void>((resolve) => this.slots.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.slots.shift();
      if (next !== undefined) next();
      else this.running -= 1;
    }
  }
}

/** Clones and fetches at once, across repositories. */
const MAX_CONCURRENT_SYNCS = 4;

export class RepositoryClones {
  private readonly queue = new KeyedQueue(MAX_CONCURRENT_SYNCS);
  /** Aborted at shutdown: clones and fetches in progress end, and none starts. */
  private readonly stopping = new AbortController();

  constructor(private readonly dataDir: string) {}

  /** Where the repository's clone lives. */
  dir(repositoryId: string): string {
    return cloneDir(this.dataDir, repositoryId);
  }

  /**
   * Makes the repository's clone, or fetches into it, with its credentials as stored when the run
   * starts. Throws the error a client reads (core/upstream.ts checkRemote's kinds), naming no credential.
   */
  sync(core: Core, repository: Repository): Promise<SyncResult> {
    return this.queue.shared(repository.id, async () => {
      if (this.stopping.signal.aborted) throw remoteUnavailable("the server is shutting down; try again");
      const parsed = parseRemoteUrl(repository.remoteUrl);
      if (typeof parsed !== "string" && isLocalRemote(parsed)) {
        try {
          return await syncLocalClone(this.dir(repository.id), localRemotePath(parsed), core.remotes.timeoutMs);
        } catch (error) {
          throw remoteFailure(error, "its folder", false, "fetch");
        }
      }
      const url = typeof parsed === "string" ? undefined : fetchUrl(parsed);
      if (typeof parsed === "string" || url === undefined) {
        throw failedPrecondition(`repository ${repository.id} cannot be fetched: the server reaches remotes over http(s) only`, { id: repository.id });
      }
      const credentials = await credentialsFor(core, repository);
      try {
        return await syncClone(this.dir(repository.id), url, {
          ...remoteOptions(core),
          signal: this.stopping.signal,
          credentials: basicCredentials(credentials, repository.vcsProviderType as ProviderName),
        });
      } catch (error) {
        throw remoteFailure(error, parsed.host, credentials !== undefined, "fetch");
      }
    });
  }

  /** Ends the clones and fetches in progress and waits until they have (a clone cut short leaves nothing behind). */
  async close(): Promise<void> {
    this.stopping.abort();
    await this.queue.settled();
  }

  /**
   * Runs fn on the repository's clone with no clone, fetch or other such run of it at once (a
   * task branch made, a push): after the runs queued before it, in order.
   */
  exclusive<T>(repositoryId: string, fn: (dir: string) => Promise<T>): Promise<T> {
    return this.queue.run(repositoryId, () => fn(this.dir(repositoryId)));
  }

  /** Removes the repository's clone, after any run of it in progress. */
  remove(repositoryId: string): Promise<void> {
    return this.queue.run(repositoryId, () => removeClone(this.dir(repositoryId)));
  }
}
