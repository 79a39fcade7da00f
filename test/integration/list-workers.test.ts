// AuthService.ListWorkers, on both databases: a user sees the workers of their own registration
// tokens and the pool's (the configured token's), never another user's; the status follows
// what the worker does (a held session, draining, the health monitor's unhealthy, unregistered);
// a pool worker names only the caller's sessions; pages; and in single-user mode the local user
// sees every worker. The clock moves instead of tests waiting, and each test sweeps itself.
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { toJsonString, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService, ListWorkersResponseSchema, type ListWorkersRequestSchema } from "../../gen/foreman/v1/auth_pb.js";
import { AgentType, SessionState } from "../../gen/foreman/v1/common_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService, WorkerStatus, type Worker } from "../../gen/foreman/v1/worker_pb.js";
import { DIALECTS } from "../helpers/databases.js";
import { dispatchFixtures } from "../helpers/dispatch.js";
import { caller, registerWorker, signIn, type User } from "../helpers/fixtures.js";
import { clientWith, movableClock, startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { expectCode, expectInvalid } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const CONFIGURED_REGISTRATION_TOKEN = "list-workers-configured-registration-token-01234";
/** Past three missed heartbeats of the default 10 s interval. */
const SILENT = 31;
const run = promisify(execFile);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

type ListFilter = Omit<MessageInitShape<typeof ListWorkersRequestSchema>, "$typeName">;

/** Every worker the user sees (one page of the largest size). */
async function listAll(user: { auth: User["auth"] }, request: ListFilter = {}): Promise<Worker[]> {
  const res = await user.auth.listWorkers({ pageSize: 1000, ...request });
  expect(res.nextPageToken).toBe("");
  return res.workers;
}

async function workerOf(user: User, id: string, request: ListFilter = {}): Promise<Worker | undefined> {
  return (await listAll(user, request)).find((w) => w.id === id);
}

describe.each(DIALECTS)("ListWorkers on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const clock = movableClock();
  const { newUser, newWorker, createTask, claim, report } = dispatchFixtures({
    server: () => t,
    provider: () => provider,
    userPrefix: "lister",
    workerName: "listed worker",
    configuredToken: CONFIGURED_REGISTRATION_TOKEN,
  });

  beforeAll(async () => {
    provider = await startOidcProvider();
    // The monitor sweeps only when a test says so.
    t = await startMultiUserServer(
      dialect,
      provider,
      { FOREMAN_WORKER_REGISTRATION_TOKEN: CONFIGURED_REGISTRATION_TOKEN, FOREMAN_HEALTH_CHECK_SECONDS: "3600", FOREMAN_STREAM_POLL_SECONDS: "3600" },
      { clock: clock.now },
    );
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  it("shows a user their own workers and the pool's, with what they registered, and never another user's", async () => {
    const [alice, bob] = [await newUser(), await newUser()];
    const { token, secret } = await alice.registrationToken("alice's box");
    const before = clock.now().getTime();
    const mine = await registerWorker(t, secret, {
      name: "alice's worker",
      hostname: "box.example",
      version: "1.2.3",
      agentTypes: [AgentType.CODEX, AgentType.CLAUDE_CODE],
      labels: { gpu: "yes", "zone/a": "1" },
      maxConcurrentSessions: 3,
    });
    const bobs = await newWorker(bob, { name: "bob's worker" });
    const pool = await newWorker("configured", { name: "pool worker" });

    const seen = await listAll(alice);
    const ids = seen.map((w) => w.id);
    expect(ids).toContain(mine.workerId);
    expect(ids).toContain(pool.id);
    expect(ids).not.toContain(bobs.id);
    expect(seen.filter((w) => !w.servesEveryUser && w.ownerId !== alice.id)).toEqual([]);

    const w = seen.find((x) => x.id === mine.workerId)!;
    expect(w.id).toMatch(UUID);
    expect(w).toMatchObject({
      name: "alice's worker",
      hostname: "box.example",
      version: "1.2.3",
      status: WorkerStatus.IDLE,
      agentTypes: [AgentType.CODEX, AgentType.CLAUDE_CODE],
      labels: { gpu: "yes", "zone/a": "1" },
      maxConcurrentSessions: 3,
      heldSessionCount: 0,
      heldSessionIds: [],
      servesEveryUser: false,
      ownerId: alice.id,
      registrationTokenId: token.id,
    });
    expect(timestampDate(w.registerTime!).getTime()).toBeGreaterThanOrEqual(before);
    expect(w.lastHeartbeatTime).toEqual(w.registerTime);
    expect(w.unregisterTime).toBeUndefined();

    const p = seen.find((x) => x.id === pool.id)!;
    expect(p).toMatchObject({ name: "pool worker", servesEveryUser: true, ownerId: "", registrationTokenId: "", maxConcurrentSessions: 1, agentTypes: [] });

    // Bob sees his own and the pool's; alice's are not there, unregistered ones included.
    const bobSees = (await listAll(bob, { includeUnregistered: true })).map((x) => x.id);
    expect(bobSees).toContain(bobs.id);
    expect(bobSees).toContain(pool.id);
    expect(bobSees).not.toContain(mine.workerId);

    // No credential and no registration secret in the answer.
    const json = toJsonString(ListWorkersResponseSchema, await alice.auth.listWorkers({ pageSize: 1000 }));
    for (const s of [mine.workerToken, secret, pool.token, CONFIGURED_REGISTRATION_TOKEN]) expect(json).not.toContain(s);
  });

  it("shows BUSY with the session while a worker holds one, and IDLE again once it is reported", async () => {
    const alice = await newUser();
    const task = await createTask(alice);
    const w = await newWorker(alice, { maxConcurrentSessions: 2 });
    const a = await claim(w);
    expect(a.taskId).toBe(task.id);
    const busy = await workerOf(alice, w.id);
    expect(busy).toMatchObject({ status: WorkerStatus.BUSY, heldSessionCount: 1, heldSessionIds: [a.lease!.sessionId] });

    await report(w, a, SessionState.RUNNING);
    expect((await workerOf(alice, w.id))?.heldSessionIds).toEqual([a.lease!.sessionId]);
    await report(w, a, SessionState.SUCCEEDED);
    expect(await workerOf(alice, w.id)).toMatchObject({ status: WorkerStatus.IDLE, heldSessionCount: 0, heldSessionIds: [] });
  });

  it("counts every session a pool worker holds, but names only the caller's", async () => {
    const [alice, bob] = [await newUser(), await newUser()];
    // Only this test queues COMMAND runs, so this pool worker claims exactly these two.
    const pool = await newWorker("configured", { agentTypes: [AgentType.COMMAND], maxConcurrentSessions: 4 });
    const taskIds = new Map<string, string>();
    for (const user of [alice, bob]) taskIds.set(user.id, (await createTask(user, { agentType: AgentType.COMMAND })).id);
    const first = await claim(pool);
    const second = await claim(pool);
    const sessionOf = (taskOwner: User) => [first, second].find((a) => a.taskId === taskIds.get(taskOwner.id))!.lease!.sessionId;

    const aliceSees = (await workerOf(alice, pool.id))!;
    const bobSees = (await workerOf(bob, pool.id))!;
    expect(aliceSees.status).toBe(WorkerStatus.BUSY);
    expect(aliceSees.heldSessionCount).toBe(2);
    expect(bobSees.heldSessionCount).toBe(2);
    expect(aliceSees.heldSessionIds).toEqual([sessionOf(alice)]);
    expect(bobSees.heldSessionIds).toEqual([sessionOf(bob)]);
  });

  it("shows DRAINING while the worker drains, UNHEALTHY once the monitor finds it silent, and active again after a heartbeat", async () => {
    const alice = await newUser();
    const w = await newWorker(alice);
    await w.client.heartbeat({ status: WorkerStatus.DRAINING });
    expect((await workerOf(alice, w.id))?.status).toBe(WorkerStatus.DRAINING);
    await w.client.heartbeat({ status: WorkerStatus.IDLE });
    expect((await workerOf(alice, w.id))?.status).toBe(WorkerStatus.IDLE);

    // A worker silent for three intervals, holding a session: unhealthy, its session lost.
    await createTask(alice);
    await claim(w);
    expect((await workerOf(alice, w.id))?.heldSessionCount).toBe(1);
    clock.advance(SILENT);
    expect((await t.server.workerHealth.tick()).unhealthy).toContain(w.id);
    const silent = (await workerOf(alice, w.id))!;
    expect(silent).toMatchObject({ status: WorkerStatus.UNHEALTHY, heldSessionCount: 0, heldSessionIds: [] });
    const seenAt = timestampDate(silent.lastHeartbeatTime!).getTime();

    await w.client.heartbeat({});
    const back = (await workerOf(alice, w.id))!;
    expect(back.status).toBe(WorkerStatus.IDLE);
    expect(timestampDate(back.lastHeartbeatTime!).getTime()).toBeGreaterThanOrEqual(seenAt + SILENT * 1000);

    // The server's statuses are not a worker's to send.
    await expectInvalid(w.client.heartbeat({ status: WorkerStatus.UNHEALTHY }), "status");
    await expectInvalid(w.client.heartbeat({ status: WorkerStatus.UNREGISTERED }), "status");
  });

  it("leaves unregistered workers out unless asked for them", async () => {
    const alice = await newUser();
    const w = await newWorker(alice);
    await w.client.unregisterWorker({});
    expect(await workerOf(alice, w.id)).toBeUndefined();
    const gone = (await workerOf(alice, w.id, { includeUnregistered: true }))!;
    expect(gone.status).toBe(WorkerStatus.UNREGISTERED);
    expect(gone.heldSessionCount).toBe(0);
    expect(timestampDate(gone.unregisterTime!).getTime()).toBeGreaterThanOrEqual(timestampDate(gone.registerTime!).getTime());
  });

  it("pages in registration order, each page token for the filter it was made with", async () => {
    const alice = await newUser();
    for (let i = 0; i < 5; i++) await newWorker(alice, { name: `paged ${i}` });
    const gone = await newWorker(alice, { name: "paged gone" });
    await gone.client.unregisterWorker({});

    for (const includeUnregistered of [false, true]) {
      const all = await listAll(alice, { includeUnregistered });
      expect(all.filter((w) => w.name.startsWith("paged")).map((w) => w.name)).toEqual(
        includeUnregistered ? ["paged 0", "paged 1", "paged 2", "paged 3", "paged 4", "paged gone"] : ["paged 0", "paged 1", "paged 2", "paged 3", "paged 4"],
      );
      const paged: Worker[] = [];
      let pageToken = "";
      do {
        const res = await alice.auth.listWorkers({ pageSize: 2, pageToken, includeUnregistered });
        expect(res.workers.length).toBeLessThanOrEqual(2);
        paged.push(...res.workers);
        pageToken = res.nextPageToken;
      } while (pageToken !== "");
      expect(paged.map((w) => w.id)).toEqual(all.map((w) => w.id));
    }

    const { nextPageToken } = await alice.auth.listWorkers({ pageSize: 1 });
    expect(nextPageToken).not.toBe("");
    await expectInvalid(alice.auth.listWorkers({ pageSize: 1, pageToken: nextPageToken, includeUnregistered: true }), "page_token");
    await expectInvalid(alice.auth.listWorkers({ pageToken: "not-a-page-token" }), "page_token");
    await expectInvalid(alice.auth.listWorkers({ pageSize: -1 }), "page_size");
  });

  it("answers buf curl through reflection, with no schema at hand", async () => {
    const alice = await newUser();
    const w = await newWorker(alice, { name: "curled" });
    const cacheDir = await mkdtemp(join(tmpdir(), "foreman-buf-"));
    try {
      const { stdout } = await run(
        join(process.cwd(), "node_modules", ".bin", "buf"),
        ["curl", "--http2-prior-knowledge", "-H", `Authorization: Bearer ${alice.accessToken}`, "-d", '{"pageSize": 1000}', `${t.url}/foreman.v1.AuthService/ListWorkers`],
        { timeout: 20_000, env: { ...process.env, BUF_CACHE_DIR: cacheDir } },
      );
      const listed = (JSON.parse(stdout) as { workers: { id: string; status: string }[] }).workers.find((x) => x.id === w.id);
      expect(listed?.status).toBe("WORKER_STATUS_IDLE");
    } finally {
      await rm(cacheDir, { recursive: true, force: true });
    }
  });

  it("needs a signed-in user: anonymous is Unauthenticated, a worker credential PermissionDenied", async () => {
    const alice = await newUser();
    const w = await newWorker(alice);
    await expectCode(clientWith(t, AuthService, undefined).listWorkers({}), Code.Unauthenticated);
    await expectCode(clientWith(t, AuthService, "not-a-token").listWorkers({}), Code.Unauthenticated);
    await expectCode(clientWith(t, AuthService, w.token).listWorkers({}), Code.PermissionDenied);
  });

  it("in single-user mode, shows the local user every worker, and every session's id", async () => {
    // Workers of two users, registered while the database served multi-user mode; then the same
    // database in single-user mode.
    const multi = await startMultiUserServer(dialect, provider, { FOREMAN_WORKER_REGISTRATION_TOKEN: CONFIGURED_REGISTRATION_TOKEN });
    let single: TestServer | undefined;
    let multiOpen = true;
    try {
      const [alice, bob] = [await signIn(multi, provider, "single-alice"), await signIn(multi, provider, "single-bob")];
      const alices = await registerWorker(multi, (await alice.registrationToken()).secret, { name: "alice's" });
      const bobs = await registerWorker(multi, (await bob.registrationToken()).secret, { name: "bob's" });
      await multi.server.close();
      multiOpen = false;

      single = await startTestServer(dialect, { FOREMAN_WORKER_REGISTRATION_TOKEN: CONFIGURED_REGISTRATION_TOKEN }, multi.database);
      const local = caller(single);
      const localToken = await local.registrationToken("local");
      const localWorker = await registerWorker(single, localToken.secret, { name: "local" });
      const pool = await registerWorker(single, CONFIGURED_REGISTRATION_TOKEN, { name: "pool" });

      const seen = await listAll(local);
      expect(seen.map((w) => w.name)).toEqual(["alice's", "bob's", "local", "pool"]);
      expect(seen.map((w) => w.id)).toEqual([alices.workerId, bobs.workerId, localWorker.workerId, pool.workerId]);
      expect(seen.find((w) => w.id === pool.workerId)?.servesEveryUser).toBe(true);

      // A session the pool worker holds is named to the local user.
      const { group } = await local.groupOfOne();
      await local.client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "go" });
      const poolClient = clientWith(single, WorkerService, pool.workerToken);
      const { assignment } = await poolClient.getTask({ pollId: randomUUID(), waitSeconds: 0 });
      expect(assignment?.lease).toBeDefined();
      const busy = (await listAll(local)).find((w) => w.id === pool.workerId)!;
      expect(busy).toMatchObject({ status: WorkerStatus.BUSY, heldSessionCount: 1, heldSessionIds: [assignment!.lease!.sessionId] });
    } finally {
      await single?.server.close();
      if (multiOpen) await multi.server.close();
      await multi.database.drop();
    }
  });
});
