// Dispatch across two replicas on one PostgreSQL database: a task created through one wakes a
// worker long-polling the other at once (by NOTIFY: the backstop is an hour away); workers on
// both race for each session and exactly one claims it; the health monitors of both requeue an
// expired lease once; a stop through one replica reaches a worker on the other in its next
// heartbeat.
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentType, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { SessionService } from "../../gen/foreman/v1/session_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { runsOn } from "../helpers/databases.js";
import { dispatchFixtures, expectLeaseLost, sleep, tracked, type TestWorker } from "../helpers/dispatch.js";
import { caller } from "../helpers/fixtures.js";
import { clientWith, movableClock, multiUserEnv, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { startReplicas, type Replicas } from "../helpers/replicas.js";
import type { TestServer } from "../helpers/server.js";

/** Longer than any test waits: a poll that returns with work was woken for it. */
const LONG_WAIT = 120;
/** The bound a cross-replica wake-up must beat: generous for a busy machine, far below the hour-long backstop. */
const WAKE_BOUND_MS = 10_000;
const TEST_TIMEOUT = 60_000;

describe.runIf(runsOn("postgres"))("dispatch across two replicas on one PostgreSQL database", () => {
  let replicas: Replicas;
  let provider: TestProvider;
  let a: TestServer;
  let b: TestServer;
  const d = dispatchFixtures({ server: () => a, provider: () => provider, userPrefix: "replicas", workerName: "replica worker" });

  beforeAll(async () => {
    provider = await startOidcProvider();
    // No backstop and no health sweep within a test: what crosses replicas is NOTIFY and the database.
    replicas = await startReplicas(
      multiUserEnv(provider, { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_MAX_POLL_SECONDS: String(LONG_WAIT), FOREMAN_HEALTH_CHECK_SECONDS: "3600" }),
    );
    ({ a, b } = replicas);
  });

  afterAll(async () => {
    await replicas?.close();
    await provider?.close();
  });

  it(
    "wakes a worker long-polling one replica the moment a task is created through the other",
    async () => {
      const alice = await d.newUser();
      const w = await d.newWorker(alice, {}, b);
      // Nothing is queued for it: the poll waits.
      expect((await d.poll(w)).assignment).toBeUndefined();
      const waiting = tracked(d.poll(w, LONG_WAIT));
      await sleep(300);
      expect(waiting.settled()).toBe(false);
      const created = performance.now();
      const task = await d.createTask(alice);
      const bound = new Promise<"bound">((resolve) => setTimeout(() => resolve("bound"), WAKE_BOUND_MS).unref());
      const first = await Promise.race([waiting.promise, bound]);
      const latency = performance.now() - created;
      // The long poll itself returned, with the task: no second poll was made.
      expect(first, `no claim within ${WAKE_BOUND_MS} ms`).not.toBe("bound");
      expect((await waiting.promise).assignment?.taskId).toBe(task.id);
      console.log(`cross-replica wake-up: task created on A, claimed by a poll waiting on B ${latency.toFixed(1)} ms later`);
    },
    TEST_TIMEOUT,
  );

  it(
    "of 50 workers split over both replicas racing for one session, 100 times, exactly one claims it each time",
    async () => {
      const user = await d.newUser();
      const onB = caller(b, user.token).client(TaskService);
      // AMP: the race's own agent, so that its workers take nothing else.
      const workers: TestWorker[] = await Promise.all(
        Array.from({ length: 50 }, (_, i) => d.newWorker(user, { agentTypes: [AgentType.AMP], name: `racer ${i}` }, i % 2 === 0 ? a : b)),
      );
      const wins = { a: 0, b: 0 };
      for (let round = 0; round < 100; round++) {
        // Filed through each replica in turn.
        const tasks = round % 2 === 0 ? user.client(TaskService) : onB;
        const task = (await tasks.createUnitTask({ repositoryGroupId: d.groups.get(user.id)!.id, prompt: `round ${round}`, agentType: AgentType.AMP })).unitTask!;
        const results = await Promise.all(workers.map((w, i) => d.poll(w).then((res) => ({ w, i, res }))));
        const winners = results.filter((r) => r.res.assignment !== undefined);
        expect(winners.map((r) => r.res.assignment!.taskId), `round ${round}`).toEqual([task.id]);
        wins[winners[0]!.i % 2 === 0 ? "a" : "b"]++;
        await d.report(winners[0]!.w, winners[0]!.res.assignment!, SessionState.SUCCEEDED);
      }
      const sessions = await a.server.db.kysely.selectFrom("agent_sessions").select(["state", "attempt", "worker_id"]).where("owner_id", "=", user.id).execute();
      expect(sessions).toHaveLength(100);
      expect(sessions.every((s) => s.state === "succeeded" && s.attempt === 1 && s.worker_id !== null)).toBe(true);
      console.log(`replica race: 100 sessions, won through A ${wins.a} times, through B ${wins.b} times`);
    },
    // 5,000 polls and 100 reports: 54 to 87 s here with the machine loaded; five minutes allows worse.
    TEST_TIMEOUT * 5,
  );

  it("refuses on one replica a credential ended through the other: its worker unregistered, or registered again with a new one", async () => {
    // AcknowledgeCommands checks nothing but the credential, so its answer is the credential check's alone.
    const refusedOn = async (server: TestServer, token: string) => {
      const started = performance.now();
      for (;;) {
        try {
          await clientWith(server, WorkerService, token).acknowledgeCommands({ commandIds: [] });
        } catch (error) {
          expect(ConnectError.from(error).code).toBe(Code.Unauthenticated);
          return performance.now() - started;
        }
        // Each replica keeps a credential it found valid for a minute: only the NOTIFY makes this end sooner.
        if (performance.now() - started > WAKE_BOUND_MS) throw new Error(`still accepted ${WAKE_BOUND_MS} ms later`);
        await sleep(20);
      }
    };
    const alice = await d.newUser();
    const gone = await d.newWorker(alice, {}, b);
    // Both replicas have found it valid, and keep it.
    for (const server of [a, b]) await clientWith(server, WorkerService, gone.token).heartbeat({});
    await clientWith(a, WorkerService, gone.token).unregisterWorker({});
    const unregisteredMs = await refusedOn(b, gone.token);

    const again = await d.newWorker(alice, {}, b);
    for (const server of [a, b]) await clientWith(server, WorkerService, again.token).heartbeat({});
    // A restarted daemon presents its previous credential (as its bearer) and gets its id back.
    const restarted = await clientWith(a, WorkerService, again.token).registerWorker({ registrationToken: (await alice.registrationToken()).secret, name: "replica worker" });
    expect(restarted.workerId).toBe(again.id);
    const replacedMs = await refusedOn(b, again.token);
    // The new credential works on both.
    for (const server of [a, b]) await clientWith(server, WorkerService, restarted.workerToken).heartbeat({});
    console.log(`credential ended through A, refused by B ${unregisteredMs.toFixed(0)} ms (unregistered) and ${replacedMs.toFixed(0)} ms (registered again) later`);
  });

  it("delivers a stop made through one replica to a worker on the other in its next heartbeat: lost, with a stop_session command", async () => {
    const alice = await d.newUser();
    await d.createTask(alice);
    const w = await d.newWorker(alice, {}, b);
    const claimed = await d.claim(w);
    await d.report(w, claimed, SessionState.RUNNING);
    expect((await w.client.heartbeat({ leases: [claimed.lease!] })).lostSessionIds).toEqual([]);
    // Stopped through A (alice's clients call A).
    await alice.client(SessionService).stopSession({ sessionId: claimed.lease!.sessionId, reason: "stopped from the other replica" });
    const beat = await w.client.heartbeat({ leases: [claimed.lease!] });
    expect(beat.leases).toEqual([]);
    expect(beat.lostSessionIds).toEqual([claimed.lease!.sessionId]);
    expect(beat.commands.map((c) => [c.id, c.command.case, c.command.value])).toEqual([
      [
        `stop:${claimed.lease!.sessionId}`,
        "stopSession",
        expect.objectContaining({ sessionId: claimed.lease!.sessionId, reason: "stopped by its user: stopped from the other replica" }),
      ],
    ]);
    await expectLeaseLost(d.report(w, claimed, SessionState.SUCCEEDED), "ended as cancelled");

    // CancelTask (a status change) through B, to a worker on A, the other way round.
    const bob = await d.newUser();
    const task = await d.createTask(bob);
    const onA = await d.newWorker(bob, {}, a);
    const held = await d.claim(onA);
    await caller(b, bob.token).client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.CANCELLED });
    const told = await onA.client.heartbeat({ leases: [held.lease!] });
    expect(told.lostSessionIds).toEqual([held.lease!.sessionId]);
    expect(told.commands.map((c) => [c.id, c.command.value])).toEqual([
      [`stop:${held.lease!.sessionId}`, expect.objectContaining({ sessionId: held.lease!.sessionId, reason: "task cancelled" })],
    ]);
  });
});

