// Dispatch with real worker processes (test/helpers/worker-process.ts: the public protocol over
// HTTP, one JSON line per event): many workers finish many tasks, each exactly once; a worker
// SIGKILLed mid-task loses its lease to the health monitor, another worker finishes the task, and
// the dead worker's saved report is refused; the server SIGKILLed and restarted mid-task (as its
// own process, on the same port and database) loses nothing, and the worker keeps its lease.
// Every child is killed in afterAll, whatever the tests did.
import { readFileSync } from "node:fs";
import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { AgentType, ExecutionState, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { AuthService } from "../../gen/foreman/v1/auth_pb.js";
import { RepositoryService } from "../../gen/foreman/v1/repository_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { ReportStatusRequestSchema, WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";
import { expectLeaseLost, unit } from "../helpers/dispatch.js";
import { caller } from "../helpers/fixtures.js";
import { clientWith } from "../helpers/oidc.js";
import { expectCode } from "../helpers/rpc-errors.js";
import { startTestServer, transportFor } from "../helpers/server.js";
import {
  cpuSeconds,
  freePort,
  killAllChildren,
  startServerProcess,
  startWorkerProcess,
  tempFolder,
  type WorkerProcess,
} from "../helpers/worker-processes.js";

/**
 * Generous: 2,000 tasks took 66 s on PostgreSQL here with the machine's load at 9, and 135 s at
 * 16 (the server spends about 14 ms of CPU per task, claim and reports included, and the workers 8 ms).
 */
const MANY_TIMEOUT = 400_000;
const TEST_TIMEOUT = 120_000;
const WAIT_MS = 60_000;

afterAll(async () => {
  await killAllChildren();
});

/** Waits until `done()` holds, looking every 50 ms; fails after `ms` naming `what`. */
async function until(done: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Each element's count. */
function counts<T>(items: T[]): Map<T, number> {
  const m = new Map<T, number>();
  for (const item of items) m.set(item, (m.get(item) ?? 0) + 1);
  return m;
}

describe.each(DIALECTS)("dispatch to worker processes on %s", (dialect) => {
  // The 2,000 on PostgreSQL. SQLite (one writer, and what every other dispatch test
  // runs on too) gets 200, which already puts 20 processes' claims through its single writer:
  // 2,000 more there would double this file's time on a busy two-core machine for no new case.
  const TASKS = dialect === "postgres" ? 2000 : 200;
  const WORKERS = 20;

  it(
    `${WORKERS} worker processes finish ${TASKS} tasks, each with exactly one accepted SUCCEEDED report, and a replayed stale report is refused`,
    async () => {
      const t = await startTestServer(dialect, { FOREMAN_MAX_POLL_SECONDS: "30" });
      const workers: WorkerProcess[] = [];
      try {
        const local = caller(t);
        const { group } = await local.groupOfOne();
        const { secret } = await local.registrationToken();
        const started = performance.now();
        workers.push(
          ...(await Promise.all(
            Array.from({ length: WORKERS }, (_, i) => startWorkerProcess({ url: t.url, registrationToken: secret, name: `worker ${i}`, replayStale: i === 0 })),
          )),
        );
        const startMs = performance.now() - started;
        // The tasks are filed while the workers wait: each claim comes from a wake-up or the queue.
        const tasks = local.client(TaskService);
        const filed: string[] = [];
        const filing = performance.now();
        const cpuBefore = process.cpuUsage();
        const workersCpuBefore = workers.reduce((sum, w) => sum + cpuSeconds(w.child), 0);
        for (let i = 0; i < TASKS; i += 20) {
          const batch = await Promise.all(
            Array.from({ length: Math.min(20, TASKS - i) }, (_, j) => tasks.createUnitTask({ repositoryGroupId: group.id, prompt: `task ${i + j}`, agentType: AgentType.COMMAND })),
          );
          filed.push(...batch.map((b) => b.unitTask!.id));
        }
        const succeeded = () => workers.reduce((n, w) => n + w.all("reported").filter((r) => r.state === "SUCCEEDED").length, 0);
        await until(() => succeeded() >= TASKS, `${TASKS} SUCCEEDED reports`, MANY_TIMEOUT - 30_000);
        const doneMs = performance.now() - filing;
        const cpu = process.cpuUsage(cpuBefore);
        const serverCpu = (cpu.user + cpu.system) / 1e6;
        const workersCpu = workers.reduce((sum, w) => sum + cpuSeconds(w.child), 0) - workersCpuBefore;
        console.log(
          `${dialect}: ${WORKERS} worker processes started in ${Math.round(startMs)} ms; ${TASKS} tasks filed and finished in ${Math.round(doneMs)} ms (${Math.round((TASKS * 1000) / doneMs)} tasks/s); CPU meanwhile: the test process (server and filing client) ${serverCpu.toFixed(1)} s, the workers ${workersCpu.toFixed(1)} s`,
        );

        const claims = workers.flatMap((w) => w.all("claimed"));
        const reports = workers.flatMap((w) => w.all("reported").filter((r) => r.state === "SUCCEEDED"));
        // Every task claimed once, as attempt 1, and reported SUCCEEDED once, by its claimant.
        expect(claims).toHaveLength(TASKS);
        expect(new Set(claims.map((c) => c.taskId))).toEqual(new Set(filed));
        expect(new Set(claims.map((c) => c.sessionId)).size).toBe(TASKS);
        expect(claims.every((c) => c.attempt === 1)).toBe(true);
        expect(reports).toHaveLength(TASKS);
        expect([...counts(reports.map((r) => r.taskId)).values()].every((n) => n === 1)).toBe(true);
        expect(new Set(reports.map((r) => r.taskId))).toEqual(new Set(filed));
        for (const w of workers) {
          const mine = new Set(w.all("claimed").map((c) => c.sessionId));
          expect(w.all("reported").every((r) => mine.has(r.sessionId))).toBe(true);
        }
        expect(workers.flatMap((w) => w.all("refused"))).toEqual([]);
        // Nor was the server ever away for them.
        expect(workers.flatMap((w) => [...w.all("retry"), ...w.all("heartbeat-failed")])).toEqual([]);
        // Work was spread: more than one worker claimed.
        expect(workers.filter((w) => w.all("claimed").length > 0).length).toBeGreaterThan(1);
        // The replays: the first run's RUNNING after it ended, and its token on the next session.
        const replays = workers[0]!.all("replayed");
        expect(replays.map((r) => [r.what, r.code, r.reason])).toEqual([
          ["ended-session", "FailedPrecondition", "LEASE_LOST"],
          ["other-lease", "FailedPrecondition", "LEASE_LOST"],
        ]);
        expect(replays[0]!.message).toContain("ended as succeeded");
        expect(replays[1]!.message).toContain("not this session's lease");

        // The database agrees: every task in review, with one succeeded session of attempt 1.
        const db = t.server.db.kysely;
        const sessions = await db.selectFrom("agent_sessions").select(["state", "attempt", "worker_id"]).execute();
        expect(sessions).toHaveLength(TASKS);
        expect(counts(sessions.map((s) => `${s.state} ${s.attempt}`))).toEqual(new Map([["succeeded 1", TASKS]]));
        const workerIds = new Set(workers.map((w) => w.all("registered")[0]!.workerId));
        expect(sessions.every((s) => workerIds.has(s.worker_id!))).toBe(true);
        const statuses = await db.selectFrom("unit_tasks").select(["status", "execution_state"]).execute();
        expect(counts(statuses.map((s) => `${s.status} ${s.execution_state}`))).toEqual(new Map([["in_review idle", TASKS]]));

        // Each worker ends cleanly on SIGTERM.
        await Promise.all(workers.map((w) => w.stop()));
        for (const w of workers) {
          expect([w.child.exitCode, w.child.signalCode], `${w.stderr()}\n${JSON.stringify(w.events.slice(-5))}`).toEqual([0, null]);
          expect(w.events.at(-1)).toEqual({ event: "stopped" });
        }
      } finally {
        await Promise.all(workers.map((w) => w.kill()));
        await t.close();
      }
    },
    MANY_TIMEOUT,
  );

  it(
    "a worker process SIGKILLed mid-task loses its lease: another worker finishes the task, and the dead worker's saved report is refused",
    async () => {
      // A lease is three 1 s heartbeats, and the monitor sweeps every second.
      const t = await startTestServer(dialect, { FOREMAN_HEARTBEAT_SECONDS: "1", FOREMAN_HEALTH_CHECK_SECONDS: "1", FOREMAN_MAX_POLL_SECONDS: "30" });
      try {
        const local = caller(t);
        const { group } = await local.groupOfOne();
        const { secret } = await local.registrationToken();
        const saved = tempFolder("foreman-reports-");
        const victim = await startWorkerProcess({ url: t.url, registrationToken: secret, name: "victim", runMs: "hold", saveReportsTo: saved });
        const task = (await local.client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "Survive a crash" })).unitTask!;
        const claimed = await victim.waitFor("claimed", (e) => e.taskId === task.id);
        const file = (await victim.waitFor("saved", (e) => e.sessionId === claimed.sessionId)).file;
        await victim.waitFor("reported", (e) => e.sessionId === claimed.sessionId && e.state === "RUNNING");
        // It heartbeats, and its lease is renewed, before it dies.
        const mark = victim.events.length;
        await victim.waitFor("heartbeat", (e) => e.renewed.some((l) => l.sessionId === claimed.sessionId), { from: mark });
        // Another worker waits meanwhile, and gets nothing while the victim holds the task.
        const rescuer = await startWorkerProcess({ url: t.url, registrationToken: secret, name: "rescuer" });
        expect(rescuer.all("claimed")).toEqual([]);
        const killedAt = new Date();
        await victim.kill();
        const killed = performance.now();
        expect(victim.child.signalCode).toBe("SIGKILL");

        const rescued = await rescuer.waitFor("claimed", (e) => e.taskId === task.id);
        const rescuedMs = performance.now() - killed;
        expect(rescued.attempt).toBe(2);
        expect(rescued.sessionId).not.toBe(claimed.sessionId);
        await rescuer.waitFor("reported", (e) => e.sessionId === rescued.sessionId && e.state === "SUCCEEDED");

        // The dead worker's late report, as it would have sent it, with its credential: refused.
        const late = fromBinary(ReportStatusRequestSchema, readFileSync(file));
        expect(late).toMatchObject({ sessionId: claimed.sessionId, state: SessionState.SUCCEEDED });
        const dead = clientWith(t, WorkerService, readFileSync(victim.credentialFile, "utf8"));
        await expectLeaseLost(dead.reportStatus(late), "ended as lost");
        // Its heartbeat, were it to come back, names the session lost.
        expect((await dead.heartbeat({ leases: [{ sessionId: late.sessionId, attempt: 1, leaseToken: late.leaseToken }] })).lostSessionIds).toEqual([claimed.sessionId]);

        const after = unit((await local.client(TaskService).getTask({ id: task.id })).task);
        expect(after.status).toBe(TaskStatus.IN_REVIEW);
        expect(after.executionState).toBe(ExecutionState.IDLE);
        expect(after.agentTasks).toHaveLength(1);
        expect(after.agentTasks[0]!.sessions.map((x) => [x.id, x.attempt, x.state])).toEqual([
          [claimed.sessionId, 1, SessionState.LOST],
          [rescued.sessionId, 2, SessionState.SUCCEEDED],
        ]);
        // Its worker went silent, which its lease, renewed by each heartbeat, outlived by nothing.
        expect(after.agentTasks[0]!.sessions[0]!.errorMessage).toMatch(/missed 3 heartbeats|lease expired/);
        // Lost after the kill, not before: the victim held its lease while it lived.
        expect(timestampDate(after.agentTasks[0]!.sessions[0]!.endTime!).getTime()).toBeGreaterThanOrEqual(killedAt.getTime());
        expect(rescuer.all("refused")).toEqual([]);
        // The victim started again presents its saved credential and gets its id back; the old credential ends.
        const restarted = await startWorkerProcess({ url: t.url, registrationToken: secret, name: "victim again", credentialFile: victim.credentialFile });
        const again = restarted.all("registered")[0]!;
        expect(again.presentedCredential).toBe(true);
        expect(again.workerId).toBe(victim.all("registered")[0]!.workerId);
        await expectCode(dead.heartbeat({ leases: [] }), Code.Unauthenticated);
        await restarted.stop();
        expect(restarted.all("claimed")).toEqual([]);
        console.log(`${dialect}: a SIGKILLed worker's task (lease 3 s, sweeps every 1 s) was claimed by another worker ${Math.round(rescuedMs)} ms after the kill`);
        await rescuer.stop();
        expect(rescuer.child.exitCode).toBe(0);
      } finally {
        await killAllChildren();
        await t.close();
      }
    },
    TEST_TIMEOUT,
  );

  it(
    "the server SIGKILLed and restarted mid-task on its port and database: the worker keeps its lease, reports SUCCEEDED, and nothing is lost",
    async () => {
      const database: TestDatabase = await createTestDatabase(dialect);
      try {
        const port = await freePort();
        // A lease of three 10 s heartbeats outlasts the restart; a worker whose heartbeat fails tries again every second.
        const env = {
          FOREMAN_PORT: String(port),
          FOREMAN_DATA_DIR: database.dataDir,
          FOREMAN_SINGLE_USER_MODE: "true",
          FOREMAN_HEARTBEAT_SECONDS: "10",
          FOREMAN_MAX_POLL_SECONDS: "30",
          ...(database.databaseUrl === undefined ? {} : { DATABASE_URL: database.databaseUrl }),
        };
        let server = await startServerProcess(env);
        // Clients of whichever process serves the port (connect-node reconnects after the restart).
        const transport = transportFor(server.url, "connect-http1");
        const workspaces = createClient(WorkspaceService, transport);
        const repositories = createClient(RepositoryService, transport);
        const tasks = createClient(TaskService, transport);
        const auth = createClient(AuthService, transport);
        const { workspace } = await workspaces.createWorkspace({ name: "restart" });
        const { repository } = await repositories.addRepository({ workspaceId: workspace!.id, remoteUrl: "https://github.com/acme/restart.git" });
        const { repositoryGroup } = await repositories.createRepositoryGroup({ workspaceId: workspace!.id, repositoryIds: [repository!.id] });
        const { secret } = await auth.createWorkerRegistrationToken({ name: "restart", ttlSeconds: 0 });
        const w = await startWorkerProcess({ url: server.url, registrationToken: secret, name: "outlives the server", runMs: "hold" });
        const workerId = w.all("registered")[0]!.workerId;
        const task = (await tasks.createUnitTask({ repositoryGroupId: repositoryGroup!.id, prompt: "Outlive a restart" })).unitTask!;
        const claimed = await w.waitFor("claimed", (e) => e.taskId === task.id);
        await w.waitFor("reported", (e) => e.sessionId === claimed.sessionId && e.state === "RUNNING");
        // Queued before the crash, for nobody yet: the worker runs one session at a time.
        const queued = (await tasks.createUnitTask({ repositoryGroupId: repositoryGroup!.id, prompt: "Wait through a restart" })).unitTask!;
        const before = (await tasks.getTask({ id: task.id })).task;

        const lastRenewal = w.all("heartbeat").findLast((e) => e.renewed.some((l) => l.sessionId === claimed.sessionId));
        await server.kill();
        const killed = performance.now();
        expect(server.child.signalCode).toBe("SIGKILL");
        const down = w.events.length;
        // The worker notices: its next heartbeat fails while nothing listens on the port. From
        // then it tries every second, so the restart has the lease's other 19 s (a start under
        // tsx took 3 to 7 s here).
        await w.waitFor("heartbeat-failed", undefined, { from: down, timeoutMs: 30_000 });
        server = await startServerProcess(env);
        const upMs = performance.now() - killed;
        expect(server.url).toBe(`http://127.0.0.1:${port}`);
        // Its next heartbeat renews the lease it held: the server found it unexpired.
        const renewed = await w.waitFor("heartbeat", (e) => e.renewed.some((l) => l.sessionId === claimed.sessionId), { from: down });
        const renewedMs = performance.now() - killed;
        expect(renewed.lost).toEqual([]);
        // Renewed past the lease it had before the crash.
        const expiresBefore = lastRenewal?.renewed.find((l) => l.sessionId === claimed.sessionId)?.expireTime ?? claimed.expireTime;
        expect(Date.parse(renewed.renewed.find((l) => l.sessionId === claimed.sessionId)!.expireTime)).toBeGreaterThan(Date.parse(expiresBefore));
        const failed = w.all("heartbeat-failed").length;
        console.log(
          `${dialect}: the server answered again ${Math.round(upMs)} ms after its SIGKILL, and the worker's lease was renewed ${Math.round(renewedMs)} ms after it (a lease lasts 30 s; ${failed} heartbeats failed meanwhile)`,
        );
        w.send("finish");
        await w.waitFor("reported", (e) => e.sessionId === claimed.sessionId && e.state === "SUCCEEDED", { from: down });
        expect(w.all("refused")).toEqual([]);
        // What failed meanwhile failed for the server's absence (a refused or cut connection), nothing else.
        const failures = [...w.all("heartbeat-failed"), ...w.all("retry")];
        expect(failures.every((f) => f.code === "Unavailable")).toBe(true);

        // Nothing lost: the task went to review on its one session, attempt 1, by the same worker.
        const after = unit((await tasks.getTask({ id: task.id })).task);
        expect(after.status).toBe(TaskStatus.IN_REVIEW);
        expect(after.executionState).toBe(ExecutionState.IDLE);
        expect(after.agentTasks).toHaveLength(1);
        expect(after.agentTasks[0]!.sessions.map((x) => [x.id, x.attempt, x.state, x.workerId])).toEqual([[claimed.sessionId, 1, SessionState.SUCCEEDED, workerId]]);
        expect(unit(before).agentTasks[0]!.sessions[0]!.startTime).toEqual(after.agentTasks[0]!.sessions[0]!.startTime);
        // The task queued before the crash is still queued, and the worker now claims it, as attempt 1.
        const next = await w.waitFor("claimed", (e) => e.taskId === queued.id, { from: down });
        expect(next.attempt).toBe(1);
        await w.waitFor("reported", (e) => e.sessionId === next.sessionId && e.state === "RUNNING", { from: down });
        expect(w.all("claimed").map((c) => c.taskId)).toEqual([task.id, queued.id]);
        await w.stop();
        expect(w.child.exitCode).toBe(0);
        await server.stop();
        expect(server.child.exitCode).toBe(0);
      } finally {
        await killAllChildren();
        await database.drop();
      }
    },
    TEST_TIMEOUT,
  );
});
