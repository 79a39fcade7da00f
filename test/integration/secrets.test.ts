// Task secrets through the generated clients over HTTP, on both databases: SendSecrets and
// ClearSecrets for the caller's own task, GetSecrets for the worker holding the current lease
// only; nobody gets them after the task ends, after ClearSecrets, after their TTL or after a
// lease loss. Then two replicas on one PostgreSQL: sent on one, fetched through the other over
// the signed replica route; the holder gone, the other says so. Every value sent is a fresh
// random string, looked for at the end in the database file (or a pg_dump), the logs (trace
// level) and the error bodies.
import { createHash, createHmac, randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, type Client, type ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { SecretsService } from "../../gen/foreman/v1/secrets_pb.js";
import { SessionService } from "../../gen/foreman/v1/session_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService, type Assignment } from "../../gen/foreman/v1/worker_pb.js";
import { loadConfig, parseSecretKey } from "../../src/config.js";
import { SecretVault } from "../../src/core/secret-vault.js";
import { endedRuns } from "../../src/store/secret-holders.js";
import { REPLICA_SECRETS_PATH, replicaAddress } from "../../src/server/replica-secrets.js";
import { createTestDatabase, databaseText, DIALECTS, pgDump, runsOn, type TestDatabase } from "../helpers/databases.js";
import { dispatchFixtures, expectLeaseLost, type TestWorker } from "../helpers/dispatch.js";
import { caller, registerWorker, type Caller, type User } from "../helpers/fixtures.js";
import { clientWith, movableClock, startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { UNKNOWN_ID, expectCode, expectError, expectInvalid, violatedFields } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const TEST_TIMEOUT = 30_000;
const LEASE_SECONDS = 30;

/** Every value a test sent, to look for where none may be. */
const sentValues = new Set<string>();
/** A fresh value, remembered. */
function secretValue(label = "v"): string {
  const value = `${label}-sekrit-${randomBytes(12).toString("hex")}`;
  sentValues.add(value);
  return value;
}

/** The text of every error a test saw, with its details (what a client reads), to look for values in. */
const errorBodies: string[] = [];
function keepError(error: ConnectError): ConnectError {
  errorBodies.push(JSON.stringify({ message: error.rawMessage, code: error.code, details: error.details, metadata: [...error.metadata] }));
  return error;
}

function valuesIn(text: string): string[] {
  return [...sentValues].filter((v) => text.includes(v));
}

describe.each(DIALECTS)("task secrets on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const clock = movableClock();
  const logLines: string[] = [];
  const { groups, newUser, newWorker, createTask, getUnit, claim, report } = dispatchFixtures({
    server: () => t,
    provider: () => provider,
    userPrefix: "secrets",
    workerName: "secrets worker",
  });

  beforeAll(async () => {
    provider = await startOidcProvider();
    // The health monitor sweeps only when a test calls it.
    t = await startMultiUserServer(dialect, provider, { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_HEALTH_CHECK_SECONDS: "3600" }, { clock: clock.now, logLines });
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  const db = () => t.server.db.kysely;
  const secretsOf = (user: User) => user.client(SecretsService);
  const fetchSecrets = (w: TestWorker, a: Assignment, token = a.lease!.leaseToken) => w.client.getSecrets({ sessionId: a.lease!.sessionId, leaseToken: token });
  const holderRow = (taskId: string) => db().selectFrom("secret_holders").selectAll().where("task_id", "=", taskId).executeTakeFirst();

  /** A user's task with secrets sent, and a worker of theirs holding its run. */
  async function sentAndClaimed(values: Record<string, string> = { API_KEY: secretValue() }, ttlSeconds = 0) {
    const alice = await newUser();
    const task = await createTask(alice);
    const sent = await secretsOf(alice).sendSecrets({ taskId: task.id, secrets: values, ttlSeconds });
    const w = await newWorker(alice);
    const a = await claim(w);
    expect(a.taskId).toBe(task.id);
    return { alice, task, sent, w, a, values };
  }

  it(
    "hands the secrets to the worker holding the lease, and only to it",
    async () => {
      const values = { API_KEY: secretValue("api"), DB_PASSWORD: secretValue("db"), _X9: "" };
      const before = clock.now().getTime();
      const { alice, task, sent, w, a } = await sentAndClaimed(values);
      expect(sent.names).toEqual(["API_KEY", "DB_PASSWORD", "_X9"]);
      const expires = timestampDate(sent.expireTime!).getTime();
      expect(expires).toBeGreaterThanOrEqual(before + 3600_000);
      expect(expires).toBeLessThanOrEqual(clock.now().getTime() + 3600_000);
      expect(a.hasSecrets).toBe(true);
      expect((await fetchSecrets(w, a)).secrets).toEqual(values);
      // Again: a worker may fetch them as often as it needs while it holds the lease.
      expect((await fetchSecrets(w, a)).secrets).toEqual(values);

      // Another worker of the same user, with the holder's token or its own made-up one.
      const other = await newWorker(alice);
      keepError(await expectLeaseLost(other.client.getSecrets({ sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken }), "not this session's lease"));
      keepError(await expectLeaseLost(fetchSecrets(w, a, "fls_garbage"), "not this session's lease"));
      keepError(await expectLeaseLost(fetchSecrets(w, a, "x".repeat(5000)), "not this session's lease"));
      // Another user's worker does not see the session; an unknown one is not found either.
      const bob = await newUser();
      const bobs = await newWorker(bob);
      keepError(await expectCode(bobs.client.getSecrets({ sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken }), Code.NotFound));
      keepError(await expectCode(w.client.getSecrets({ sessionId: UNKNOWN_ID, leaseToken: a.lease!.leaseToken }), Code.NotFound));
      keepError(await expectInvalid(w.client.getSecrets({ sessionId: "nope", leaseToken: "" }), "session_id", "lease_token"));
      // A user's credential is refused on WorkerService.
      keepError(await expectCode(clientWith(t, WorkerService, alice.token).getSecrets({ sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken }), Code.PermissionDenied));

      // The database says who holds them and until when: no value and no name.
      const row = await holderRow(task.id);
      expect(row).toBeDefined();
      expect(valuesIn(JSON.stringify(row))).toEqual([]);
      expect(JSON.stringify(row)).not.toContain("API_KEY");
    },
    TEST_TIMEOUT,
  );

  it(
    "refuses a stale lease: once it expired, its worker gets none",
    async () => {
      const { w, a, values } = await sentAndClaimed();
      expect((await fetchSecrets(w, a)).secrets).toEqual(values);
      clock.advance(LEASE_SECONDS + 1);
      keepError(await expectLeaseLost(fetchSecrets(w, a), "lease expired"));
    },
    TEST_TIMEOUT,
  );

  it(
    "says has_secrets false and answers an empty map for a task with no secrets",
    async () => {
      const alice = await newUser();
      const task = await createTask(alice);
      const w = await newWorker(alice);
      const a = await claim(w);
      expect(a.taskId).toBe(task.id);
      expect(a.hasSecrets).toBe(false);
      expect((await fetchSecrets(w, a)).secrets).toEqual({});
    },
    TEST_TIMEOUT,
  );

  it(
    "replaces the set with a second SendSecrets, and holds secrets sent after the claim too",
    async () => {
      const { alice, task, w, a } = await sentAndClaimed({ FIRST: secretValue() });
      const second = { SECOND: secretValue(), THIRD: secretValue() };
      const sent = await secretsOf(alice).sendSecrets({ taskId: task.id, secrets: second, ttlSeconds: 60 });
      expect(sent.names).toEqual(["SECOND", "THIRD"]);
      expect((await fetchSecrets(w, a)).secrets).toEqual(second);
    },
    TEST_TIMEOUT,
  );

  it(
    "gives none after ClearSecrets, to anybody; clearing again is no error",
    async () => {
      const { alice, task, w, a, values } = await sentAndClaimed();
      expect((await fetchSecrets(w, a)).secrets).toEqual(values);
      await secretsOf(alice).clearSecrets({ taskId: task.id });
      expect((await fetchSecrets(w, a)).secrets).toEqual({});
      expect(await holderRow(task.id)).toBeUndefined();
      await secretsOf(alice).clearSecrets({ taskId: task.id });
    },
    TEST_TIMEOUT,
  );

  it(
    "gives none after the TTL, and the holder row goes",
    async () => {
      // A minute: far longer than the test takes, so the vault's own timer (real time) is not what ends them here.
      const { w, a, task, values, sent } = await sentAndClaimed(undefined, 60);
      expect(timestampDate(sent.expireTime!).getTime()).toBeLessThanOrEqual(clock.now().getTime() + 60_000);
      expect((await fetchSecrets(w, a)).secrets).toEqual(values);
      // Past the TTL, the lease (30 s) renewed by heartbeats on the way: the lease holds, the secrets do not.
      for (const step of [25, 25, 11]) {
        clock.advance(step);
        expect((await w.client.heartbeat({ leases: [a.lease!] })).lostSessionIds).toEqual([]);
      }
      expect((await fetchSecrets(w, a)).secrets).toEqual({});
      expect(await holderRow(task.id)).toBeUndefined();
    },
    TEST_TIMEOUT,
  );

  it(
    "gives none once the task has ended, not even to the next run's worker, and refuses secrets for an ended task",
    async () => {
      const { alice, task, w, a, values } = await sentAndClaimed();
      expect((await fetchSecrets(w, a)).secrets).toEqual(values);
      await report(w, a, SessionState.RUNNING);
      await report(w, a, SessionState.FAILED, { errorMessage: "tests failed" });
      expect((await getUnit(alice, task.id)).status).toBe(TaskStatus.FAILED);
      const failed = keepError(
        await expectCode(secretsOf(alice).sendSecrets({ taskId: task.id, secrets: { LATE: secretValue() }, ttlSeconds: 0 }), Code.FailedPrecondition),
      );
      expect(failed.rawMessage).toMatch(/has ended \(failed\)/);
      // Retried: the next run's worker gets nothing of what was sent before.
      await alice.client(TaskService).retryTask({ id: task.id });
      const next = await claim(w);
      expect(next.taskId).toBe(task.id);
      expect(next.hasSecrets).toBe(false);
      expect((await fetchSecrets(w, next)).secrets).toEqual({});
      // Sent again for this run, they are handed out again.
      const again = { AGAIN: secretValue() };
      await secretsOf(alice).sendSecrets({ taskId: task.id, secrets: again, ttlSeconds: 0 });
      expect((await fetchSecrets(w, next)).secrets).toEqual(again);
      // Cancelled: the worker's lease is revoked, and the task takes no more.
      await alice.client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.CANCELLED });
      keepError(await expectLeaseLost(fetchSecrets(w, next)));
      expect(await holderRow(task.id)).toBeDefined();
      keepError(await expectCode(secretsOf(alice).sendSecrets({ taskId: task.id, secrets: {}, ttlSeconds: 0 }), Code.FailedPrecondition));
    },
    TEST_TIMEOUT,
  );

  it(
    "gives none after a lease loss: the requeued run's next attempt gets has_secrets false and an empty map",
    async () => {
      const { alice, task, w, a, values } = await sentAndClaimed();
      expect((await fetchSecrets(w, a)).secrets).toEqual(values);
      // The worker goes silent: its lease expires, and the health monitor requeues the run.
      clock.advance(LEASE_SECONDS + 1);
      const swept = await t.server.workerHealth.tick();
      expect(swept.lost.map((l) => l.sessionId)).toContain(a.lease!.sessionId);
      const next = await newWorker(alice);
      const b = await claim(next);
      expect(b.taskId).toBe(task.id);
      expect(b.lease!.attempt).toBe(2);
      expect(b.hasSecrets).toBe(false);
      expect((await fetchSecrets(next, b)).secrets).toEqual({});
      expect(await holderRow(task.id)).toBeUndefined();
    },
    TEST_TIMEOUT,
  );

  it(
    "gives none after the user stops the session (cancelled)",
    async () => {
      const { alice, task, w, a, values } = await sentAndClaimed();
      expect((await fetchSecrets(w, a)).secrets).toEqual(values);
      await alice.client(SessionService).stopSession({ sessionId: a.lease!.sessionId, reason: "" });
      keepError(await expectLeaseLost(fetchSecrets(w, a)));
      // Secrets sent before the stop are not handed to a later run: one more of the task's sessions has ended cancelled than when they were sent.
      const row = await holderRow(task.id);
      expect(await endedRuns(db(), task.id)).toBe(Number(row!.ended_runs) + 1);
      // Moved on and retried: the next run's worker gets none of them.
      await alice.client(TaskService).updateTaskStatus({ id: task.id, status: TaskStatus.FAILED });
      await alice.client(TaskService).retryTask({ id: task.id });
      const next = await claim(w);
      expect(next.taskId).toBe(task.id);
      expect(next.hasSecrets).toBe(false);
      expect((await fetchSecrets(w, next)).secrets).toEqual({});
    },
    TEST_TIMEOUT,
  );

  it(
    "holds secrets given with CreateUnitTask from before its run is queued: the worker already waiting in GetTask gets them",
    async () => {
      const alice = await newUser();
      const w = await newWorker(alice);
      // Waiting before the task exists: its claim follows the creation's commit at once.
      const waiting = w.client.getTask({ pollId: randomUUID(), waitSeconds: 20 });
      await new Promise((resolve) => setTimeout(resolve, 200));
      const values = { API_KEY: secretValue("create"), OTHER: secretValue("create") };
      const task = await createTask(alice, { secrets: values, secretsTtlSeconds: 600 });
      const a = (await waiting).assignment!;
      expect(a.taskId).toBe(task.id);
      expect(a.hasSecrets).toBe(true);
      expect((await fetchSecrets(w, a)).secrets).toEqual(values);
      const row = await holderRow(task.id);
      expect(row).toBeDefined();
      expect(valuesIn(JSON.stringify(row))).toEqual([]);
      // Held as SendSecrets holds them: the TTL given, and a SendSecrets replaces the set.
      expect(new Date(row!.expires_at as string | Date).getTime()).toBeLessThanOrEqual(clock.now().getTime() + 600_000);
      const replacement = { API_KEY: secretValue("replaced") };
      await secretsOf(alice).sendSecrets({ taskId: task.id, secrets: replacement, ttlSeconds: 0 });
      expect((await fetchSecrets(w, a)).secrets).toEqual(replacement);

      // None given: none held.
      const plain = await createTask(alice, { secrets: {} });
      const b = await claim(await newWorker(alice));
      expect(b.taskId).toBe(plain.id);
      expect(b.hasSecrets).toBe(false);
      expect(await holderRow(plain.id)).toBeUndefined();
    },
    TEST_TIMEOUT,
  );

  it("refuses CreateUnitTask's bad secrets as SendSecrets does, naming the field and never the value, and makes no task", async () => {
    const alice = await newUser();
    const tasks = alice.client(TaskService);
    const count = async () => (await tasks.listTasks({ workspaceId: groups.get(alice.id)!.workspaceId, pageSize: 100 })).tasks.length;
    const before = await count();
    const value = secretValue("create-bad");
    const badName = keepError(await expectCode(createTask(alice, { secrets: { lower: value } }), Code.InvalidArgument));
    expect(violatedFields(badName)).toEqual(['secrets["lower"]']);
    keepError(await expectInvalid(createTask(alice, { secrets: { BIG: value + "x".repeat(64 * 1024) } }), 'secrets["BIG"]'));
    const ttl = keepError(await expectInvalid(createTask(alice, { secrets: { OK: value }, secretsTtlSeconds: -1 }), "secrets_ttl_seconds"));
    expect(ttl.rawMessage).toMatch(/1 to 86400/);
    for (const e of [badName, ttl]) expect(valuesIn(JSON.stringify(e.details) + e.rawMessage)).toEqual([]);
    expect(await count()).toBe(before);
  });

  describe("bad input", () => {
    let alice: User;
    let taskId: string;
    beforeAll(async () => {
      alice = await newUser();
      taskId = (await createTask(alice)).id;
    });

    const send = (secrets: Record<string, string>, ttlSeconds = 0, id = taskId) => secretsOf(alice).sendSecrets({ taskId: id, secrets, ttlSeconds });

    it("refuses bad names, naming each, and never the value", async () => {
      for (const name of ["lower", "1ABC", "A-B", "", "ÄPFEL", "A B", "N".repeat(129)]) {
        const value = secretValue("badname");
        const error = keepError(await expectCode(send({ [name]: value }), Code.InvalidArgument));
        expect(violatedFields(error), name).toHaveLength(1);
        expect(violatedFields(error)[0]).toMatch(/^secrets\["/);
        expect(error.rawMessage).toMatch(/name must be/);
        expect(valuesIn(JSON.stringify(error.details) + error.rawMessage)).toEqual([]);
      }
      // The longest name allowed is accepted.
      expect((await send({ ["N".repeat(128)]: "ok" })).names).toEqual(["N".repeat(128)]);
    });

    it("refuses a value or a set over its bound, saying the bound, never the value", async () => {
      const big = secretValue("big") + "x".repeat(64 * 1024);
      const one = keepError(await expectInvalid(send({ BIG: big }), "secrets[\"BIG\"]"));
      expect(one.rawMessage).toMatch(/at most 65536 bytes/);
      expect(one.rawMessage).not.toContain("xxxxxxxx");
      const parts = Object.fromEntries([1, 2, 3, 4, 5].map((i) => [`PART_${i}`, secretValue("part") + "y".repeat(60 * 1024)]));
      const total = keepError(await expectInvalid(send(parts), "secrets"));
      expect(total.rawMessage).toMatch(/at most 262144 bytes/);
      // 101 entries: the contract's bound.
      const many = Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`K${i}`, "v"]));
      keepError(await expectError(send(many), { code: Code.InvalidArgument }));
    });

    it("refuses a ttl out of range and takes the bounds", async () => {
      for (const ttl of [-1, 86401, -2147483648]) {
        const error = keepError(await expectInvalid(send({ OK: secretValue() }, ttl), "ttl_seconds"));
        expect(error.rawMessage).toMatch(/1 to 86400/);
      }
      const most = await send({ OK: "v" }, 86400);
      expect(timestampDate(most.expireTime!).getTime()).toBeGreaterThan(clock.now().getTime() + 86399_000);
    });

    it("answers another user's task, an unknown one and a bad id as it answers elsewhere", async () => {
      const bob = await newUser();
      keepError(await expectCode(secretsOf(bob).sendSecrets({ taskId, secrets: { A: secretValue() }, ttlSeconds: 0 }), Code.NotFound));
      keepError(await expectCode(secretsOf(bob).clearSecrets({ taskId }), Code.NotFound));
      keepError(await expectCode(send({ A: secretValue() }, 0, UNKNOWN_ID), Code.NotFound));
      keepError(await expectCode(secretsOf(alice).clearSecrets({ taskId: UNKNOWN_ID }), Code.NotFound));
      keepError(await expectInvalid(send({ A: secretValue() }, 0, "not-an-id"), "task_id"));
      keepError(await expectInvalid(secretsOf(alice).clearSecrets({ taskId: "" }), "task_id"));
    });

    it("puts no value in the raw error body", async () => {
      const value = secretValue("raw");
      const res = await fetch(`${t.url}/foreman.v1.SecretsService/SendSecrets`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${alice.token}` },
        body: JSON.stringify({ taskId, secrets: { "bad name": value, BIG: value + "z".repeat(70_000) }, ttlSeconds: -5 }),
      });
      const body = await res.text();
      errorBodies.push(body);
      expect(res.status).toBe(400);
      expect(body).toMatch(/ttl_seconds/);
      expect(body).not.toContain(value);
    });
  });

  it("leaves no value in the database, the logs (trace level) or any error body", async () => {
    expect(sentValues.size).toBeGreaterThan(10);
    expect(errorBodies.length).toBeGreaterThan(10);
    expect(valuesIn(errorBodies.join("\n"))).toEqual([]);
    expect(logLines.length).toBeGreaterThan(0);
    // The server did log the calls that carried them.
    expect(logLines.some((l) => l.includes("SendSecrets"))).toBe(true);
    expect(logLines.some((l) => l.includes("task secrets held"))).toBe(true);
    expect(valuesIn(logLines.join("\n"))).toEqual([]);
    const stored = await databaseText(t.database);
    // The dump holds the tables' rows (a task's prompt, say), so an absent value is absent.
    expect(stored).toContain("Fix the flaky test");
    expect(valuesIn(stored)).toEqual([]);
  });
});

describe.each(DIALECTS)("task secrets across a restart on %s", (dialect) => {
  it(
    "are gone after the server restarts, and GetSecrets says to send them again; the stale row goes",
    async () => {
      const database = await createTestDatabase(dialect);
      const env = { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_HEALTH_CHECK_SECONDS: "3600" };
      let first: TestServer | undefined = await startTestServer(dialect, env, database);
      let second: TestServer | undefined;
      try {
        const me = caller(first);
        const { group } = await me.groupOfOne();
        const { unitTask } = await me.client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "Fix the flaky test" });
        await me.client(SecretsService).sendSecrets({ taskId: unitTask!.id, secrets: { BEFORE: secretValue("restart") }, ttlSeconds: 0 });
        const { secret } = await me.registrationToken();
        const { workerToken } = await registerWorker(first, secret, { name: "restart worker" });
        const { assignment } = await clientWith(first, WorkerService, workerToken).getTask({ pollId: randomUUID(), waitSeconds: 0 });
        expect(assignment?.taskId).toBe(unitTask!.id);
        expect(assignment?.hasSecrets).toBe(true);
        const lease = { sessionId: assignment!.lease!.sessionId, leaseToken: assignment!.lease!.leaseToken };
        await first.server.close();
        first = undefined;
        // The same database (and data folder) again: the lease is still the worker's, the secrets are not.
        second = await startTestServer(dialect, env, database);
        const worker = clientWith(second, WorkerService, workerToken);
        const error = keepError(await expectCode(worker.getSecrets(lease), Code.FailedPrecondition));
        expect(error.rawMessage).toMatch(/restarted or stopped since, so they are gone; the client must send them again/);
        expect(await second.server.db.kysely.selectFrom("secret_holders").selectAll().where("task_id", "=", unitTask!.id).executeTakeFirst()).toBeUndefined();
        // The row gone, the next read is an empty map, as for a task with none.
        expect((await worker.getSecrets(lease)).secrets).toEqual({});
        expect(valuesIn(await databaseText(database))).toEqual([]);
      } finally {
        await first?.server.close();
        await second?.server.close();
        await database.drop();
      }
    },
    TEST_TIMEOUT,
  );
});

describe("the vault", () => {
  it("drops a set at its TTL by itself, and keeps a newer one", async () => {
    const vault = new SecretVault();
    vault.hold("t1", "g1", new Map([["A", "1"]]), 20);
    vault.hold("t2", "g2", new Map([["B", "2"]]), 60_000);
    expect(vault.take("t1", "g1")).toEqual({ A: "1" });
    expect(vault.take("t1", "other")).toBeUndefined();
    await vi.waitFor(() => expect(vault.take("t1", "g1")).toBeUndefined(), { timeout: 10_000 });
    expect(vault.take("t2", "g2")).toEqual({ B: "2" });
    vault.drop("t2", "older");
    expect(vault.size).toBe(1);
    vault.close();
    expect(vault.size).toBe(0);
  });
});

describe("the replica address", () => {
  const base = loadConfig({ FOREMAN_SINGLE_USER_MODE: "true" });
  it("is FOREMAN_REPLICA_URL, else FOREMAN_HOST when it is one address, else the loopback on SQLite", () => {
    expect(replicaAddress({ ...base, replicaUrl: "https://foreman-2.internal:8443" })(1)).toBe("https://foreman-2.internal:8443");
    expect(replicaAddress({ ...base, host: "10.0.0.5", databaseUrl: "postgres://x/y" })(54871)).toBe("http://10.0.0.5:54871");
    expect(replicaAddress({ ...base, host: "::1" })(7)).toBe("http://[::1]:7");
    expect(replicaAddress({ ...base, host: "0.0.0.0", databaseUrl: undefined })(9)).toBe("http://127.0.0.1:9");
  });

  it("stops the start on PostgreSQL with a wildcard host and no FOREMAN_REPLICA_URL, saying what to set", () => {
    expect(() => replicaAddress({ ...base, host: "0.0.0.0", databaseUrl: "postgres://x/y" })).toThrow(/FOREMAN_REPLICA_URL.*set FOREMAN_REPLICA_URL/s);
  });

  it("refuses a FOREMAN_REPLICA_URL that is not an http(s) origin", () => {
    expect(loadConfig({ FOREMAN_REPLICA_URL: "http://10.0.0.5:54871/" }).replicaUrl).toBe("http://10.0.0.5:54871");
    for (const bad of ["10.0.0.5:54871", "ftp://x", "http://x/path", "http://x?q=1", "not a url"]) {
      expect(() => loadConfig({ FOREMAN_REPLICA_URL: bad }), bad).toThrow(/FOREMAN_REPLICA_URL/);
    }
  });
});

describe.runIf(runsOn("postgres"))("task secrets with two replicas on one PostgreSQL database", () => {
  let database: TestDatabase;
  let a: TestServer;
  let b: TestServer;
  const logLines: string[] = [];

  beforeAll(async () => {
    database = await createTestDatabase("postgres");
    // Single-user mode on one data folder: both replicas read one secret key, as replicas given one FOREMAN_SECRET_KEY do.
    const env = { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_HEALTH_CHECK_SECONDS: "3600" };
    [a, b] = await Promise.all([startTestServer("postgres", env, database, { logLines }), startTestServer("postgres", env, database, { logLines })]);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await database?.drop();
  });

  /** A task filed on `on`, and a worker registered on and polling `via`, holding its run. */
  async function claimedOn(on: Caller, via: TestServer) {
    const { group } = await on.groupOfOne();
    const { unitTask } = await on.client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "Fix the flaky test" });
    const { secret } = await on.registrationToken();
    const reg = await registerWorker(via, secret, { name: "replica worker" });
    const worker = clientWith(via, WorkerService, reg.workerToken);
    return { task: unitTask!, worker, workerId: reg.workerId };
  }

  async function claimOf(worker: Client<typeof WorkerService>, taskId: string): Promise<Assignment> {
    const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 0 });
    expect(assignment?.taskId).toBe(taskId);
    return assignment!;
  }

  const holderOf = (taskId: string) => a.server.db.kysely.selectFrom("secret_holders").selectAll().where("task_id", "=", taskId).executeTakeFirst();

  it(
    "hands secrets sent through one replica to the lease holder polling the other, and checks the lease on both",
    async () => {
      const values = { TOKEN: secretValue("replica"), OTHER: secretValue("replica") };
      const { task, worker } = await claimedOn(caller(a), b);
      await caller(a).client(SecretsService).sendSecrets({ taskId: task.id, secrets: values, ttlSeconds: 0 });
      const claimed = await claimOf(worker, task.id);
      expect(claimed.hasSecrets).toBe(true);
      expect((await worker.getSecrets({ sessionId: claimed.lease!.sessionId, leaseToken: claimed.lease!.leaseToken })).secrets).toEqual(values);
      keepError(await expectLeaseLost(worker.getSecrets({ sessionId: claimed.lease!.sessionId, leaseToken: "fls_stale" })));
      // B asked A: A's row names A, and A logged handing them over sealed.
      const row = await holderOf(task.id);
      expect(row?.replica_url).toBe(a.url);
      expect(logLines.some((l) => l.includes("task secrets handed to a replica, sealed"))).toBe(true);
      // Cleared through B: A holds them, yet nobody gets them.
      await caller(b).client(SecretsService).clearSecrets({ taskId: task.id });
      expect((await worker.getSecrets({ sessionId: claimed.lease!.sessionId, leaseToken: claimed.lease!.leaseToken })).secrets).toEqual({});
    },
    TEST_TIMEOUT,
  );

  describe("the replica route", () => {
    /** The route's key, derived as the server does from the shared key file. */
    const routeKey = () => createHmac("sha256", parseSecretKey(readFileSync(path.join(database.dataDir, "secret.key"), "utf8"))!).update("foreman replica route v1").digest();
    const signed = (body: string, key = routeKey()) => createHmac("sha256", key).update(`request\n${REPLICA_SECRETS_PATH}\n${body}`, "utf8").digest("base64url");
    const post = (body: string, signature: string | undefined) =>
      fetch(`${a.url}${REPLICA_SECRETS_PATH}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(signature === undefined ? {} : { "x-foreman-replica-signature": signature }) },
        body,
      });

    it(
      "answers only a signed, fresh, never-seen request, and with the values sealed",
      async () => {
        const values = { SEALED_ONE: secretValue("route") };
        const { task, worker, workerId } = await claimedOn(caller(a), b);
        await caller(a).client(SecretsService).sendSecrets({ taskId: task.id, secrets: values, ttlSeconds: 0 });
        const claimed = await claimOf(worker, task.id);
        const row = (await holderOf(task.id))!;
        const request = {
          taskId: task.id,
          sessionId: claimed.lease!.sessionId,
          workerId,
          leaseTokenHash: createHash("sha256").update(claimed.lease!.leaseToken, "utf8").digest("hex"),
          generation: row.generation,
          holderReplicaId: row.replica_id,
          timestamp: Date.now(),
          nonce: randomBytes(16).toString("base64url"),
          asker: "test",
        };
        const body = JSON.stringify(request);
        expect((await post(body, undefined)).status).toBe(401);
        expect((await post(body, signed(body, randomBytes(32)))).status).toBe(401);
        const ok = await post(body, signed(body));
        expect(ok.status).toBe(200);
        const text = await ok.text();
        expect(JSON.parse(text)).toMatchObject({ kind: "secrets", nonce: request.nonce, sealed: expect.stringMatching(/^v1:/) });
        expect(valuesIn(text)).toEqual([]);
        // The same request again is a replay.
        expect((await post(body, signed(body))).status).toBe(401);
        const old = JSON.stringify({ ...request, nonce: "fresh-nonce", timestamp: Date.now() - 10 * 60_000 });
        expect((await post(old, signed(old))).status).toBe(401);
        // The holder checks the lease itself: another worker id is refused.
        const foreign = JSON.stringify({ ...request, nonce: "another-nonce", workerId: randomUUID() });
        expect(JSON.parse(await (await post(foreign, signed(foreign))).text())).toMatchObject({ kind: "lease_lost" });
        // A replica id that is not the holder's (it restarted) is told the secrets are gone.
        const restarted = JSON.stringify({ ...request, nonce: "third-nonce", holderReplicaId: randomUUID() });
        expect(JSON.parse(await (await post(restarted, signed(restarted))).text())).toMatchObject({ kind: "gone" });
      },
      TEST_TIMEOUT,
    );
  });

  it(
    "says the secrets are gone, and to send them again, when the replica holding them stopped; the stale row goes",
    async () => {
      const c = await startTestServer("postgres", { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_HEALTH_CHECK_SECONDS: "3600" }, database, { logLines });
      let closed = false;
      try {
        const { task, worker } = await claimedOn(caller(c), b);
        await caller(c).client(SecretsService).sendSecrets({ taskId: task.id, secrets: { GONE: secretValue("gone") }, ttlSeconds: 0 });
        const claimed = await claimOf(worker, task.id);
        const lease = { sessionId: claimed.lease!.sessionId, leaseToken: claimed.lease!.leaseToken };
        expect(Object.keys((await worker.getSecrets(lease)).secrets)).toEqual(["GONE"]);
        await c.server.close();
        closed = true;
        const error = keepError(await expectCode(worker.getSecrets(lease), Code.FailedPrecondition));
        expect(error.rawMessage).toMatch(/restarted or stopped.*send them again/);
        expect(await holderOf(task.id)).toBeUndefined();
        // Sent again (through a live replica), they are handed out again.
        const again = { GONE: secretValue("again") };
        await caller(a).client(SecretsService).sendSecrets({ taskId: task.id, secrets: again, ttlSeconds: 0 });
        expect((await worker.getSecrets(lease)).secrets).toEqual(again);
      } finally {
        if (!closed) await c.server.close();
      }
    },
    TEST_TIMEOUT,
  );

  it("leaves no value in the database, the logs of either replica or any error", async () => {
    expect(valuesIn(logLines.join("\n"))).toEqual([]);
    expect(valuesIn(errorBodies.join("\n"))).toEqual([]);
    const dump = await pgDump(database.databaseUrl!);
    expect(dump).toContain("secret_holders");
    expect(valuesIn(dump)).toEqual([]);
  });
});
