// Dispatch through the generated clients over HTTP, on both databases: workers claim queued
// runs with GetTask (a long poll), each claim atomic and fenced by a lease; ReportStatus moves
// the session and its task; Heartbeat renews leases and names the lost ones; UpdateTaskStatus
// cannot pretend a run finished. Each test works as its own user, so that one test's queued
// work is no other's (the configured token's workers, which serve everyone, take agent types
// no other test uses).
import { createHash, randomUUID } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentType, ExecutionState, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import type { RepositoryGroup } from "../../gen/foreman/v1/repository_pb.js";
import { TaskService, type TaskChange, type UnitTask } from "../../gen/foreman/v1/task_pb.js";
import { SessionService } from "../../gen/foreman/v1/session_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { newId } from "../../src/store/codec.js";
import { requeueSession } from "../../src/store/agent-sessions.js";
import { DIALECTS } from "../helpers/databases.js";
import { dispatchFixtures, expectLeaseLost, sleep, tracked, unit } from "../helpers/dispatch.js";
import { registerWorker, signIn, type User } from "../helpers/fixtures.js";
import { clientWith, movableClock, startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { UNKNOWN_ID, expectCode, expectError, expectInvalid } from "../helpers/rpc-errors.js";
import type { TestServer } from "../helpers/server.js";

const CONFIGURED_REGISTRATION_TOKEN = "configured-worker-registration-token-for-dispatch";
/** Long polls in tests that prove a wake-up wait this long, beyond the test's own timeout. */
const LONG_WAIT = 60;
const TEST_TIMEOUT = 20_000;
const LEASE_SECONDS = 30;

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

describe.each(DIALECTS)("dispatch on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const clock = movableClock();
  const logLines: string[] = [];
  const { leaseTokens, groups, newUser, newWorker, createTask, getTask, sessionOf, poll, claim, report } = dispatchFixtures({
    server: () => t,
    provider: () => provider,
    userPrefix: "dispatch",
    workerName: "dispatch worker",
    configuredToken: CONFIGURED_REGISTRATION_TOKEN,
  });

  beforeAll(async () => {
    provider = await startOidcProvider();
    // No backstop within a test's time: a poll that returns with work was woken for it.
    t = await startMultiUserServer(
      dialect,
      provider,
      {
        FOREMAN_WORKER_REGISTRATION_TOKEN: CONFIGURED_REGISTRATION_TOKEN,
        FOREMAN_STREAM_POLL_SECONDS: "3600",
        FOREMAN_MAX_POLL_SECONDS: String(LONG_WAIT),
        // Every worker and user of this file is a client of its own, with an HTTP/2 connection
        // that stays open, all from 127.0.0.1: more than the default cap of 256 by the end.
        FOREMAN_MAX_CONNECTIONS_PER_ADDRESS: "0",
        // The clock moves past leases here: the health monitor sweeps in its own tests only.
        FOREMAN_HEALTH_CHECK_SECONDS: "3600",
      },
      { clock: clock.now, logLines },
    );
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  const db = () => t.server.db.kysely;

  describe("RegisterWorker", () => {
    it("gives a restarted worker that presents its previous credential its id back, with a new credential and the new capabilities", async () => {
      const alice = await newUser();
      const { secret } = await alice.registrationToken();
      const first = await registerWorker(t, secret, { name: "box", agentTypes: [AgentType.CODEX], maxConcurrentSessions: 1 });
      const again = await clientWith(t, WorkerService, first.workerToken).registerWorker({
        registrationToken: secret,
        name: "box after restart",
        version: "2.0.0",
        agentTypes: [AgentType.CLAUDE_CODE, AgentType.AMP],
        labels: { zone: "eu" },
        maxConcurrentSessions: 3,
      });
      expect(again.workerId).toBe(first.workerId);
      expect(again.workerToken).not.toBe(first.workerToken);
      expect(again.maxPollSeconds).toBe(LONG_WAIT);
      // The old credential ended with the re-registration; the new one works.
      await expectCode(clientWith(t, WorkerService, first.workerToken).heartbeat({}), Code.Unauthenticated);
      await clientWith(t, WorkerService, again.workerToken).heartbeat({});
      const row = await db().selectFrom("workers").selectAll().where("id", "=", first.workerId).executeTakeFirstOrThrow();
      const json = (v: unknown) => (typeof v === "string" ? JSON.parse(v) : v);
      expect(row.name).toBe("box after restart");
      expect(row.version).toBe("2.0.0");
      expect(json(row.agent_types)).toEqual(["claude_code", "amp"]);
      expect(json(row.labels)).toEqual({ zone: "eu" });
      expect(row.max_concurrent_sessions).toBe(3);
      expect(row.credential_hash).toBe(sha256(again.workerToken));
      expect(await db().selectFrom("workers").select("id").where("owner_id", "=", alice.id).execute()).toHaveLength(1);
    });

    it("gives a new id to a worker whose previous credential is another owner's, unknown, or unregistered", async () => {
      const alice = await newUser();
      const bob = await newUser();
      const alices = await registerWorker(t, (await alice.registrationToken()).secret);
      const bobSecret = (await bob.registrationToken()).secret;
      const bobs = await clientWith(t, WorkerService, alices.workerToken).registerWorker({ registrationToken: bobSecret, name: "bob's" });
      expect(bobs.workerId).not.toBe(alices.workerId);
      // Alice's worker kept its credential: bob's registration did not take her worker over.
      await clientWith(t, WorkerService, alices.workerToken).heartbeat({});
      const unknown = await clientWith(t, WorkerService, `fwk_${"x".repeat(43)}`).registerWorker({ registrationToken: bobSecret, name: "new" });
      expect([alices.workerId, bobs.workerId]).not.toContain(unknown.workerId);
      await clientWith(t, WorkerService, bobs.workerToken).unregisterWorker({});
      const after = await clientWith(t, WorkerService, bobs.workerToken).registerWorker({ registrationToken: bobSecret, name: "bob's again" });
      expect(after.workerId).not.toBe(bobs.workerId);
    });
  });

  describe("GetTask", () => {
    it("returns queued work at once, with everything the worker needs, and a lease", async () => {
      const alice = await newUser();
      const task = await createTask(alice, { agentType: AgentType.CODEX, agentModel: "gpt-5", prompt: "Add a changelog entry" });
      expect(task.executionState).toBe(ExecutionState.QUEUED);
      const w = await newWorker(alice);
      const before = clock.now().getTime();
      const res = await poll(w, LONG_WAIT);
      const a = res.assignment!;
      expect(res.commands).toEqual([]);
      expect(a.taskId).toBe(task.id);
      expect(a.agentTaskId).toBe(task.agentTasks[0]!.id);
      expect(a.prompt).toBe("Add a changelog entry");
      expect(a.agentType).toBe(AgentType.CODEX);
      expect(a.agentModel).toBe("gpt-5");
      expect(a.hasSecrets).toBe(false);
      const repository = (await alice.repositories.listRepositories({ workspaceId: task.workspaceId })).repositories[0]!;
      expect(a.repositories.map((r) => ({ ...r, $typeName: undefined }))).toEqual([
        {
          $typeName: undefined,
          repositoryId: repository.id,
          name: repository.name,
          // A path on the server's port; no base commit, as this server keeps no clones.
          cloneUrl: `/git/sessions/${a.lease!.sessionId}/${repository.id}.git`,
          baseBranch: repository.defaultBranch,
          branchName: task.branchName,
          baseCommit: "",
        },
      ]);
      const lease = a.lease!;
      expect(lease.sessionId).toBe(task.agentTasks[0]!.sessions[0]!.id);
      expect(lease.attempt).toBe(1);
      expect(lease.leaseToken).toMatch(/^fls_[A-Za-z0-9_-]{43}$/);
      const expires = timestampDate(lease.expireTime!).getTime();
      expect(expires).toBeGreaterThanOrEqual(before + LEASE_SECONDS * 1000);
      expect(expires).toBeLessThanOrEqual(clock.now().getTime() + LEASE_SECONDS * 1000);

      const after = unit(await getTask(alice, task.id));
      expect(after.status).toBe(TaskStatus.IN_PROGRESS);
      expect(after.executionState).toBe(ExecutionState.ASSIGNED);
      const session = after.agentTasks[0]!.sessions[0]!;
      expect(session.state).toBe(SessionState.ASSIGNED);
      expect(session.workerId).toBe(w.id);
      // Nothing more is queued for this worker.
      expect((await poll(w)).assignment).toBeUndefined();
    }, TEST_TIMEOUT);

    it(
      "waits, and returns the moment a task is created, long before its wait or the backstop",
      async () => {
        const alice = await newUser();
        const w = await newWorker(alice);
        const waiting = tracked(poll(w, LONG_WAIT));
        await sleep(200);
        expect(waiting.settled()).toBe(false);
        const task = await createTask(alice);
        const { assignment } = await waiting.promise;
        expect(assignment?.taskId).toBe(task.id);
      },
      TEST_TIMEOUT,
    );

    it("wakes a waiting poll per queued session, and the others keep waiting", async () => {
      const alice = await newUser();
      const workers = [await newWorker(alice), await newWorker(alice), await newWorker(alice)];
      const abort = new AbortController();
      const polls = workers.map((w) => tracked(poll(w, LONG_WAIT, randomUUID(), abort.signal)));
      await sleep(200);
      const made = [await createTask(alice), await createTask(alice)];
      // Which two get them depends on the wake-ups' order: on SQLite the two that waited longest;
      // on PostgreSQL a replica hears its own NOTIFY too, and a second poll wakes, finds the
      // session taken and waits again, at the back.
      while (polls.filter((p) => p.settled()).length < 2) await sleep(5);
      const claimed = await Promise.all(polls.filter((p) => p.settled()).map(async (p) => (await p.promise).assignment!.taskId));
      expect(claimed.sort()).toEqual(made.map((m) => m.id).sort());
      await sleep(100);
      expect(polls.filter((p) => !p.settled())).toHaveLength(1);
      abort.abort();
      await Promise.allSettled(polls.map((p) => p.promise));
    }, TEST_TIMEOUT);

    it("stops waiting for a client that went away: the next work wakes a poll that still waits", async () => {
      const alice = await newUser();
      const gone = await newWorker(alice);
      const abort = new AbortController();
      const leaving = poll(gone, LONG_WAIT, randomUUID(), abort.signal).catch(() => undefined);
      await sleep(150);
      abort.abort();
      await leaving;
      await sleep(100);
      const waiter = await newWorker(alice);
      const waiting = tracked(poll(waiter, LONG_WAIT));
      await sleep(150);
      const task = await createTask(alice);
      // Had the aborted poll stayed subscribed, the one wake would have gone to it (it waited longest).
      expect((await waiting.promise).assignment?.taskId).toBe(task.id);
    }, TEST_TIMEOUT);

    it("returns no assignment after wait_seconds when no work comes", async () => {
      const alice = await newUser();
      const w = await newWorker(alice);
      const started = performance.now();
      const res = await poll(w, 1);
      expect(res.assignment).toBeUndefined();
      expect(res.commands).toEqual([]);
      expect(performance.now() - started).toBeGreaterThanOrEqual(950);
    });

    it("returns the same claim to a retry with the same poll id, and refuses the id to another worker and after the claim ended", async () => {
      const alice = await newUser();
      await createTask(alice);
      await createTask(alice);
      const w = await newWorker(alice, { maxConcurrentSessions: 2 });
      const pollId = randomUUID();
      const first = (await poll(w, 0, pollId)).assignment!;
      const retried = (await poll(w, 0, pollId)).assignment!;
      expect(retried).toEqual(first);
      // Concurrent retries too.
      const retries = await Promise.all(Array.from({ length: 5 }, () => poll(w, 0, pollId)));
      for (const r of retries) expect(r.assignment).toEqual(first);
      // Only one session was claimed under the id: the other task is still queued.
      const held = await db().selectFrom("agent_sessions").select(["id", "state"]).where("worker_id", "=", w.id).execute();
      expect(held).toEqual([{ id: first.lease!.sessionId, state: "assigned" }]);

      const other = await newWorker(alice);
      await expectInvalid(poll(other, 0, pollId), "poll_id");
      const bob = await newUser();
      await expectInvalid(poll(await newWorker(bob), 0, pollId), "poll_id");

      await report(w, first, SessionState.SUCCEEDED);
      const ended = await expectInvalid(poll(w, 0, pollId), "poll_id");
      expect(ended.rawMessage).toContain("ended");
      // A fresh id claims the next task.
      expect((await poll(w)).assignment?.lease?.sessionId).not.toBe(first.lease!.sessionId);
    });

    it("never gives a worker more than max_concurrent_sessions, even to concurrent polls, and wakes a full worker's poll when one ends", async () => {
      const alice = await newUser();
      const made: UnitTask[] = [];
      for (let i = 0; i < 5; i++) made.push(await createTask(alice));
      const w = await newWorker(alice, { maxConcurrentSessions: 2 });
      const results = await Promise.all(Array.from({ length: 10 }, () => poll(w)));
      const claimed = results.flatMap((r) => (r.assignment ? [r.assignment] : []));
      expect(claimed).toHaveLength(2);
      expect(new Set(claimed.map((a) => a.taskId)).size).toBe(2);
      expect((await poll(w)).assignment).toBeUndefined();

      const waiting = tracked(poll(w, LONG_WAIT));
      await sleep(200);
      expect(waiting.settled()).toBe(false);
      await report(w, claimed[0]!, SessionState.SUCCEEDED);
      const third = (await waiting.promise).assignment!;
      expect(claimed.map((a) => a.taskId)).not.toContain(third.taskId);
      // Oldest first: the first three tasks, in order.
      expect([...claimed.map((a) => a.taskId), third.taskId].sort()).toEqual(made.slice(0, 3).map((m) => m.id).sort());
    }, TEST_TIMEOUT);

    it("gives a user's worker only that user's tasks, and a worker of the configured token everyone's", async () => {
      const alice = await newUser();
      const bob = await newUser();
      const aliceTask = await createTask(alice, { agentType: AgentType.AIDER });
      const bobTask = await createTask(bob, { agentType: AgentType.AIDER });
      const bobsWorker = await newWorker(bob, { maxConcurrentSessions: 10 });
      const alicesWorker = await newWorker(alice, { maxConcurrentSessions: 10 });
      // Bob's worker gets bob's task and never alice's, however often it asks.
      expect((await claim(bobsWorker)).taskId).toBe(bobTask.id);
      for (let i = 0; i < 3; i++) expect((await poll(bobsWorker)).assignment).toBeUndefined();
      // Nor can it report on alice's session: for it, the session does not exist.
      const aliceSession = (await sessionOf(alice, aliceTask.id)).id;
      await expectCode(bobsWorker.client.reportStatus({ sessionId: aliceSession, leaseToken: "fls_x", state: SessionState.RUNNING }), Code.NotFound);

      const pool = await newWorker("configured", { agentTypes: [AgentType.AIDER], maxConcurrentSessions: 10 });
      const third = await createTask(bob, { agentType: AgentType.AIDER });
      const fourth = await createTask(alice, { agentType: AgentType.AIDER });
      const fromPool = [await claim(pool), await claim(pool)].map((a) => a.taskId);
      // Alice's first task went to the pool (her worker had not asked yet), then bob's third.
      expect(fromPool).toEqual([aliceTask.id, third.id]);
      expect((await claim(alicesWorker)).taskId).toBe(fourth.id);
      expect((await poll(alicesWorker)).assignment).toBeUndefined();
      expect((await poll(pool)).assignment).toBeUndefined();
    });

    it("matches agent types: a worker gets only the agents it runs, and one that names none runs every agent", async () => {
      const alice = await newUser();
      const claude = await createTask(alice, { agentType: AgentType.CLAUDE_CODE });
      const codex = await createTask(alice, { agentType: AgentType.CODEX });
      const command = await createTask(alice, { agentType: AgentType.COMMAND });
      const codexOnly = await newWorker(alice, { agentTypes: [AgentType.CODEX], maxConcurrentSessions: 5 });
      expect((await claim(codexOnly)).taskId).toBe(codex.id);
      expect((await poll(codexOnly)).assignment).toBeUndefined();
      const any = await newWorker(alice, { maxConcurrentSessions: 5 });
      expect([(await claim(any)).taskId, (await claim(any)).taskId]).toEqual([claude.id, command.id]);

      // A waiting worker is not woken for an agent it does not run.
      const waiting = tracked(poll(codexOnly, LONG_WAIT));
      await sleep(150);
      await createTask(alice, { agentType: AgentType.GEMINI_CLI });
      await sleep(150);
      expect(waiting.settled()).toBe(false);
      const next = await createTask(alice, { agentType: AgentType.CODEX });
      expect((await waiting.promise).assignment?.taskId).toBe(next.id);
    }, TEST_TIMEOUT);

    it("carries a reviewer's feedback in the next run's prompt", async () => {
      const alice = await newUser();
      const task = await createTask(alice, { prompt: "Paginate the audit log" });
      const w = await newWorker(alice);
      await report(w, await claim(w), SessionState.SUCCEEDED);
      await alice.client(TaskService).requestChanges({ id: task.id, feedback: "Use cursors, not offsets." });
      const next = await claim(w);
      expect(next.taskId).toBe(task.id);
      expect(next.prompt).toContain("Paginate the audit log");
      expect(next.prompt).toContain("Use cursors, not offsets.");
      expect(next.agentTaskId).not.toBe(task.agentTasks[0]!.id);
      expect(next.repositories[0]!.branchName).toBe(task.branchName);
    });

    it.each([2, 50])(
      "of %i workers racing for one session, 200 times, exactly one claims it each time",
      async (n) => {
        const user = await newUser();
        // AMP: the race's own agent, so its workers (which serve every user) take nothing else.
        const workers = await Promise.all(Array.from({ length: n }, () => newWorker("configured", { agentTypes: [AgentType.AMP] })));
        for (let round = 0; round < 200; round++) {
          const task = await createTask(user, { agentType: AgentType.AMP });
          const results = await Promise.all(workers.map((w) => poll(w).then((res) => ({ w, res }))));
          const winners = results.filter((r) => r.res.assignment !== undefined);
          expect(winners.map((r) => r.res.assignment!.taskId), `round ${round}`).toEqual([task.id]);
          await report(winners[0]!.w, winners[0]!.res.assignment!, SessionState.SUCCEEDED);
        }
        const sessions = await db().selectFrom("agent_sessions").select(["state", "worker_id"]).where("owner_id", "=", user.id).execute();
        expect(sessions).toHaveLength(200);
        expect(sessions.every((s) => s.state === "succeeded" && s.worker_id !== null)).toBe(true);
      },
      240_000,
    );

    it("refuses invalid polls, naming the field", async () => {
      const w = await newWorker(await newUser());
      await expectInvalid(w.client.getTask({ pollId: "", waitSeconds: 0 }), "poll_id");
      await expectInvalid(w.client.getTask({ pollId: "p".repeat(129), waitSeconds: 0 }), "poll_id");
      await expectInvalid(w.client.getTask({ pollId: "two\nlines", waitSeconds: 0 }), "poll_id");
      const negative = await expectInvalid(w.client.getTask({ pollId: randomUUID(), waitSeconds: -1 }), "wait_seconds");
      expect(negative.rawMessage).toContain(String(LONG_WAIT));
      await expectInvalid(w.client.getTask({ pollId: "", waitSeconds: -5 }), "poll_id", "wait_seconds");
    });
  });

  describe("ReportStatus", () => {
    /** Follows a workspace's task changes from now; next() is the next change. */
    function watch(user: User, workspaceId: string) {
      const abort = new AbortController();
      const stream = user.client(TaskService).watchTasks({ workspaceId, cursor: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
      return {
        async next(): Promise<TaskChange> {
          for (;;) {
            const { value, done } = await stream.next();
            if (done) throw new Error("the stream ended");
            if (value.event.case === "change") return value.event.value;
          }
        },
        stop: () => abort.abort(),
      };
    }

    it("moves the session and the task, RUNNING then SUCCEEDED to in_review, and each change reaches WatchTasks", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const watcher = watch(alice, task.workspaceId);
      try {
        // The stream starts from now: make sure it is reading before the first change.
        await sleep(200);
        const w = await newWorker(alice);
        const a = await claim(w);
        let change = await watcher.next();
        expect(unit(change.task).executionState).toBe(ExecutionState.ASSIGNED);

        expect((await report(w, a, SessionState.RUNNING)).state).toBe(SessionState.RUNNING);
        change = await watcher.next();
        expect(unit(change.task).executionState).toBe(ExecutionState.RUNNING);
        expect(unit(change.task).status).toBe(TaskStatus.IN_PROGRESS);
        expect(unit(change.task).agentTasks[0]!.sessions[0]!.startTime).toBeDefined();

        const done = await report(w, a, SessionState.SUCCEEDED, { exitCode: 0, headCommit: "0123456789ABCDEF0123456789abcdef01234567" });
        expect(done).toMatchObject({ state: SessionState.SUCCEEDED, stopRequested: false });
        change = await watcher.next();
        const after = unit(change.task);
        expect(after.status).toBe(TaskStatus.IN_REVIEW);
        expect(after.executionState).toBe(ExecutionState.IDLE);
        const session = after.agentTasks[0]!.sessions[0]!;
        expect(session.state).toBe(SessionState.SUCCEEDED);
        expect(session.exitCode).toBe(0);
        expect(session.endTime).toBeDefined();
        const row = await db().selectFrom("agent_sessions").select(["head_commit", "lease_expires_at"]).where("id", "=", a.lease!.sessionId).executeTakeFirstOrThrow();
        expect(row).toEqual({ head_commit: "0123456789abcdef0123456789abcdef01234567", lease_expires_at: null });
      } finally {
        watcher.stop();
      }
    }, TEST_TIMEOUT);

    it("accepts the same report twice once: a repeat changes nothing, and a different one after the end is refused", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      const events = async () => (await db().selectFrom("task_events").select("id").where("task_id", "=", task.id).execute()).length;
      await report(w, a, SessionState.RUNNING);
      const afterRunning = await events();
      expect((await report(w, a, SessionState.RUNNING)).state).toBe(SessionState.RUNNING);
      expect(await events()).toBe(afterRunning);
      await report(w, a, SessionState.SUCCEEDED, { exitCode: 0 });
      const afterEnd = await events();
      const ended = await getTask(alice, task.id);
      const repeats = await Promise.all([report(w, a, SessionState.SUCCEEDED, { exitCode: 0 }), report(w, a, SessionState.SUCCEEDED, { exitCode: 3 })]);
      for (const r of repeats) expect(r.state).toBe(SessionState.SUCCEEDED);
      expect(await events()).toBe(afterEnd);
      expect(await getTask(alice, task.id)).toEqual(ended);
      await expectLeaseLost(report(w, a, SessionState.FAILED), "ended as succeeded");
      await expectLeaseLost(report(w, a, SessionState.RUNNING), "ended as succeeded");
      expect(await getTask(alice, task.id)).toEqual(ended);
    });

    it("allows SUCCEEDED straight after the claim, without RUNNING", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      await report(w, await claim(w), SessionState.SUCCEEDED);
      const after = unit(await getTask(alice, task.id));
      expect(after.status).toBe(TaskStatus.IN_REVIEW);
      expect(after.agentTasks[0]!.sessions[0]!.startTime).toBeUndefined();
    });

    it("fails the task on FAILED, keeping the error (bounded), and refuses an oversized error", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      await report(w, a, SessionState.RUNNING);
      await expectInvalid(report(w, a, SessionState.FAILED, { errorMessage: "e".repeat(4001) }), "error_message");
      await expectInvalid(report(w, a, SessionState.FAILED, { errorMessage: "bell\u0007" }), "error_message");
      expect(unit(await getTask(alice, task.id)).executionState).toBe(ExecutionState.RUNNING);
      const error = `npm test failed\n${"x".repeat(3984)}`;
      expect(error).toHaveLength(4000);
      await report(w, a, SessionState.FAILED, { errorMessage: error, exitCode: 1 });
      const after = unit(await getTask(alice, task.id));
      expect(after.status).toBe(TaskStatus.FAILED);
      expect(after.executionState).toBe(ExecutionState.IDLE);
      expect(after.agentTasks[0]!.sessions[0]!).toMatchObject({ state: SessionState.FAILED, exitCode: 1, errorMessage: error });
      expect(after.statusReason).toHaveLength(2000);
      expect(after.statusReason.startsWith("npm test failed\n")).toBe(true);
      // RetryTask queues attempt 2, which a worker claims with a new lease.
      await alice.client(TaskService).retryTask({ id: task.id });
      const second = await claim(w);
      expect(second.lease!.attempt).toBe(2);
      expect(second.lease!.sessionId).not.toBe(a.lease!.sessionId);
      // The first attempt's token is stale: its session ended.
      await expectLeaseLost(report(w, a, SessionState.RUNNING));
      // And it is no lease of the second.
      await expectLeaseLost(w.client.reportStatus({ sessionId: second.lease!.sessionId, leaseToken: a.lease!.leaseToken, state: SessionState.RUNNING }));
    });

    it("ends the run on CANCELLED and leaves the task in progress, for the user to move on", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      await report(w, await claim(w), SessionState.CANCELLED);
      const after = unit(await getTask(alice, task.id));
      expect(after.status).toBe(TaskStatus.IN_PROGRESS);
      expect(after.executionState).toBe(ExecutionState.IDLE);
      expect(after.agentTasks[0]!.sessions[0]!.state).toBe(SessionState.CANCELLED);
      // With nothing running, the user may now say the work is ready for review.
      const moved = await alice.client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.IN_REVIEW });
      expect(unit(moved.task).status).toBe(TaskStatus.IN_REVIEW);
    });

    it("moves a composite task's succeeded planning run to pending_approval", async () => {
      const alice = await newUser();
      const { compositeTask } = await alice.client(TaskService).createCompositeTask({ repositoryGroupId: groups.get(alice.id)!.id, prompt: "Split the service" });
      const w = await newWorker(alice);
      const a = await claim(w);
      expect(a.taskId).toBe(compositeTask!.id);
      await report(w, a, SessionState.SUCCEEDED);
      const after = (await getTask(alice, compositeTask!.id))!.task.value!;
      expect(after.status).toBe(TaskStatus.PENDING_APPROVAL);
      expect(after.executionState).toBe(ExecutionState.IDLE);
    });

    it("refuses a garbage token, another session's token and another worker's report with LEASE_LOST", async () => {
      const alice = await newUser();
      await createTask(alice);
      await createTask(alice);
      const w = await newWorker(alice, { maxConcurrentSessions: 2 });
      const [a, b] = [await claim(w), await claim(w)];
      const sessionId = a.lease!.sessionId;
      for (const leaseToken of ["garbage", `fls_${"A".repeat(43)}`, b.lease!.leaseToken, "t".repeat(5000)]) {
        const error = await expectLeaseLost(w.client.reportStatus({ sessionId, leaseToken, state: SessionState.RUNNING }), "not this session's lease");
        expect(error.rawMessage).not.toContain(leaseToken.slice(0, 20));
      }
      // The right token from another worker (a leaked token) is no lease of that worker's.
      const thief = await newWorker(alice);
      await expectLeaseLost(report(thief, a, SessionState.SUCCEEDED));
      expect((await report(w, a, SessionState.RUNNING)).state).toBe(SessionState.RUNNING);
    });

    it("refuses the token of a run the user cancelled", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      await alice.client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.CANCELLED });
      await expectLeaseLost(report(w, a, SessionState.SUCCEEDED));
      expect(unit(await getTask(alice, task.id)).status).toBe(TaskStatus.CANCELLED);
      const { lostSessionIds, commands } = await w.client.heartbeat({ leases: [a.lease!] });
      expect(lostSessionIds).toEqual([a.lease!.sessionId]);
      // With a command to stop it, saying why.
      expect(commands.map((c) => [c.id, c.command.case, c.command.value])).toEqual([
        [`stop:${a.lease!.sessionId}`, "stopSession", expect.objectContaining({ sessionId: a.lease!.sessionId, reason: "task cancelled" })],
      ]);
    });

    it("revokes the lease of a session its user stops (StopSession): the next heartbeat names it lost, with a stop command; the task stays in progress, idle", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      await report(w, a, SessionState.RUNNING);
      const sessionsClient = alice.client(SessionService);
      const { session } = await sessionsClient.stopSession({ sessionId: a.lease!.sessionId, reason: "wrong repository" });
      expect(session?.state).toBe(SessionState.CANCELLED);
      await expectLeaseLost(report(w, a, SessionState.SUCCEEDED), "ended as cancelled");
      const res = await w.client.heartbeat({ leases: [a.lease!] });
      expect(res.lostSessionIds).toEqual([a.lease!.sessionId]);
      expect(res.commands.map((c) => c.command.value)).toEqual([
        expect.objectContaining({ sessionId: a.lease!.sessionId, reason: "stopped by its user: wrong repository" }),
      ]);
      const after = unit(await getTask(alice, task.id));
      expect(after.status).toBe(TaskStatus.IN_PROGRESS);
      expect(after.executionState).toBe(ExecutionState.IDLE);
      // Again: the ended session as it is.
      expect((await sessionsClient.stopSession({ sessionId: a.lease!.sessionId, reason: "" })).session?.state).toBe(SessionState.CANCELLED);
      // A queued session stops too, and no worker gets it.
      const queued = await createTask(alice);
      const pending = await sessionOf(alice, queued.id);
      await sessionsClient.stopSession({ sessionId: pending.id, reason: "" });
      expect((await poll(w)).assignment).toBeUndefined();
      expect(unit(await getTask(alice, queued.id)).executionState).toBe(ExecutionState.IDLE);
      // Another user's session does not exist for them; a bad id or reason is named.
      const bob = await newUser();
      await expectCode(bob.client(SessionService).stopSession({ sessionId: pending.id, reason: "" }), Code.NotFound);
      await expectInvalid(sessionsClient.stopSession({ sessionId: "nope", reason: "" }), "session_id");
      await expectInvalid(sessionsClient.stopSession({ sessionId: pending.id, reason: "a\nb" }), "reason");
    });

    it("revokes the lease of a running run whose task is deleted: the next heartbeat names it lost", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      await report(w, a, SessionState.RUNNING);
      await alice.client(TaskService).deleteTask({ id: task.id });
      const res = await w.client.heartbeat({ leases: [a.lease!] });
      expect(res.leases).toEqual([]);
      expect(res.lostSessionIds).toEqual([a.lease!.sessionId]);
      // The session went with its task.
      await expectCode(report(w, a, SessionState.SUCCEEDED), Code.NotFound);
      // Its slot is free again.
      await createTask(alice);
      expect((await claim(w)).lease!.sessionId).not.toBe(a.lease!.sessionId);
    });

    it("refuses invalid reports and unknown sessions", async () => {
      const alice = await newUser();
      await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      const base = { sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken, state: SessionState.RUNNING };
      await expectInvalid(w.client.reportStatus({ ...base, sessionId: "" }), "session_id");
      await expectInvalid(w.client.reportStatus({ ...base, sessionId: "not-a-uuid" }), "session_id");
      await expectInvalid(w.client.reportStatus({ ...base, leaseToken: "" }), "lease_token");
      await expectInvalid(w.client.reportStatus({ ...base, state: SessionState.UNSPECIFIED }), "state");
      for (const state of [SessionState.QUEUED, SessionState.ASSIGNED, SessionState.LOST, 42 as SessionState]) {
        await expectInvalid(w.client.reportStatus({ ...base, state }), "state");
      }
      await expectInvalid(w.client.reportStatus({ ...base, state: SessionState.SUCCEEDED, headCommit: "main" }), "head_commit");
      await expectInvalid(w.client.reportStatus({ ...base, sessionId: "x", leaseToken: "", state: SessionState.UNSPECIFIED }), "lease_token", "session_id", "state");
      await expectCode(w.client.reportStatus({ ...base, sessionId: UNKNOWN_ID }), Code.NotFound);
      // None of it touched the session.
      expect((await report(w, a, SessionState.RUNNING)).state).toBe(SessionState.RUNNING);
    });
  });

  describe("Heartbeat", () => {
    it("renews the worker and its leases, and names the leases it no longer holds", async () => {
      const alice = await newUser();
      await createTask(alice);
      await createTask(alice);
      await createTask(alice);
      const w = await newWorker(alice, { maxConcurrentSessions: 3 });
      const [a, b, c] = [await claim(w), await claim(w), await claim(w)];
      await report(w, c, SessionState.SUCCEEDED);
      clock.advance(20);
      const seen = clock.now().getTime();
      const res = await w.client.heartbeat({
        leases: [a.lease!, b.lease!, c.lease!, { sessionId: UNKNOWN_ID, attempt: 1, leaseToken: "fls_unknown" }, { ...b.lease!, leaseToken: "garbage" }],
      });
      expect(res.heartbeatIntervalSeconds).toBe(10);
      expect(res.commands).toEqual([]);
      expect(res.leases.map((l) => l.sessionId)).toEqual([a.lease!.sessionId, b.lease!.sessionId]);
      for (const l of res.leases) {
        const expires = timestampDate(l.expireTime!).getTime();
        expect(expires).toBeGreaterThanOrEqual(seen + LEASE_SECONDS * 1000);
        expect(expires).toBeGreaterThan(timestampDate(a.lease!.expireTime!).getTime());
      }
      expect(res.leases[0]!.attempt).toBe(1);
      // b is renewed by its own token; the garbage entry beside it loses nothing.
      expect(res.lostSessionIds.sort()).toEqual([c.lease!.sessionId, UNKNOWN_ID].sort());
      const row = await db().selectFrom("workers").select("last_heartbeat_at").where("id", "=", w.id).executeTakeFirstOrThrow();
      expect(new Date(row.last_heartbeat_at).getTime()).toBeGreaterThanOrEqual(seen);

      // Past the first expiry, the renewed lease still holds: the worker may report.
      clock.advance(15);
      expect((await report(w, a, SessionState.RUNNING)).state).toBe(SessionState.RUNNING);
      // Without a heartbeat for a whole lease, it is lost: refused, and named as lost.
      clock.advance(LEASE_SECONDS + 1);
      await expectLeaseLost(report(w, a, SessionState.SUCCEEDED), "expired");
      const late = await w.client.heartbeat({ leases: [a.lease!, b.lease!] });
      expect(late.leases).toEqual([]);
      expect(late.lostSessionIds.sort()).toEqual([a.lease!.sessionId, b.lease!.sessionId].sort());
    });

    it("renews only the caller's own leases: another worker's lease, its token and all, comes back lost and unrenewed, with no command", async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const holder = await newWorker(alice);
      const a = await claim(holder);
      await report(holder, a, SessionState.RUNNING);
      const expiry = async () => (await db().selectFrom("agent_sessions").select("lease_expires_at").where("id", "=", a.lease!.sessionId).executeTakeFirstOrThrow()).lease_expires_at;
      const before = await expiry();
      clock.advance(5);
      // The same user's other worker, and another user's, with the leaked lease.
      const other = await newWorker(alice);
      const bobs = await newWorker(await newUser());
      for (const w of [other, bobs]) {
        const res = await w.client.heartbeat({ leases: [a.lease!] });
        expect(res.leases).toEqual([]);
        expect(res.lostSessionIds).toEqual([a.lease!.sessionId]);
        expect(res.commands).toEqual([]);
      }
      expect(await expiry()).toEqual(before);
      // Nor may either report on it; the holder still may.
      await expectLeaseLost(report(other, a, SessionState.SUCCEEDED), "not this session's lease");
      await expectCode(report(bobs, a, SessionState.SUCCEEDED), Code.NotFound);
      expect(unit(await getTask(alice, task.id)).executionState).toBe(ExecutionState.RUNNING);
      const renewed = await holder.client.heartbeat({ leases: [a.lease!] });
      expect(renewed.leases.map((l) => l.sessionId)).toEqual([a.lease!.sessionId]);
      expect(await expiry()).not.toEqual(before);
      expect((await report(holder, a, SessionState.SUCCEEDED)).state).toBe(SessionState.SUCCEEDED);
    });

    it("refuses leases it cannot read, naming the field", async () => {
      const w = await newWorker(await newUser());
      await expectInvalid(w.client.heartbeat({ leases: [{ sessionId: "nope", leaseToken: "t" }] }), "leases[0].session_id");
      await expectInvalid(w.client.heartbeat({ leases: [{ sessionId: UNKNOWN_ID, leaseToken: "t" }, { sessionId: UNKNOWN_ID, leaseToken: "" }] }), "leases[1].lease_token");
      await expectInvalid(w.client.heartbeat({ status: 9 as never }), "status");
    });
  });

  describe("UpdateTaskStatus", () => {
    it("will not move a task into in_review, or a plan into pending_approval, while its run is queued or running", async () => {
      const alice = await newUser();
      const tasks = alice.client(TaskService);
      const task = await createTask(alice);
      const queued = await expectCode(tasks.updateTaskStatus({ id: task.id, status: TaskStatus.IN_REVIEW }), Code.FailedPrecondition);
      expect(queued.rawMessage).toContain("queued");
      expect(queued.rawMessage).toContain("cancelled");
      const w = await newWorker(alice);
      const a = await claim(w);
      await expectCode(tasks.updateTaskStatus({ id: task.id, status: TaskStatus.IN_REVIEW }), Code.FailedPrecondition);
      await report(w, a, SessionState.RUNNING);
      const running = await expectCode(tasks.updateTaskStatus({ id: task.id, status: TaskStatus.IN_REVIEW }), Code.FailedPrecondition);
      expect(running.rawMessage).toContain("running");
      expect(unit(await getTask(alice, task.id)).executionState).toBe(ExecutionState.RUNNING);
      // The move the message offers works, and ends the run (and its lease).
      await tasks.updateTaskStatus({ id: task.id, status: TaskStatus.CANCELLED });
      await expectLeaseLost(report(w, a, SessionState.SUCCEEDED));

      const { compositeTask } = await tasks.createCompositeTask({ repositoryGroupId: groups.get(alice.id)!.id, prompt: "Plan it" });
      await expectCode(tasks.updateTaskStatus({ id: compositeTask!.id, status: TaskStatus.PENDING_APPROVAL }), Code.FailedPrecondition);
    });
  });

  it("stores only hashes of lease tokens, and logs none", async () => {
    expect(leaseTokens.size).toBeGreaterThan(100);
    const rows = await db().selectFrom("agent_sessions").selectAll().execute();
    const hashes = new Set(rows.map((r) => r.lease_token_hash));
    const leaks: string[] = [];
    const stored = rows.map((r) => JSON.stringify(r)).join("\n");
    const logged = logLines.join("\n");
    let hashed = 0;
    for (const token of leaseTokens) {
      const secret = token.slice("fls_".length);
      if (stored.includes(secret)) leaks.push(`database: ${token.slice(0, 8)}…`);
      if (logged.includes(secret)) leaks.push(`log: ${token.slice(0, 8)}…`);
      if (hashes.has(sha256(token))) hashed++;
    }
    expect(leaks).toEqual([]);
    expect(hashed).toBeGreaterThan(0);
    expect(logged).toContain("session claimed");
  });
});

