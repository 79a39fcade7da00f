// The worker health monitor, on both databases: a worker silent for three heartbeat intervals
// is marked unhealthy and each session it held is lost and requeued as the next attempt (or,
// past FOREMAN_MAX_ATTEMPTS, its task fails); a lease that expired while its worker still
// heartbeats is requeued too; a requeued session wakes a waiting poll; two monitors sweeping at
// once requeue a lease once. The clock moves (no test waits for time to pass), and each test runs
// the monitor's sweep itself (tick()); one server runs it on a short interval of its own.
import { randomUUID } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExecutionState, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService, WorkerStatus } from "../../gen/foreman/v1/worker_pb.js";
import { DIALECTS } from "../helpers/databases.js";
import { dispatchFixtures, expectLeaseLost } from "../helpers/dispatch.js";
import { registerWorker, signIn } from "../helpers/fixtures.js";
import { clientWith, movableClock, startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import type { TestServer } from "../helpers/server.js";

/** Past three missed heartbeats of the default 10 s interval, and so past a lease. */
const SILENT = 31;
const LONG_WAIT = 60;
const TEST_TIMEOUT = 20_000;

describe.each(DIALECTS)("the worker health monitor on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const clock = movableClock();
  const logLines: string[] = [];
  const { leaseTokens, newUser, newWorker, createTask, getUnit: getTask, sessionsOf, claim, report } = dispatchFixtures({
    server: () => t,
    provider: () => provider,
    userPrefix: "health",
    workerName: "health worker",
  });

  beforeAll(async () => {
    provider = await startOidcProvider();
    // Neither the backstop nor the monitor's own timer within a test: each test sweeps itself,
    // and a poll that returns with work was woken for it.
    t = await startMultiUserServer(
      dialect,
      provider,
      { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_HEALTH_CHECK_SECONDS: "3600", FOREMAN_MAX_POLL_SECONDS: String(LONG_WAIT) },
      { clock: clock.now, logLines },
    );
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  const db = () => t.server.db.kysely;
  const sweep = () => t.server.workerHealth.tick();

  const workerStatus = async (id: string) => (await db().selectFrom("workers").select("status").where("id", "=", id).executeTakeFirstOrThrow()).status;

  it("marks a worker silent for three heartbeat intervals unhealthy, and requeues each session it held as the next attempt, the old one lost", async () => {
    const alice = await newUser();
    const [first, second] = [await createTask(alice), await createTask(alice)];
    const silent = await newWorker(alice, { maxConcurrentSessions: 2 });
    const alive = await newWorker(alice);
    const [a, b] = [await claim(silent), await claim(silent)];
    await report(silent, b, SessionState.RUNNING);
    clock.advance(SILENT);
    await alive.client.heartbeat({ leases: [] });

    const swept = await sweep();
    expect(swept.unhealthy).toContain(silent.id);
    expect(swept.unhealthy).not.toContain(alive.id);
    expect(await workerStatus(silent.id)).toBe("unhealthy");
    expect(await workerStatus(alive.id)).toBe("active");
    for (const [task, lease] of [
      [first, a],
      [second, b],
    ] as const) {
      const after = await getTask(alice, task.id);
      expect(after.status).toBe(TaskStatus.IN_PROGRESS);
      expect(after.executionState).toBe(ExecutionState.QUEUED);
      const sessions = after.agentTasks[0]!.sessions;
      expect(sessions.map((s) => [s.attempt, s.state])).toEqual([
        [1, SessionState.LOST],
        [2, SessionState.QUEUED],
      ]);
      expect(sessions[0]!.id).toBe(lease.lease!.sessionId);
      expect(sessions[0]!.errorMessage).toContain("missed 3 heartbeats");
      expect(swept.lost).toContainEqual({ sessionId: lease.lease!.sessionId, requeuedAs: sessions[1]!.id });
    }
    // The silent worker's leases are revoked: its reports are refused, its heartbeat names them lost.
    await expectLeaseLost(report(silent, b, SessionState.SUCCEEDED), "ended as lost");
    const late = await silent.client.heartbeat({ leases: [a.lease!, b.lease!] });
    expect(late.lostSessionIds.sort()).toEqual([a.lease!.sessionId, b.lease!.sessionId].sort());
    // A heartbeat makes it active again; the work went to the next attempt, which another worker claims.
    expect(await workerStatus(silent.id)).toBe("active");
    const next = await claim(alive);
    expect(next.lease!.attempt).toBe(2);
    expect([a.agentTaskId, b.agentTaskId]).toContain(next.agentTaskId);
    // A second sweep finds nothing more of it to do.
    const again = await sweep();
    expect(again.unhealthy).not.toContain(silent.id);
    expect(again.lost.map((l) => l.sessionId)).not.toContain(a.lease!.sessionId);
  });

  it("requeues a lease that expired while its worker still heartbeats (the worker stopped listing it)", async () => {
    const alice = await newUser();
    const task = await createTask(alice);
    await createTask(alice);
    const w = await newWorker(alice, { maxConcurrentSessions: 2 });
    const [kept, dropped] = [await claim(w), await claim(w)];
    clock.advance(20);
    await w.client.heartbeat({ leases: [kept.lease!] });
    clock.advance(SILENT - 20);
    await w.client.heartbeat({ leases: [kept.lease!] });

    const swept = await sweep();
    expect(swept.unhealthy).not.toContain(w.id);
    expect(await workerStatus(w.id)).toBe("active");
    const lost = swept.lost.filter((l) => [kept.lease!.sessionId, dropped.lease!.sessionId].includes(l.sessionId));
    expect(lost.map((l) => l.sessionId)).toEqual([dropped.lease!.sessionId]);
    const sessions = (await sessionsOf(alice, dropped.taskId)).map((s) => [s.attempt, s.state, s.errorMessage.includes("lease expired")]);
    expect(sessions).toEqual([
      [1, SessionState.LOST, true],
      [2, SessionState.QUEUED, false],
    ]);
    // The lease it kept renewing is untouched.
    expect((await report(w, kept, SessionState.RUNNING)).state).toBe(SessionState.RUNNING);
    expect((await w.client.heartbeat({ leases: [kept.lease!, dropped.lease!] })).lostSessionIds).toEqual([dropped.lease!.sessionId]);
    expect((await getTask(alice, task.id)).agentTasks).toHaveLength(1);
  });

  it("wakes a waiting poll with the requeued session", async () => {
    const alice = await newUser();
    await createTask(alice);
    const silent = await newWorker(alice);
    const lost = await claim(silent);
    const waiting = await newWorker(alice);
    let answered = false;
    const poll = waiting.client.getTask({ pollId: randomUUID(), waitSeconds: LONG_WAIT }).then((res) => {
      answered = true;
      return res;
    });
    // The poll is waiting: nothing is queued for it until the sweep.
    expect((await waiting.client.getTask({ pollId: randomUUID(), waitSeconds: 0 })).assignment).toBeUndefined();
    expect(answered).toBe(false);
    clock.advance(SILENT);
    await waiting.client.heartbeat({ leases: [] });
    await sweep();
    const { assignment } = await poll;
    expect(assignment?.agentTaskId).toBe(lost.agentTaskId);
    expect(assignment?.lease?.attempt).toBe(2);
  }, TEST_TIMEOUT);

  it(`fails the task once its run was lost FOREMAN_MAX_ATTEMPTS (3) times in a row, with the reason; RetryTask starts the count again`, async () => {
    const alice = await newUser();
    const task = await createTask(alice);
    for (let attempt = 1; attempt <= 3; attempt++) {
      const w = await newWorker(alice);
      expect((await claim(w)).lease!.attempt).toBe(attempt);
      clock.advance(SILENT);
      await sweep();
    }
    const failed = await getTask(alice, task.id);
    expect(failed.status).toBe(TaskStatus.FAILED);
    expect(failed.executionState).toBe(ExecutionState.IDLE);
    expect(failed.statusReason).toMatch(/lost 3 times in a row \(at most 3 attempts\); the last time its worker missed 3 heartbeats/);
    expect(failed.agentTasks[0]!.sessions.map((s) => s.state)).toEqual([SessionState.LOST, SessionState.LOST, SessionState.LOST]);

    await alice.client(TaskService).retryTask({ id: task.id });
    const w = await newWorker(alice);
    expect((await claim(w)).lease!.attempt).toBe(4);
    clock.advance(SILENT);
    await sweep();
    const retried = await getTask(alice, task.id);
    expect(retried.status).toBe(TaskStatus.IN_PROGRESS);
    expect(retried.agentTasks[0]!.sessions.map((s) => [s.attempt, s.state]).slice(-2)).toEqual([
      [4, SessionState.LOST],
      [5, SessionState.QUEUED],
    ]);
  });

  it("requeues an expired lease once when two monitors sweep at once", async () => {
    const alice = await newUser();
    const silentTask = await createTask(alice);
    const expiredTask = await createTask(alice);
    const silent = await newWorker(alice);
    const heartbeating = await newWorker(alice);
    const [a, b] = [await claim(silent), await claim(heartbeating)];
    expect(a.taskId).toBe(silentTask.id);
    expect(b.taskId).toBe(expiredTask.id);
    clock.advance(SILENT);
    await heartbeating.client.heartbeat({ leases: [] });
    const sweeps = await Promise.all([sweep(), sweep(), sweep()]);
    // Each lease lost once, by one of the sweeps, and one next attempt each.
    for (const lease of [a, b]) {
      const by = sweeps.filter((s) => s.lost.some((l) => l.sessionId === lease.lease!.sessionId));
      expect(by).toHaveLength(1);
      expect((await sessionsOf(alice, lease.taskId)).map((s) => [s.attempt, s.state])).toEqual([
        [1, SessionState.LOST],
        [2, SessionState.QUEUED],
      ]);
    }
    expect(sweeps.filter((s) => s.unhealthy.includes(silent.id))).toHaveLength(1);
  });

  describe("draining and UnregisterWorker", () => {
    it("a draining worker claims nothing, returns what it has not started to the queue at once, and may still report what runs", async () => {
      const alice = await newUser();
      const [unstarted, running] = [await createTask(alice), await createTask(alice)];
      const w = await newWorker(alice, { maxConcurrentSessions: 3 });
      const [a, b] = [await claim(w), await claim(w)];
      expect([a.taskId, b.taskId]).toEqual([unstarted.id, running.id]);
      await report(w, b, SessionState.RUNNING);
      await createTask(alice);

      const drained = await w.client.heartbeat({ status: WorkerStatus.DRAINING, leases: [a.lease!, b.lease!] });
      expect(drained.leases.map((l) => l.sessionId)).toEqual([b.lease!.sessionId]);
      expect(drained.lostSessionIds).toEqual([a.lease!.sessionId]);
      expect(await workerStatus(w.id)).toBe("draining");
      // The unstarted run is queued again as the same attempt: the agent never ran.
      const back = await getTask(alice, unstarted.id);
      expect(back.executionState).toBe(ExecutionState.QUEUED);
      expect(back.agentTasks[0]!.sessions.map((s) => [s.id, s.attempt, s.state])).toEqual([[a.lease!.sessionId, 1, SessionState.QUEUED]]);
      await expectLeaseLost(report(w, a, SessionState.RUNNING), "not this session's lease");
      // No new claim, though work is queued, and a long poll answers at once (within the test's time).
      expect((await w.client.getTask({ pollId: randomUUID(), waitSeconds: 0 })).assignment).toBeUndefined();
      expect((await w.client.getTask({ pollId: randomUUID(), waitSeconds: LONG_WAIT })).assignment).toBeUndefined();
      // What runs finishes.
      expect((await report(w, b, SessionState.SUCCEEDED)).state).toBe(SessionState.SUCCEEDED);
      expect((await getTask(alice, running.id)).status).toBe(TaskStatus.IN_REVIEW);
      // Another worker takes the returned session, with a lease of its own.
      const other = await newWorker(alice);
      const again = await claim(other);
      expect(again.lease!.sessionId).toBe(a.lease!.sessionId);
      expect(again.lease!.attempt).toBe(1);
      expect(again.lease!.leaseToken).not.toBe(a.lease!.leaseToken);
      // A heartbeat without DRAINING makes the worker claim again.
      await w.client.heartbeat({ status: WorkerStatus.IDLE, leases: [] });
      expect(await workerStatus(w.id)).toBe("active");
      expect((await claim(w)).taskId).not.toBe(unstarted.id);
    }, TEST_TIMEOUT);

    it("ends a waiting poll of a worker that starts draining", async () => {
      const alice = await newUser();
      const w = await newWorker(alice);
      const waiting = w.client.getTask({ pollId: randomUUID(), waitSeconds: LONG_WAIT });
      // Nothing is queued, so the poll waits; the heartbeat that drains wakes it.
      expect((await w.client.getTask({ pollId: randomUUID(), waitSeconds: 0 })).assignment).toBeUndefined();
      await w.client.heartbeat({ status: WorkerStatus.DRAINING, leases: [] });
      expect((await waiting).assignment).toBeUndefined();
      // Work queued now goes to nobody but a worker that is not draining.
      const task = await createTask(alice);
      expect((await w.client.getTask({ pollId: randomUUID(), waitSeconds: 0 })).assignment).toBeUndefined();
      expect((await claim(await newWorker(alice))).taskId).toBe(task.id);
    }, TEST_TIMEOUT);

    it("marks a draining worker that goes silent unhealthy too, and requeues what it ran", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      await report(w, a, SessionState.RUNNING);
      await w.client.heartbeat({ status: WorkerStatus.DRAINING, leases: [a.lease!] });
      clock.advance(SILENT);
      expect((await sweep()).unhealthy).toContain(w.id);
      expect((await sessionsOf(alice, task.id)).map((s) => [s.attempt, s.state])).toEqual([
        [1, SessionState.LOST],
        [2, SessionState.QUEUED],
      ]);
    });

    it("UnregisterWorker returns unstarted work to the queue and requeues running work as the next attempt", async () => {
      const alice = await newUser();
      const [unstarted, running] = [await createTask(alice), await createTask(alice)];
      const w = await newWorker(alice, { maxConcurrentSessions: 2 });
      const [a, b] = [await claim(w), await claim(w)];
      await report(w, b, SessionState.RUNNING);
      await w.client.unregisterWorker({});
      expect(await workerStatus(w.id)).toBe("unregistered");
      expect((await sessionsOf(alice, unstarted.id)).map((s) => [s.id, s.attempt, s.state])).toEqual([[a.lease!.sessionId, 1, SessionState.QUEUED]]);
      const requeued = await getTask(alice, running.id);
      expect(requeued.executionState).toBe(ExecutionState.QUEUED);
      expect(requeued.agentTasks[0]!.sessions.map((s) => [s.attempt, s.state, s.errorMessage])).toEqual([
        [1, SessionState.LOST, "its worker unregistered"],
        [2, SessionState.QUEUED, ""],
      ]);
      const other = await newWorker(alice, { maxConcurrentSessions: 2 });
      const taken = [await claim(other), await claim(other)].map((x) => [x.taskId, x.lease!.attempt]);
      expect(taken).toEqual([
        [unstarted.id, 1],
        [running.id, 2],
      ]);
    });
  });

  it("logs the lost sessions, and no lease token", () => {
    const logged = logLines.join("\n");
    expect(logged).toContain("session lost; requeued as the next attempt");
    expect(logged).toContain("worker unhealthy");
    for (const token of leaseTokens) expect(logged).not.toContain(token.slice("fls_".length));
  });
});

describe.each(DIALECTS)("the worker health monitor's own timer on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const clock = movableClock();

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startMultiUserServer(
      dialect,
      provider,
      { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_HEALTH_CHECK_SECONDS: "1", FOREMAN_HEARTBEAT_SECONDS: "5", FOREMAN_MAX_POLL_SECONDS: "30" },
      { clock: clock.now },
    );
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  it("sweeps by itself: a silent worker's session reaches a waiting poll", async () => {
    const alice = await signIn(t, provider, "health-timer");
    const { group } = await alice.groupOfOne();
    await alice.client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "Requeue me" });
    const token = (await alice.registrationToken()).secret;
    const registered = await registerWorker(t, token);
    // FOREMAN_HEARTBEAT_SECONDS: workers are told it, and a lease lasts three of it.
    expect(registered.heartbeatIntervalSeconds).toBe(5);
    const silent = clientWith(t, WorkerService, registered.workerToken);
    const before = clock.now().getTime();
    const lost = (await silent.getTask({ pollId: randomUUID(), waitSeconds: 0 })).assignment!;
    const expires = timestampDate(lost.lease!.expireTime!).getTime();
    expect(expires).toBeGreaterThanOrEqual(before + 15_000);
    expect(expires).toBeLessThanOrEqual(clock.now().getTime() + 15_000);
    const waiting = clientWith(t, WorkerService, (await registerWorker(t, token)).workerToken);
    clock.advance(SILENT);
    await waiting.heartbeat({ leases: [] });
    const { assignment } = await waiting.getTask({ pollId: randomUUID(), waitSeconds: 30 });
    expect(assignment?.agentTaskId).toBe(lost.agentTaskId);
    expect(assignment?.lease?.attempt).toBe(2);
  }, TEST_TIMEOUT);
});
