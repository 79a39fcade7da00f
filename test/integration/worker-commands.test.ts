// A worker's commands, on both databases and across two replicas: a lease revoked while the
// worker holds it (a task cancelled or deleted, a session stopped, a lease lost, work handed
// back by a draining worker) queues a stop_session command saying why; ReceiveCommands streams
// it the moment it is made, Heartbeat and GetTask carry it too, a new command ends a waiting
// poll, and AcknowledgeCommands ends its delivery. The backstop reads (FOREMAN_STREAM_POLL_SECONDS)
// are an hour here, so a command that arrives was pushed, not found by a poll.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { SessionService } from "../../gen/foreman/v1/session_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService, WorkerStatus, type WorkerCommand } from "../../gen/foreman/v1/worker_pb.js";
import { DIALECTS, runsOn } from "../helpers/databases.js";
import { dispatchFixtures, openCommands, tracked } from "../helpers/dispatch.js";
import { clientWith, movableClock, multiUserEnv, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { expectCode, expectInvalid } from "../helpers/rpc-errors.js";
import { startReplicas, type Replicas } from "../helpers/replicas.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const TEST_TIMEOUT = 20_000;
const ENV = {
  FOREMAN_STREAM_POLL_SECONDS: "3600",
  FOREMAN_STREAM_KEEPALIVE_SECONDS: "300",
  FOREMAN_HEALTH_CHECK_SECONDS: "3600",
  FOREMAN_MAX_POLL_SECONDS: "120",
};

const stop = (c: WorkerCommand) => (c.command.case === "stopSession" ? { id: c.id, ...c.command.value } : undefined);

describe.each(DIALECTS)("worker commands on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const clock = movableClock();
  const logLines: string[] = [];
  const fx = dispatchFixtures({ server: () => t, provider: () => provider, userPrefix: "commands", workerName: "commands worker" });
  const { newUser, newWorker, createTask, claim, report, poll } = fx;

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startTestServer(dialect, multiUserEnv(provider, ENV), undefined, { clock: clock.now, logLines });
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  it(
    "streams a stop the moment a user cancels the task the worker holds, after a keep-alive that says the stream is live",
    async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      await report(w, a, SessionState.RUNNING);
      const stream = openCommands(w);
      try {
        await stream.live;
        expect(stream.received).toEqual([]);
        await alice.client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.CANCELLED });
        const [command] = await stream.until(1);
        expect(stop(command!)).toEqual(expect.objectContaining({ id: `stop:${a.lease!.sessionId}`, sessionId: a.lease!.sessionId, reason: "task cancelled" }));
      } finally {
        await stream.close();
      }
    },
    TEST_TIMEOUT,
  );

  it(
    "sends a stop for a session stopped through SessionService, and for one whose task was deleted (its session gone with it)",
    async () => {
      const alice = await newUser();
      const [first, second] = [await createTask(alice), await createTask(alice)];
      const w = await newWorker(alice, { maxConcurrentSessions: 2 });
      const [a, b] = [await claim(w), await claim(w)];
      const stream = openCommands(w);
      try {
        await stream.live;
        await alice.client(SessionService).stopSession({ sessionId: a.lease!.sessionId, reason: "wrong branch" });
        await stream.until(1);
        const deletedTask = a.taskId === first.id ? second.id : first.id;
        await alice.client(TaskService).deleteTask({ id: deletedTask });
        const commands = await stream.until(2);
        expect(commands.map(stop)).toEqual([
          expect.objectContaining({ sessionId: a.lease!.sessionId, reason: "stopped by its user: wrong branch" }),
          expect.objectContaining({ sessionId: b.lease!.sessionId, reason: "task deleted" }),
        ]);
      } finally {
        await stream.close();
      }
    },
    TEST_TIMEOUT,
  );

  it(
    "sends pending commands first on a new stream, with heartbeats and polls, until they are acknowledged",
    async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      await alice.client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.CANCELLED });
      const id = `stop:${a.lease!.sessionId}`;

      // Queued before any stream was open: the first stream sends it after its keep-alive.
      const first = openCommands(w);
      try {
        expect((await first.until(1)).map((c) => c.id)).toEqual([id]);
        expect(first.keepAlives()).toBe(1);
      } finally {
        await first.close();
      }
      // Not acknowledged: the next stream, a heartbeat and a poll carry it again.
      const second = openCommands(w);
      try {
        expect((await second.until(1)).map((c) => c.id)).toEqual([id]);
      } finally {
        await second.close();
      }
      expect((await w.client.heartbeat({ leases: [a.lease!] })).commands.map((c) => c.id)).toEqual([id]);
      expect((await poll(w)).commands.map((c) => c.id)).toEqual([id]);

      // Another worker's acknowledgement of it changes nothing; the worker's own ends it.
      const other = await newWorker(alice);
      await other.client.acknowledgeCommands({ commandIds: [id] });
      expect((await poll(w)).commands.map((c) => c.id)).toEqual([id]);
      await w.client.acknowledgeCommands({ commandIds: [id, id, "stop:unknown"] });
      expect((await w.client.heartbeat({ leases: [] })).commands).toEqual([]);
      expect((await poll(w)).commands).toEqual([]);
      // Acknowledging again is no error.
      await w.client.acknowledgeCommands({ commandIds: [id] });
      const third = openCommands(w);
      try {
        await third.live;
        // A command made after it still arrives on this stream, and the acknowledged one never came.
        const next = await createTask(alice);
        const b = await claim(w);
        expect(b.taskId).toBe(next.id);
        await alice.client(TaskService).updateTaskStatus({ id: next.id, status: TaskStatus.CANCELLED });
        expect((await third.until(1)).map((c) => c.id)).toEqual([`stop:${b.lease!.sessionId}`]);
      } finally {
        await third.close();
      }
    },
    TEST_TIMEOUT,
  );

  it(
    "ends a waiting GetTask at once, with no assignment, when a command for its worker is made",
    async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice, { maxConcurrentSessions: 2 });
      const a = await claim(w);
      // Nothing else is queued for alice: this poll waits (far longer than the test may run).
      const waiting = tracked(poll(w, 120));
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(waiting.settled()).toBe(false);
      await alice.client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.CANCELLED });
      const res = await waiting.promise;
      expect(res.assignment).toBeUndefined();
      expect(res.commands.map(stop)).toEqual([expect.objectContaining({ sessionId: a.lease!.sessionId, reason: "task cancelled" })]);
    },
    TEST_TIMEOUT,
  );

  it(
    "tells a worker whose lease the health monitor took, and one whose unstarted work went back when it began draining",
    async () => {
      const alice = await newUser();
      await createTask(alice);
      await createTask(alice);
      const silent = await newWorker(alice);
      const draining = await newWorker(alice);
      const a = await claim(silent);
      const b = await claim(draining);
      await report(silent, a, SessionState.RUNNING);
      // The draining worker hands b back at once: it never started it.
      await draining.client.heartbeat({ status: WorkerStatus.DRAINING, leases: [b.lease!] });
      expect((await draining.client.heartbeat({ status: WorkerStatus.DRAINING, leases: [] })).commands.map(stop)).toEqual([
        expect.objectContaining({ sessionId: b.lease!.sessionId, reason: "it went back to the queue unstarted" }),
      ]);
      // Past three heartbeat intervals of silence the monitor loses a; the worker, still alive
      // after all, hears why on its stream.
      const stream = openCommands(silent);
      try {
        await stream.live;
        clock.advance(31);
        await t.server.workerHealth.tick();
        const [command] = await stream.until(1);
        expect(stop(command!)?.sessionId).toBe(a.lease!.sessionId);
        expect(stop(command!)?.reason).toMatch(/^its lease was lost: its worker missed 3 heartbeats/);
      } finally {
        await stream.close();
      }
    },
    TEST_TIMEOUT,
  );

  it("keeps one worker's commands from another's stream", async () => {
    const alice = await newUser();
    const task = await createTask(alice);
    const w = await newWorker(alice);
    const other = await newWorker(alice);
    const a = await claim(w);
    const mine = openCommands(w);
    const theirs = openCommands(other);
    try {
      await Promise.all([mine.live, theirs.live]);
      await alice.client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.CANCELLED });
      expect((await mine.until(1)).map((c) => c.id)).toEqual([`stop:${a.lease!.sessionId}`]);
      // The other stream was woken by nothing of its own; a heartbeat of its worker carries nothing.
      expect((await other.client.heartbeat({ leases: [] })).commands).toEqual([]);
      expect(theirs.received).toEqual([]);
    } finally {
      await mine.close();
      await theirs.close();
    }
  });

  it("refuses bad acknowledgements, and a user's credential on the command stream", async () => {
    const alice = await newUser();
    const w = await newWorker(alice);
    await expectInvalid(w.client.acknowledgeCommands({ commandIds: [""] }), "command_ids[0]");
    await expectInvalid(w.client.acknowledgeCommands({ commandIds: ["x".repeat(129)] }), "command_ids[0]");
    await expectInvalid(w.client.acknowledgeCommands({ commandIds: ["a\nb"] }), "command_ids[0]");
    await expectInvalid(w.client.acknowledgeCommands({ commandIds: Array.from({ length: 1001 }, (_, i) => `stop:${i}`) }), "command_ids");
    const asUser = clientWith(t, WorkerService, alice.accessToken);
    await expectCode(
      (async () => {
        for await (const _ of asUser.receiveCommands({}));
      })(),
      Code.PermissionDenied,
    );
  });

  it("ends an open command stream cleanly when the server shuts down", async () => {
    const other = await startTestServer(dialect, multiUserEnv(provider, ENV));
    const { newUser: user, newWorker: worker } = dispatchFixtures({ server: () => other, provider: () => provider, userPrefix: "commands-shutdown", workerName: "w" });
    let closed = false;
    try {
      const w = await worker(await user());
      const stream = openCommands(w);
      await stream.live;
      await other.close();
      closed = true;
      // The stream ended without an error (a reading error would reject close()).
      await stream.close();
      expect(stream.received).toEqual([]);
    } finally {
      if (!closed) await other.close();
    }
  });

  it("logs no lease token while commands flow", () => {
    for (const token of fx.leaseTokens) expect(logLines.join("\n")).not.toContain(token);
  });
});

describe.runIf(runsOn("postgres"))("worker commands across two replicas", () => {
  let provider: TestProvider;
  let replicas: Replicas;
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    provider = await startOidcProvider();
    replicas = await startReplicas(multiUserEnv(provider, ENV));
    ({ a, b } = replicas);
  });

  afterAll(async () => {
    await replicas?.close();
    await provider?.close();
  });

  it(
    "streams a stop made through one replica to a worker whose stream is on the other, by NOTIFY",
    async () => {
      const onA = dispatchFixtures({ server: () => a, provider: () => provider, userPrefix: "commands-replica", workerName: "replica worker" });
      const alice = await onA.newUser();
      const task = await onA.createTask(alice);
      // The worker lives on B: it registers, claims and streams there.
      const w = await onA.newWorker(alice, {}, b);
      const claimed = await onA.claim(w);
      const stream = openCommands(w);
      try {
        await stream.live;
        await alice.client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.CANCELLED });
        const [command] = await stream.until(1);
        expect(stop(command!)).toEqual(expect.objectContaining({ sessionId: claimed.lease!.sessionId, reason: "task cancelled" }));
      } finally {
        await stream.close();
      }
    },
    TEST_TIMEOUT,
  );
});