describe.runIf(runsOn("postgres"))("the health monitors of two replicas on one PostgreSQL database", () => {
  let replicas: Replicas;
  let provider: TestProvider;
  let a: TestServer;
  let b: TestServer;
  const clock = movableClock();
  const logLines: string[] = [];
  const d = dispatchFixtures({ server: () => a, provider: () => provider, userPrefix: "replica-health", workerName: "replica worker" });

  beforeAll(async () => {
    provider = await startOidcProvider();
    // Both monitors sweep every second, on one clock the test moves past a lease.
    const env = multiUserEnv(provider, { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_MAX_POLL_SECONDS: String(LONG_WAIT), FOREMAN_HEALTH_CHECK_SECONDS: "1" });
    replicas = await startReplicas(env, { clock: clock.now, logLines });
    ({ a, b } = replicas);
  });

  afterAll(async () => {
    await replicas?.close();
    await provider?.close();
  });

  it(
    "requeues an expired lease exactly once: one lost session, one new attempt, which a worker waiting on the other replica claims",
    async () => {
      const alice = await d.newUser();
      const task = await d.createTask(alice);
      const silent = await d.newWorker(alice, {}, a);
      const lost = await d.claim(silent);
      await d.report(silent, lost, SessionState.RUNNING);
      const waiter = await d.newWorker(alice, {}, b);
      const waiting = tracked(d.poll(waiter, LONG_WAIT));
      await sleep(300);
      expect(waiting.settled()).toBe(false);
      // Past three missed heartbeats: both monitors, sweeping every second, find the lease expired.
      clock.advance(31);
      await waiter.client.heartbeat({ leases: [] });
      const { assignment } = await waiting.promise;
      expect(assignment?.agentTaskId).toBe(lost.agentTaskId);
      expect(assignment?.lease?.attempt).toBe(2);
      // More sweeps of both, at once, find nothing more to do.
      const more = await Promise.all([a.server.workerHealth.tick(), b.server.workerHealth.tick(), a.server.workerHealth.tick(), b.server.workerHealth.tick()]);
      expect(more.flatMap((s) => s.lost).map((l) => l.sessionId)).not.toContain(lost.lease!.sessionId);
      expect((await d.sessionsOf(alice, task.id)).map((s) => [s.attempt, s.state])).toEqual([
        [1, SessionState.LOST],
        [2, SessionState.ASSIGNED],
      ]);
      const requeues = logLines.filter((l) => l.includes("session lost; requeued as the next attempt") && l.includes(lost.lease!.sessionId));
      expect(requeues).toHaveLength(1);
      await expectLeaseLost(d.report(silent, lost, SessionState.SUCCEEDED), "ended as lost");
    },
    TEST_TIMEOUT,
  );
});
