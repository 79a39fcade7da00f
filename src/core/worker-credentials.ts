// Worker credentials recently found valid, with who they belong to, so that a heartbeat or a poll
// does not cost a database read to authenticate. Ten thousand idle workers make about 1,300
// calls a second at the default intervals; the read was one of a heartbeat's two statements.
//
// What is kept never goes stale: a credential's worker, owner, agents and most sessions change
// only by a new registration, which replaces the credential. Its status is not kept (the calls
// that depend on it read it: the poll's outlook, the heartbeat's write). A credential stops
// working when its worker is unregistered or registers again: the replica that does it forgets
// the worker at once, and tells the others (NOTIFY on store/workers.ts WORKER_CREDENTIALS_CHANNEL, sent when
// the change commits), which forget it when they hear. Since notifications are lost while a
// replica's LISTEN connection is down, it forgets everything when it is back. Where nothing
// tells (several processes on one SQLite file), an entry is kept at most KEPT_FOR_MS; a call
// with a credential revoked meanwhile claims, renews and writes nothing, since those statements
// check the worker's status and the leases themselves.
export const KEPT_FOR_MS = 60_000;
const MAX_ENTRIES = 100_000;

/** Who a credential belongs to: what a call needs of its worker that only a new registration changes. */
export interface CredentialOwner {
  workerId: string;
  ownerId: string | null;
  agentTypes: string[];
  maxConcurrentSessions: number;
}

export class WorkerCredentials {
  /** By the credential's hash, in the order they were found (oldest first, for eviction). */
  private readonly kept = new Map<string, { owner: CredentialOwner; untilMs: number }>();
  /** Worker id → its kept credential's hash, to forget it by worker. */
  private readonly byWorker = new Map<string, string>();
  /** Counts the forgets: a read begun before one may have seen a credential that has ended since. */
  private forgets = 0;

  constructor(private readonly keptForMs = KEPT_FOR_MS) {}

  /** The credential's owner while it is kept, else undefined. */
  find(credentialHash: string, nowMs: number): CredentialOwner | undefined {
    const entry = this.kept.get(credentialHash);
    if (entry === undefined) return undefined;
    if (entry.untilMs > nowMs) return entry.owner;
    this.drop(credentialHash, entry.owner.workerId);
    return undefined;
  }

  /** Pass to `remember` what this returned before the read that found the credential. */
  get epoch(): number {
    return this.forgets;
  }

  /** Keeps what a read begun at `epoch` found, unless something was forgotten since (it may be this). */
  remember(credentialHash: string, owner: CredentialOwner, nowMs: number, epoch: number): void {
    if (epoch !== this.forgets) return;
    const previous = this.byWorker.get(owner.workerId);
    if (previous !== undefined) this.drop(previous, owner.workerId);
    if (this.kept.size >= MAX_ENTRIES) {
      const [oldest, entry] = this.kept.entries().next().value!;
      this.drop(oldest, entry.owner.workerId);
    }
    this.kept.set(credentialHash, { owner, untilMs: nowMs + this.keptForMs });
    this.byWorker.set(owner.workerId, credentialHash);
  }

  /** The worker's credential stopped working (unregistered, or registered again with a new one). */
  forgetWorker(workerId: string): void {
    this.forgets++;
    const hash = this.byWorker.get(workerId);
    if (hash !== undefined) this.drop(hash, workerId);
  }

  /** Revocations may have gone unheard. */
  forgetAll(): void {
    this.forgets++;
    this.kept.clear();
    this.byWorker.clear();
  }

  get size(): number {
    return this.kept.size;
  }

  private drop(hash: string, workerId: string): void {
    this.kept.delete(hash);
    if (this.byWorker.get(workerId) === hash) this.byWorker.delete(workerId);
  }
}