describe.each(DIALECTS)("dispatch's backstop and bounds on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  let user: User;
  let group: RepositoryGroup;

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startMultiUserServer(dialect, provider, { FOREMAN_STREAM_POLL_SECONDS: "1", FOREMAN_MAX_POLL_SECONDS: "3", FOREMAN_HEALTH_CHECK_SECONDS: "3600" });
    user = await signIn(t, provider, "backstop");
    group = (await user.groupOfOne()).group;
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  async function newWorker(): Promise<Client<typeof WorkerService>> {
    const res = await registerWorker(t, (await user.registrationToken()).secret, { maxConcurrentSessions: 5 });
    expect(res.maxPollSeconds).toBe(3);
    return clientWith(t, WorkerService, res.workerToken);
  }

  it("caps wait_seconds at the server's max poll", async () => {
    const w = await newWorker();
    const started = performance.now();
    expect((await w.getTask({ pollId: randomUUID(), waitSeconds: 3600 })).assignment).toBeUndefined();
    expect(performance.now() - started).toBeGreaterThanOrEqual(2900);
  }, TEST_TIMEOUT);

  it("finds work queued without a wake-up by its backstop, and the requeued session's old lease is refused", async () => {
    await user.client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "Requeue me" });
    const first = await newWorker();
    const lost = (await first.getTask({ pollId: randomUUID(), waitSeconds: 0 })).assignment!;
    const second = await newWorker();
    const waiting = tracked(second.getTask({ pollId: randomUUID(), waitSeconds: 3 }));
    await sleep(100);
    // The health monitor's requeue (a later phase), with its wake-ups lost.
    const silent = { ...t.server.db.adapter, notifyOnCommit: async () => {} };
    const requeued = await t.server.db.kysely.transaction().execute((trx) => requeueSession(trx, silent, lost.lease!.sessionId, newId(Date.now()), new Date()));
    expect(requeued).toBeDefined();
    const { assignment } = await waiting.promise;
    expect(assignment?.lease?.sessionId).toBe(requeued);
    expect(assignment?.lease?.attempt).toBe(2);
    expect(assignment?.agentTaskId).toBe(lost.agentTaskId);
    await expectError(first.reportStatus({ sessionId: lost.lease!.sessionId, leaseToken: lost.lease!.leaseToken, state: SessionState.RUNNING }), {
      code: Code.FailedPrecondition,
      reason: "LEASE_LOST",
      message: "ended as lost",
    });
  }, TEST_TIMEOUT);

  it("ends a waiting poll with no assignment when the server shuts down", async () => {
    const w = await newWorker();
    const waiting = tracked(w.getTask({ pollId: randomUUID(), waitSeconds: 3 }));
    await sleep(150);
    const started = performance.now();
    await t.server.close();
    expect((await waiting.promise).assignment).toBeUndefined();
    // It did not wait out its 3 seconds.
    expect(performance.now() - started).toBeLessThan(2900);
  }, TEST_TIMEOUT);
});
