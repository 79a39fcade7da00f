// A queued run that no registered worker may take says why, in the task's waiting_reason
// (UnitTask and CompositeTask), through the generated clients over HTTP on both databases:
// no worker of the user's or the pool's, only workers of other agents, only draining or
// unhealthy ones; none once a worker may take it, while the run is held, or when nothing is
// queued. The reason is as of the read (WatchTasks: as of the feed's read), and a page of
// ListTasks costs one read of the workers however many of its tasks are queued.
import { randomUUID } from "node:crypto";
import type { Client } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentType, ExecutionState, SessionState, TaskKind, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import type { RepositoryGroup } from "../../gen/foreman/v1/repository_pb.js";
import { TaskService, type CompositeTask, type Task, type TaskChange, type UnitTask } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService, WorkerStatus, type Assignment } from "../../gen/foreman/v1/worker_pb.js";
import { DIALECTS } from "../helpers/databases.js";
import { registerWorker, signIn, type RegisterInit, type User } from "../helpers/fixtures.js";
import { clientWith, movableClock, startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import type { TestServer } from "../helpers/server.js";

const CONFIGURED_REGISTRATION_TOKEN = "configured-worker-registration-token-for-waiting-reasons";
/** Past three missed heartbeats of the default 10 s interval. */
const SILENT = 31;
const TEST_TIMEOUT = 20_000;

interface TestWorker {
  id: string;
  client: Client<typeof WorkerService>;
}

/** The task's reason and execution state, of either kind. */
function waiting(task: Task | undefined): { reason: string; state: ExecutionState } {
  const value = task?.task.value;
  expect(value, "a task").toBeDefined();
  return { reason: value!.waitingReason, state: value!.executionState };
}

/**
 * Records the SQL of every statement run outside a transaction on `db` while `during` runs
 * (the reads of GetTask and ListTasks are such statements).
 */
async function statementsDuring(db: Kysely<unknown>, during: () => Promise<void>): Promise<string[]> {
  const executor = db.getExecutor();
  const seen: string[] = [];
  const original = executor.executeQuery.bind(executor);
  executor.executeQuery = (query) => {
    seen.push(query.sql);
    return original(query);
  };
  try {
    await during();
  } finally {
    // Back to the prototype's method.
    delete (executor as { executeQuery?: unknown }).executeQuery;
  }
  return seen;
}

/** The reads of the registered workers that waiting reasons make. */
const workerReads = (sql: string[]) => sql.filter((s) => /select distinct .*from "workers"/i.test(s));

describe.each(DIALECTS)("waiting reasons on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const clock = movableClock();
  const groups = new Map<string, RepositoryGroup>();
  let users = 0;

  beforeAll(async () => {
    provider = await startOidcProvider();
    // No backstop and no health sweep of its own: a test sweeps itself after moving the clock.
    t = await startMultiUserServer(
      dialect,
      provider,
      { FOREMAN_WORKER_REGISTRATION_TOKEN: CONFIGURED_REGISTRATION_TOKEN, FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_HEALTH_CHECK_SECONDS: "3600" },
      { clock: clock.now },
    );
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  /** A new user with a group to file tasks against: they have no worker of their own yet. */
  async function newUser(): Promise<User> {
    const user = await signIn(t, provider, `waiting-${++users}-${randomUUID().slice(0, 6)}`);
    groups.set(user.id, (await user.groupOfOne()).group);
    return user;
  }

  /** A worker of the user's, or of the configured token (it serves every user: unregister it before the test ends). */
  async function newWorker(who: User | "configured", init: RegisterInit = {}): Promise<TestWorker> {
    const secret = who === "configured" ? CONFIGURED_REGISTRATION_TOKEN : (await who.registrationToken()).secret;
    const res = await registerWorker(t, secret, { name: "waiting worker", ...init });
    return { id: res.workerId, client: clientWith(t, WorkerService, res.workerToken) };
  }

  async function createTask(user: User, agentType = AgentType.CLAUDE_CODE): Promise<UnitTask> {
    const { unitTask } = await user.client(TaskService).createUnitTask({ repositoryGroupId: groups.get(user.id)!.id, prompt: "Fix the flaky test", agentType });
    return unitTask!;
  }

  async function createComposite(user: User, planningAgentType = AgentType.CLAUDE_CODE): Promise<CompositeTask> {
    const { compositeTask } = await user
      .client(TaskService)
      .createCompositeTask({ repositoryGroupId: groups.get(user.id)!.id, prompt: "Split the monolith", planningAgentType });
    return compositeTask!;
  }

  /** GetTask's reason, checked to agree with the same task in ListTasks. */
  async function reasonOf(user: User, task: { id: string; workspaceId: string }): Promise<string> {
    const tasks = user.client(TaskService);
    const got = waiting((await tasks.getTask({ id: task.id })).task).reason;
    const listed = (await tasks.listTasks({ workspaceId: task.workspaceId, pageSize: 1000 })).tasks.find((x) => x.task.value?.id === task.id);
    expect(waiting(listed).reason, "ListTasks' reason").toBe(got);
    return got;
  }

  async function claim(w: TestWorker): Promise<Assignment> {
    const { assignment } = await w.client.getTask({ pollId: randomUUID(), waitSeconds: 0 });
    expect(assignment?.lease, "an assignment").toBeDefined();
    return assignment!;
  }

  it("says no worker is registered while none may serve the user, from the task's creation on, for both kinds", async () => {
    const alice = await newUser();
    const task = await createTask(alice);
    expect(task.executionState).toBe(ExecutionState.QUEUED);
    expect(task.waitingReason).toBe("no worker is registered");
    expect(await reasonOf(alice, task)).toBe("no worker is registered");
    const composite = await createComposite(alice);
    expect(composite.waitingReason).toBe("no worker is registered");
    expect(await reasonOf(alice, composite)).toBe("no worker is registered");
  });

  it("counts no other user's worker: only the user's own, or the pool's, may take their run", async () => {
    const [alice, bob] = [await newUser(), await newUser()];
    await newWorker(bob);
    const alicesTask = await createTask(alice);
    const bobsTask = await createTask(bob);
    expect(await reasonOf(alice, alicesTask)).toBe("no worker is registered");
    expect(await reasonOf(bob, bobsTask)).toBe("");
    // Bob's worker would take his task, never alice's.
    const w = await newWorker(bob);
    expect((await claim(w)).taskId).toBe(bobsTask.id);
  });

  it("counts a worker of the configured token, which serves every user, while it is registered", async () => {
    const [alice, bob] = [await newUser(), await newUser()];
    const task = await createTask(alice, AgentType.AIDER);
    expect(await reasonOf(alice, task)).toBe("no worker is registered");
    const pool = await newWorker("configured");
    try {
      expect(await reasonOf(alice, task)).toBe("");
      expect(await reasonOf(bob, await createTask(bob, AgentType.AIDER))).toBe("");
    } finally {
      await pool.client.unregisterWorker({});
    }
    expect(await reasonOf(alice, task)).toBe("no worker is registered");

    const codexPool = await newWorker("configured", { agentTypes: [AgentType.CODEX] });
    try {
      expect(await reasonOf(alice, task)).toBe("no worker runs aider");
    } finally {
      await codexPool.client.unregisterWorker({});
    }
  });

  it("names the agent when the user's workers run other agents, and says nothing for the agents they run", async () => {
    const alice = await newUser();
    await newWorker(alice, { agentTypes: [AgentType.CODEX, AgentType.AIDER] });
    const claude = await createTask(alice, AgentType.CLAUDE_CODE);
    const gemini = await createComposite(alice, AgentType.GEMINI_CLI);
    const codex = await createTask(alice, AgentType.CODEX);
    const plan = await createComposite(alice, AgentType.AIDER);
    expect(claude.waitingReason).toBe("no worker runs claude_code");
    expect(await reasonOf(alice, claude)).toBe("no worker runs claude_code");
    expect(await reasonOf(alice, gemini)).toBe("no worker runs gemini_cli");
    expect(await reasonOf(alice, codex)).toBe("");
    expect(await reasonOf(alice, plan)).toBe("");
    // A worker that names no agent runs every agent.
    await newWorker(alice);
    expect(await reasonOf(alice, claude)).toBe("");
    expect(await reasonOf(alice, gemini)).toBe("");
  });

  it("says every worker that runs the agent is draining, or unhealthy, and says it again once the worker unregisters", async () => {
    const alice = await newUser();
    const task = await createTask(alice, AgentType.CODEX);
    const w = await newWorker(alice, { agentTypes: [AgentType.CODEX] });
    // A worker of another agent changes nothing about a codex run.
    await newWorker(alice, { agentTypes: [AgentType.AIDER] });
    expect(await reasonOf(alice, task)).toBe("");

    await w.client.heartbeat({ status: WorkerStatus.DRAINING, leases: [] });
    expect(await reasonOf(alice, task)).toBe("every worker that runs codex is draining");
    await w.client.heartbeat({ status: WorkerStatus.IDLE, leases: [] });
    expect(await reasonOf(alice, task)).toBe("");

    // Silent for three heartbeat intervals: the health monitor marks it unhealthy.
    clock.advance(SILENT);
    expect((await t.server.workerHealth.tick()).unhealthy).toContain(w.id);
    expect(await reasonOf(alice, task)).toBe("every worker that runs codex is unhealthy");
    const draining = await newWorker(alice, { agentTypes: [AgentType.CODEX] });
    await draining.client.heartbeat({ status: WorkerStatus.DRAINING, leases: [] });
    expect(await reasonOf(alice, task)).toBe("every worker that runs codex is draining or unhealthy");
    // Heard from again, it is active and may take the run.
    await w.client.heartbeat({ status: WorkerStatus.IDLE, leases: [] });
    expect(await reasonOf(alice, task)).toBe("");

    await w.client.unregisterWorker({});
    expect(await reasonOf(alice, task)).toBe("every worker that runs codex is draining");
    await draining.client.unregisterWorker({});
    expect(await reasonOf(alice, task)).toBe("no worker runs codex");
    expect(waiting((await alice.client(TaskService).getTask({ id: task.id })).task).state).toBe(ExecutionState.QUEUED);
  }, TEST_TIMEOUT);

  it("gives no reason for a run a worker holds, nor for a task with nothing queued, even with no worker to take a queued one", async () => {
    const alice = await newUser();
    const held = await createTask(alice, AgentType.CODEX);
    const w = await newWorker(alice, { agentTypes: [AgentType.CODEX] });
    const a = await claim(w);
    expect(a.taskId).toBe(held.id);
    expect(await reasonOf(alice, held)).toBe("");
    await w.client.reportStatus({ sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken, state: SessionState.RUNNING });
    // Draining keeps what runs, and takes nothing new: the queued task says so, the running one nothing.
    await w.client.heartbeat({ status: WorkerStatus.DRAINING, leases: [a.lease!] });
    const queued = await createTask(alice, AgentType.CODEX);
    expect(queued.waitingReason).toBe("every worker that runs codex is draining");
    const running = (await alice.client(TaskService).getTask({ id: held.id })).task;
    expect(waiting(running)).toEqual({ reason: "", state: ExecutionState.RUNNING });
    expect(await reasonOf(alice, held)).toBe("");

    // Cancelled, the queued task has nothing queued: no reason, in the answer and after.
    const { task: cancelled } = await alice.client(TaskService).updateTaskStatus({ id: queued.id, status: TaskStatus.CANCELLED });
    expect(waiting(cancelled)).toEqual({ reason: "", state: ExecutionState.IDLE });
    expect(await reasonOf(alice, queued)).toBe("");
    // Retried, it is queued again, and the reason is back.
    const { task: retried } = await alice.client(TaskService).retryTask({ id: queued.id });
    expect(waiting(retried)).toEqual({ reason: "every worker that runs codex is draining", state: ExecutionState.QUEUED });
  });

  it("shows WatchTasks' changes with the reason as of the feed's read: a worker registering is no change, a later read shows it", async () => {
    const alice = await newUser();
    const task = await createTask(alice, AgentType.OPENCODE);
    /** The first change a stream from cursor "0" (every change of the workspace) sends. */
    async function firstChange(): Promise<TaskChange> {
      const abort = new AbortController();
      try {
        for await (const res of alice.client(TaskService).watchTasks({ workspaceId: task.workspaceId, cursor: "0" }, { signal: abort.signal })) {
          if (res.event.case === "change") return res.event.value;
        }
        throw new Error("the stream ended");
      } finally {
        abort.abort();
      }
    }
    const before = await firstChange();
    expect(before.taskId).toBe(task.id);
    expect(waiting(before.task)).toEqual({ reason: "no worker is registered", state: ExecutionState.QUEUED });
    await newWorker(alice, { agentTypes: [AgentType.OPENCODE] });
    const after = await firstChange();
    expect(after.cursor).toBe(before.cursor);
    expect(waiting(after.task)).toEqual({ reason: "", state: ExecutionState.QUEUED });
  }, TEST_TIMEOUT);

  it("reads the workers once per ListTasks page, however many of its tasks are queued, and not at all for a page with none queued", async () => {
    const alice = await newUser();
    await newWorker(alice, { agentTypes: [AgentType.CODEX] });
    const AGENT_NAMES = new Map([
      [AgentType.CLAUDE_CODE, "claude_code"],
      [AgentType.AIDER, "aider"],
      [AgentType.GEMINI_CLI, "gemini_cli"],
      [AgentType.AMP, "amp"],
    ]);
    const agents = [AgentType.CODEX, AgentType.CLAUDE_CODE, AgentType.AIDER, AgentType.CODEX, AgentType.GEMINI_CLI, AgentType.AMP];
    const made: UnitTask[] = [];
    for (const agent of agents) made.push(await createTask(alice, agent));
    const tasks = alice.client(TaskService);
    const workspaceId = made[0]!.workspaceId;

    const pages: Task[][] = [];
    const sql = await statementsDuring(t.server.db.kysely as unknown as Kysely<unknown>, async () => {
      let pageToken = "";
      do {
        const page = await tasks.listTasks({ workspaceId, pageSize: 3, pageToken });
        pages.push(page.tasks);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
    });
    expect(pages.map((p) => p.length)).toEqual([3, 3]);
    expect(workerReads(sql)).toHaveLength(2);
    // Newest first; every reason right although each page read the workers once.
    expect(pages.flat().map((x) => [x.task.value!.id, waiting(x).reason])).toEqual(
      made
        .map((m, i) => [m.id, agents[i] === AgentType.CODEX ? "" : `no worker runs ${AGENT_NAMES.get(agents[i]!)}`])
        .reverse(),
    );

    for (const m of made) await tasks.updateTaskStatus({ id: m.id, status: TaskStatus.CANCELLED });
    const idle = await statementsDuring(t.server.db.kysely as unknown as Kysely<unknown>, async () => {
      const page = await tasks.listTasks({ workspaceId, pageSize: 100, kind: TaskKind.UNIT });
      expect(page.tasks.map((x) => waiting(x))).toEqual(made.map(() => ({ reason: "", state: ExecutionState.IDLE })));
    });
    expect(idle.length, "the page's own reads").toBeGreaterThan(0);
    expect(workerReads(idle)).toEqual([]);
  }, TEST_TIMEOUT);
});
