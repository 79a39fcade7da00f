// The credential cache: what a read found is kept for a while, forgotten by worker (unregistered,
// or registered again), all at once, or when something was forgotten while its read ran.
import { describe, expect, it } from "vitest";
import { WorkerCredentials, type CredentialOwner } from "../../src/core/worker-credentials.js";

const owner = (workerId: string): CredentialOwner => ({ workerId, ownerId: "alice", agentTypes: ["codex"], maxConcurrentSessions: 2 });

describe("WorkerCredentials", () => {
  it("keeps a credential for its time and no longer", () => {
    const kept = new WorkerCredentials(1000);
    kept.remember("hash-1", owner("w1"), 0, kept.epoch);
    expect(kept.find("hash-1", 999)).toEqual(owner("w1"));
    expect(kept.find("hash-2", 999)).toBeUndefined();
    expect(kept.find("hash-1", 1000)).toBeUndefined();
    expect(kept.size).toBe(0);
  });

  it("forgets a worker's credential by its id, and keeps only its newest", () => {
    const kept = new WorkerCredentials(60_000);
    kept.remember("old", owner("w1"), 0, kept.epoch);
    kept.remember("new", owner("w1"), 0, kept.epoch);
    kept.remember("other", owner("w2"), 0, kept.epoch);
    expect(kept.find("old", 1)).toBeUndefined();
    expect(kept.find("new", 1)?.workerId).toBe("w1");
    kept.forgetWorker("w1");
    expect(kept.find("new", 1)).toBeUndefined();
    expect(kept.find("other", 1)?.workerId).toBe("w2");
    kept.forgetAll();
    expect(kept.find("other", 1)).toBeUndefined();
  });

  it("does not keep what a read found if a worker was forgotten while it ran: it may have seen a credential that ended", () => {
    const kept = new WorkerCredentials(60_000);
    const epoch = kept.epoch;
    // The read is under way; the worker is unregistered (here, or heard from another replica).
    kept.forgetWorker("w1");
    kept.remember("hash-1", owner("w1"), 0, epoch);
    expect(kept.find("hash-1", 1)).toBeUndefined();
    // A read begun after it is kept.
    kept.remember("hash-1", owner("w1"), 0, kept.epoch);
    expect(kept.find("hash-1", 1)?.workerId).toBe("w1");
  });
});
