// TaskService through the generated client over real HTTP (Connect, h2c), on a real server in
// process, once per database dialect: creating unit and composite tasks, Get and List, every
// transition of the state machine (table-driven from src/model/tasks.ts's TRANSITIONS), review,
// retry and delete, concurrent calls, a randomised sequence of calls checked against a model,
// WatchTasks with resume, and owner isolation between two users of a multi-user server.
import { randomUUID } from "node:crypto";
import { Code, type Client, type ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentType, ExecutionState, SessionState, TaskKind, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import type { Repository, RepositoryGroup } from "../../gen/foreman/v1/repository_pb.js";
import {
  AgentTaskKind,
  TaskChangeType,
  TaskService,
  type AgentTask,
  type CompositeTask,
  type Task,
  type TaskChange,
  type UnitTask,
  type WatchTasksResponse,
} from "../../gen/foreman/v1/task_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { TRANSITIONS, type TaskKind as KindName, type TaskStatus as StatusName } from "../../src/model/tasks.js";
import { insertTaskEvent } from "../../src/store/task-events.js";
import { LOCAL_USER_ID } from "../../src/model/users.js";
import { inBatches } from "../helpers/batches.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller, signIn, type Caller, type User } from "../helpers/fixtures.js";
import { startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { UNKNOWN_ID, expectCode, expectInvalid } from "../helpers/rpc-errors.js";
import { runner } from "../helpers/runner.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

type Tasks = Client<typeof TaskService>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** How long a stream wait may take before the test fails; waits end as soon as the message arrives. */
const WAIT_MS = 20_000;

const KINDS: KindName[] = ["unit", "composite"];

/** Every status the API knows, from the protobuf enum (UNSPECIFIED aside). */
const ALL_STATUSES: StatusName[] = Object.values(TaskStatus)
  .filter((v): v is TaskStatus => typeof v === "number" && v !== TaskStatus.UNSPECIFIED)
  .map((v) => TaskStatus[v].toLowerCase() as StatusName);

/** Statuses whose entry queues agent work: only RetryTask, RequestChanges and ApproveTask make those moves. */
const AGENT_WORK: StatusName[] = ["in_progress", "planning"];

const statusesOf = (kind: KindName): StatusName[] => Object.keys(TRANSITIONS[kind]) as StatusName[];
const statusName = (s: TaskStatus): StatusName => TaskStatus[s].toLowerCase() as StatusName;
const statusValue = (n: StatusName): TaskStatus => TaskStatus[n.toUpperCase() as keyof typeof TaskStatus];
const legal = (kind: KindName, from: StatusName, to: StatusName): boolean => TRANSITIONS[kind][from]?.includes(to) ?? false;
/** The status a task waits for review in. */
const reviewStatus = (kind: KindName): StatusName => (kind === "unit" ? "in_review" : "pending_approval");
/** The status agent work runs in. */
const workStatus = (kind: KindName): StatusName => (kind === "unit" ? "in_progress" : "planning");

const ACTIVE_SESSION = [SessionState.QUEUED, SessionState.ASSIGNED, SessionState.RUNNING];
const ACTIVE_EXECUTION = [ExecutionState.QUEUED, ExecutionState.ASSIGNED, ExecutionState.RUNNING];

/** A task of either kind, flattened for assertions. Composite tasks show only their latest planning run. */
interface View {
  id: string;
  kind: KindName;
  status: StatusName;
  execution: ExecutionState;
  agentTasks: AgentTask[];
  unit: UnitTask | undefined;
  composite: CompositeTask | undefined;
}

function view(task: Task | undefined): View {
  expect(task).toBeDefined();
  const t = task!.task;
  if (t.case === "unitTask") {
    const u = t.value;
    return { id: u.id, kind: "unit", status: statusName(u.status), execution: u.executionState, agentTasks: u.agentTasks, unit: u, composite: undefined };
  }
  if (t.case === "compositeTask") {
    const c = t.value;
    const agentTasks = c.planningAgentTask ? [c.planningAgentTask] : [];
    return { id: c.id, kind: "composite", status: statusName(c.status), execution: c.executionState, agentTasks, unit: undefined, composite: c };
  }
  throw new Error("a Task of neither kind");
}

const activeSessions = (v: View) => v.agentTasks.flatMap((a) => a.sessions).filter((s) => ACTIVE_SESSION.includes(s.state));

/** The ErrorInfo metadata of an error. */
function errorMetadata(err: ConnectError): Record<string, string> {
  return err.findDetails(ErrorInfoSchema)[0]?.metadata ?? {};
}

const word = (w: string) => new RegExp(`\\b${w}\\b`);

/** Expects FailedPrecondition whose message names the current status and whose metadata carries it. */
async function expectRefused(call: Promise<unknown>, current: StatusName): Promise<ConnectError> {
  const err = await expectCode(call, Code.FailedPrecondition);
  expect(err.rawMessage).toMatch(word(current));
  expect(errorMetadata(err).current_status).toBe(current);
  return err;
}

/** Reads a stream to its end; rejects with the stream's error. */
async function drain(stream: AsyncIterable<unknown>): Promise<number> {
  let n = 0;
  for await (const _ of stream) n++;
  return n;
}

/** The RPCs that move a task, and FinishRun: a worker claims the task's run and reports it succeeded. */
type Rpc = "UpdateTaskStatus" | "ApproveTask" | "RejectTask" | "RequestChanges" | "RetryTask" | "FinishRun";
interface Move {
  rpc: Rpc;
  to: StatusName;
}

/** The RPC a legal move into agent work is made with (what UpdateTaskStatus's refusal names). */
function agentRpc(kind: KindName, from: StatusName, to: StatusName): Rpc {
  if (from === "failed" || from === "cancelled") return "RetryTask";
  if (kind === "composite" && from === "pending_approval" && to === "in_progress") return "ApproveTask";
  return "RequestChanges";
}

/**
 * How the tests make a legal move through the API; undefined when it cannot be made here. A
 * failed or cancelled composite task goes back to in_progress (not planning) on RetryTask only
 * once its plan was approved, which a shortest path from a new task never does.
 */
function moveFor(kind: KindName, from: StatusName, to: StatusName): Rpc | undefined {
  // Review follows a run that finished, which UpdateTaskStatus cannot pretend.
  if (from === workStatus(kind) && to === reviewStatus(kind)) return "FinishRun";
  if (!AGENT_WORK.includes(to)) return "UpdateTaskStatus";
  if (kind === "composite" && (from === "failed" || from === "cancelled") && to === "in_progress") return undefined;
  return agentRpc(kind, from, to);
}

/** The shortest path of legal moves from a new task of the kind to the status. */
function pathTo(kind: KindName, target: StatusName): Move[] {
  const start = workStatus(kind);
  const paths = new Map<StatusName, Move[]>([[start, []]]);
  const queue: StatusName[] = [start];
  while (queue.length > 0) {
    const from = queue.shift()!;
    if (from === target) return paths.get(from)!;
    for (const to of TRANSITIONS[kind][from] ?? []) {
      const rpc = moveFor(kind, from, to);
      if (rpc === undefined || paths.has(to)) continue;
      paths.set(to, [...paths.get(from)!, { rpc, to }]);
      queue.push(to);
    }
  }
  throw new Error(`no path to ${target} for a ${kind} task`);
}

/** A seeded PRNG (mulberry32), so a failing random sequence can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Fixture {
  workspaceId: string;
  /** api (default branch main) and web (default branch develop). */
  repos: Repository[];
  /** Both repositories. */
  group: RepositoryGroup;
  /** The first repository only. */
  single: RepositoryGroup;
  /** A group left without repositories. */
  empty: RepositoryGroup;
}

/**
 * A workspace with two repositories and groups of them, through WorkspaceService and
 * RepositoryService. The API keeps a group from losing its last repository (a repository in a
 * named group cannot be removed, nor a group emptied), so the empty group is emptied in the
 * database directly.
 */
async function makeFixture(as: Caller, label: string): Promise<Fixture> {
  const { id: workspaceId } = await as.workspace({ name: `${label} ${randomUUID()}` });
  const api = await as.repository(workspaceId, "https://github.com/acme/api.git");
  const web = await as.repository(workspaceId, "https://github.com/acme/web.git", { defaultBranch: "develop" });
  const scratch = await as.repository(workspaceId, "https://github.com/acme/scratch.git");
  const group = await as.group(workspaceId, [api.id, web.id], "both");
  const single = await as.group(workspaceId, [api.id], "api only");
  const empty = await as.group(workspaceId, [scratch.id], "emptied");
  await as.server.server.db.kysely.deleteFrom("repository_group_members").where("group_id", "=", empty.id).execute();
  return { workspaceId, repos: [api, web], group, single, empty };
}

describe.each(DIALECTS)("TaskService on %s", (dialect) => {
  let t: TestServer;
  let tasks: Tasks;
  let fx: Fixture;

  beforeAll(async () => {
    t = await startTestServer(dialect, { FOREMAN_STREAM_KEEPALIVE_SECONDS: "1" });
    tasks = t.client(TaskService);
    fx = await fixture("main");
  });

  afterAll(async () => {
    await t?.close();
  });

  const fixture = (label: string) => makeFixture(caller(t), label);

  async function createUnit(f: Fixture = fx, prompt = "Fix the flaky login test", extra: Partial<{ title: string }> = {}): Promise<View> {
    const { unitTask } = await tasks.createUnitTask({ repositoryGroupId: f.group.id, prompt, ...extra });
    expect(unitTask).toBeDefined();
    return view({ task: { case: "unitTask", value: unitTask! } } as Task);
  }

  async function createComposite(f: Fixture = fx, prompt = "Split the billing service in two", extra: Partial<{ title: string }> = {}): Promise<View> {
    const { compositeTask } = await tasks.createCompositeTask({ repositoryGroupId: f.group.id, prompt, ...extra });
    expect(compositeTask).toBeDefined();
    return view({ task: { case: "compositeTask", value: compositeTask! } } as Task);
  }

  const create = (kind: KindName, f: Fixture = fx, prompt?: string) => (kind === "unit" ? createUnit(f, prompt) : createComposite(f, prompt));

  const get = async (id: string): Promise<View> => view((await tasks.getTask({ id })).task);

  async function apply(id: string, move: Move): Promise<View> {
    switch (move.rpc) {
      case "UpdateTaskStatus":
        return view((await tasks.updateTaskStatus({ id, status: statusValue(move.to) })).task);
      case "ApproveTask":
        return view((await tasks.approveTask({ id })).task);
      case "RejectTask":
        return view((await tasks.rejectTask({ id, reason: "Not what we need." })).task);
      case "RequestChanges":
        return view((await tasks.requestChanges({ id, feedback: "Please also cover the edge cases." })).task);
      case "RetryTask":
        return view((await tasks.retryTask({ id })).task);
      case "FinishRun":
        return view(await runner(caller(t)).finish(id));
    }
  }

  /** A new task of the kind, moved along legal moves into the status. */
  async function drive(kind: KindName, target: StatusName, f: Fixture = fx): Promise<View> {
    let v = await create(kind, f);
    for (const move of pathTo(kind, target)) {
      v = await apply(v.id, move);
      expect(v.status, `${move.rpc} to ${move.to}`).toBe(move.to);
    }
    return v;
  }

  /** The base remotes stored for an agent task (the API does not show them). */
  const baseRemotes = (agentTaskId: string) =>
    t.server.db.kysely
      .selectFrom("agent_task_base_remotes")
      .select(["repository_id", "base_branch", "branch_name"])
      .where("agent_task_id", "=", agentTaskId)
      .orderBy("repository_id")
      .execute();

  /** Per task: how many agent tasks, sessions and active sessions the database holds for it. */
  async function runCounts(ids: string[]): Promise<Map<string, { agentTasks: number; sessions: number; active: number }>> {
    const out = new Map(ids.map((id) => [id, { agentTasks: 0, sessions: 0, active: 0 }]));
    if (ids.length === 0) return out;
    const agentRows = await t.server.db.kysely
      .selectFrom("agent_tasks")
      .select(["id", "unit_task_id", "composite_task_id"])
      .where((eb) => eb.or([eb("unit_task_id", "in", ids), eb("composite_task_id", "in", ids)]))
      .execute();
    const owner = new Map(agentRows.map((a) => [a.id, (a.unit_task_id ?? a.composite_task_id)!]));
    for (const a of agentRows) out.get(owner.get(a.id)!)!.agentTasks++;
    if (agentRows.length > 0) {
      const sessions = await t.server.db.kysely
        .selectFrom("agent_sessions")
        .select(["agent_task_id", "state"])
        .where(
          "agent_task_id",
          "in",
          agentRows.map((a) => a.id),
        )
        .execute();
      for (const s of sessions) {
        const c = out.get(owner.get(s.agent_task_id)!)!;
        c.sessions++;
        if (["queued", "assigned", "running"].includes(s.state)) c.active++;
      }
    }
    return out;
  }

  describe("CreateUnitTask", () => {
    it("fills in the defaults and queues one initial agent task", async () => {
      const before = Date.now();
      const { unitTask: u } = await tasks.createUnitTask({
        repositoryGroupId: fx.group.id,
        prompt: "  Fix the login redirect\nUsers land on /home instead of where they were.\n",
      });
      expect(u).toBeDefined();
      expect(u!.id).toMatch(UUID);
      expect(u!.workspaceId).toBe(fx.workspaceId);
      expect(u!.repositoryGroupId).toBe(fx.group.id);
      expect(u!.prompt).toBe("Fix the login redirect\nUsers land on /home instead of where they were.");
      expect(u!.title).toBe("Fix the login redirect");
      expect(u!.agentType).toBe(AgentType.CLAUDE_CODE);
      expect(u!.agentModel).toBe("");
      expect(u!.baseBranch).toBe("");
      // foreman/<the title's slug>-<the id's last 8 hexadecimal digits>
      expect(u!.branchName).toBe(`foreman/fix-the-login-redirect-${u!.id.replace(/-/g, "").slice(-8)}`);
      expect(u!.status).toBe(TaskStatus.IN_PROGRESS);
      expect(u!.executionState).toBe(ExecutionState.QUEUED);
      expect(u!.compositeTaskId).toBe("");
      expect(u!.createTime).toBeDefined();
      expect(Number(u!.createTime!.seconds) * 1000).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);

      expect(u!.agentTasks).toHaveLength(1);
      const [agent] = u!.agentTasks;
      expect(agent!.id).toMatch(UUID);
      expect(agent!.kind).toBe(AgentTaskKind.INITIAL);
      expect(agent!.prompt).toBe(u!.prompt);
      expect(agent!.agentType).toBe(AgentType.CLAUDE_CODE);
      expect(agent!.sessions).toHaveLength(1);
      const [session] = agent!.sessions;
      expect(session!.attempt).toBe(1);
      expect(session!.state).toBe(SessionState.QUEUED);
      expect(session!.agentTaskId).toBe(agent!.id);
      expect(session!.workerId).toBe("");
      expect(session!.agentType).toBe(AgentType.CLAUDE_CODE);

      // The run works on each repository of the group, from its default branch, on the task's branch.
      const [api, web] = fx.repos;
      expect(await baseRemotes(agent!.id)).toEqual(
        [
          { repository_id: api!.id, base_branch: "main", branch_name: u!.branchName },
          { repository_id: web!.id, base_branch: "develop", branch_name: u!.branchName },
        ].sort((a, b) => (a.repository_id < b.repository_id ? -1 : 1)),
      );
      expect((await get(u!.id)).unit).toEqual(u);
    });

    it("shortens a long first line to 80 characters with an ellipsis", async () => {
      const cases: [string, string][] = [
        ["a".repeat(80), "a".repeat(80)],
        ["a".repeat(81), `${"a".repeat(79)}…`],
        [`${"b".repeat(200)}\nsecond line`, `${"b".repeat(79)}…`],
        ["é".repeat(100), `${"é".repeat(79)}…`],
        ["😀".repeat(81), `${"😀".repeat(79)}…`],
      ];
      for (const [prompt, title] of cases) {
        const v = await createUnit(fx, prompt);
        expect(v.unit!.title).toBe(title);
        expect([...v.unit!.title].length).toBeLessThanOrEqual(80);
      }
      // A cut that falls after a space does not leave the space before the ellipsis.
      const spaced = `${"x".repeat(78)} ${"y".repeat(10)}`;
      expect((await createUnit(fx, spaced)).unit!.title).toBe(`${"x".repeat(78)}…`);
    });

    it("keeps an explicit title, agent, model, base branch and branch name", async () => {
      const { unitTask: u } = await tasks.createUnitTask({
        repositoryGroupId: fx.group.id,
        prompt: "Add rate limiting",
        title: "  Rate limits  ",
        agentType: AgentType.CODEX,
        agentModel: " gpt-5-codex ",
        baseBranch: "release/1.2",
        branchName: "feature/rate-limits",
      });
      expect(u!.title).toBe("Rate limits");
      expect(u!.agentType).toBe(AgentType.CODEX);
      expect(u!.agentModel).toBe("gpt-5-codex");
      expect(u!.baseBranch).toBe("release/1.2");
      expect(u!.branchName).toBe("feature/rate-limits");
      const agent = u!.agentTasks[0]!;
      expect(agent.agentType).toBe(AgentType.CODEX);
      expect(agent.agentModel).toBe("gpt-5-codex");
      expect(agent.sessions[0]!.agentType).toBe(AgentType.CODEX);
      expect(agent.sessions[0]!.agentModel).toBe("gpt-5-codex");
      const remotes = await baseRemotes(agent.id);
      expect(remotes).toHaveLength(2);
      for (const r of remotes) expect(r).toMatchObject({ base_branch: "release/1.2", branch_name: "feature/rate-limits" });
    });

    it("accepts a prompt of 100000 characters, counted as characters", async () => {
      expect((await createUnit(fx, "p".repeat(100_000))).unit!.prompt).toHaveLength(100_000);
      expect([...(await createUnit(fx, "😀".repeat(100_000))).unit!.prompt]).toHaveLength(100_000);
    });

    it("refuses an empty, blank or oversized prompt", async () => {
      for (const prompt of ["", " \n\t "]) {
        const err = await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt }), "prompt");
        expect(err.rawMessage).toContain("required");
      }
      await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "p".repeat(100_001) }), "prompt");
      await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "😀".repeat(100_001) }), "prompt");
    });

    it.each([
      ["NUL", "\u0000"],
      ["bell", "\u0007"],
      ["escape", "\u001b"],
      ["DEL", "\u007f"],
    ])("refuses a %s control character in the prompt, title and model", async (_label, c) => {
      await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: `First line\nbad${c}text` }), "prompt");
      // In the first line too, it is the prompt's fault, not the title made from it.
      await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: `bad${c}first line` }), "prompt");
      await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", title: `bad${c}title` }), "title");
      await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", agentModel: `m${c}` }), "agent_model");
    });

    it("keeps tabs and line breaks in a prompt but refuses them in a title", async () => {
      expect((await createUnit(fx, "Line one\n\tindented\r\nthree")).unit!.prompt).toBe("Line one\n\tindented\r\nthree");
      // A title made from the prompt turns its tabs and runs of spaces into one space.
      expect((await createUnit(fx, "Fix\tthe   parser\nfor real")).unit!.title).toBe("Fix the parser");
      for (const title of ["two\nlines", "carriage\rreturn", "tab\there"]) {
        await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", title }), "title");
      }
      await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", title: "t".repeat(201) }), "title");
      expect((await tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", title: "t".repeat(200) })).unitTask!.title).toHaveLength(200);
    });

    it.each(["a..b", "-x", "has space", "x.lock", "a//b", "/lead", "trail/", "end.", "a~b", "a^b", "a:b", "a?b", "a*b", "a[b", "a\\b", "@", "a@{b", ".hidden", "dir/.hidden", "x".repeat(256)])(
      "refuses the branch name %j as branch_name and base_branch",
      async (name) => {
        await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", branchName: name }), "branch_name");
        await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", baseBranch: name }), "base_branch");
      },
    );

    it("accepts ordinary branch names", async () => {
      for (const name of ["main", "feature/x-1", "release/2024.06", "user/alice/fix_bug", "v1.2.3"]) {
        const { unitTask } = await tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", branchName: name, baseBranch: name });
        expect(unitTask!.branchName).toBe(name);
        expect(unitTask!.baseBranch).toBe(name);
      }
    });

    it("refuses an unknown agent type number", async () => {
      const err = await expectInvalid(
        tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", agentType: 99 as AgentType }),
        "agent_type",
      );
      expect(err.rawMessage).toContain("99");
      await expectInvalid(tasks.createUnitTask({ repositoryGroupId: fx.group.id, prompt: "ok", agentModel: "m".repeat(101) }), "agent_model");
    });

    it.each([
      ["empty", ""],
      ["not a UUID", "not-a-uuid"],
      ["almost a UUID", `${UNKNOWN_ID}0`],
    ])("refuses a malformed group id (%s)", async (_label, id) => {
      await expectInvalid(tasks.createUnitTask({ repositoryGroupId: id, prompt: "ok" }), "repository_group_id");
    });

    it("names every invalid field at once", async () => {
      await expectInvalid(
        tasks.createUnitTask({
          repositoryGroupId: "nope",
          prompt: "",
          title: "a\nb",
          agentType: 99 as AgentType,
          baseBranch: "a b",
          branchName: "-x",
        }),
        "prompt",
        "title",
        "agent_type",
        "base_branch",
        "branch_name",
        "repository_group_id",
      );
    });

    it("answers an unknown group with NotFound and a group without repositories with FailedPrecondition", async () => {
      const missing = await expectCode(tasks.createUnitTask({ repositoryGroupId: UNKNOWN_ID, prompt: "ok" }), Code.NotFound);
      expect(missing.rawMessage).toContain(UNKNOWN_ID);
      const empty = await expectCode(tasks.createUnitTask({ repositoryGroupId: fx.empty.id, prompt: "ok" }), Code.FailedPrecondition);
      expect(empty.rawMessage).toContain(fx.empty.id);
      expect(errorMetadata(empty).repository_group_id).toBe(fx.empty.id);
      // Neither left a task behind.
      const { tasks: listed } = await tasks.listTasks({ workspaceId: fx.workspaceId, repositoryGroupId: fx.empty.id });
      expect(listed).toEqual([]);
    });

    it("accepts the group id in upper case", async () => {
      const { unitTask } = await tasks.createUnitTask({ repositoryGroupId: fx.group.id.toUpperCase(), prompt: "ok" });
      expect(unitTask!.repositoryGroupId).toBe(fx.group.id);
    });
  });

  describe("CreateCompositeTask", () => {
    it("starts planning with a queued planning agent task; execution defaults to the planner's agent", async () => {
      const { compositeTask: c } = await tasks.createCompositeTask({
        repositoryGroupId: fx.group.id,
        prompt: "Move the billing code into its own service\nKeep the public API.",
        planningAgentType: AgentType.GEMINI_CLI,
        planningAgentModel: "gemini-2.5-pro",
      });
      expect(c!.id).toMatch(UUID);
      expect(c!.workspaceId).toBe(fx.workspaceId);
      expect(c!.title).toBe("Move the billing code into its own service");
      expect(c!.status).toBe(TaskStatus.PLANNING);
      expect(c!.executionState).toBe(ExecutionState.QUEUED);
      expect(c!.executionAgentType).toBe(AgentType.GEMINI_CLI);
      expect(c!.executionAgentModel).toBe("gemini-2.5-pro");
      expect(c!.nodes).toEqual([]);
      const planning = c!.planningAgentTask!;
      expect(planning.kind).toBe(AgentTaskKind.PLANNING);
      expect(planning.prompt).toBe(c!.prompt);
      expect(planning.agentType).toBe(AgentType.GEMINI_CLI);
      expect(planning.agentModel).toBe("gemini-2.5-pro");
      expect(planning.sessions.map((s) => [s.attempt, s.state])).toEqual([[1, SessionState.QUEUED]]);
      expect((await get(c!.id)).composite).toEqual(c);
    });

    it("defaults the planner to CLAUDE_CODE and keeps an explicit execution agent", async () => {
      const { compositeTask: c } = await tasks.createCompositeTask({
        repositoryGroupId: fx.group.id,
        prompt: "Plan it",
        title: "Explicit",
        executionAgentType: AgentType.AIDER,
        executionAgentModel: "sonnet",
        baseBranch: "develop",
      });
      expect(c!.title).toBe("Explicit");
      expect(c!.planningAgentTask!.agentType).toBe(AgentType.CLAUDE_CODE);
      expect(c!.executionAgentType).toBe(AgentType.AIDER);
      expect(c!.executionAgentModel).toBe("sonnet");
      // CompositeTask has no base_branch field in the API; the database keeps it.
      const row = await t.server.db.kysely.selectFrom("composite_tasks").select("base_branch").where("id", "=", c!.id).executeTakeFirstOrThrow();
      expect(row.base_branch).toBe("develop");
    });

    it("validates its fields like CreateUnitTask", async () => {
      await expectInvalid(
        tasks.createCompositeTask({
          repositoryGroupId: "x",
          prompt: "",
          planningAgentType: 99 as AgentType,
          executionAgentType: 42 as AgentType,
          baseBranch: "a..b",
        }),
        "repository_group_id",
        "prompt",
        "planning_agent_type",
        "execution_agent_type",
        "base_branch",
      );
      await expectInvalid(tasks.createCompositeTask({ repositoryGroupId: fx.group.id, prompt: "p".repeat(100_001) }), "prompt");
      await expectInvalid(tasks.createCompositeTask({ repositoryGroupId: fx.group.id, prompt: "ok", title: "a\nb" }), "title");
      await expectInvalid(
        tasks.createCompositeTask({ repositoryGroupId: fx.group.id, prompt: "ok", executionAgentModel: "bad\nmodel" }),
        "execution_agent_model",
      );
      await expectCode(tasks.createCompositeTask({ repositoryGroupId: UNKNOWN_ID, prompt: "ok" }), Code.NotFound);
      await expectCode(tasks.createCompositeTask({ repositoryGroupId: fx.empty.id, prompt: "ok" }), Code.FailedPrecondition);
    });
  });

  describe("GetTask", () => {
    it("returns either kind, also by an upper-case id", async () => {
      const u = await createUnit();
      const c = await createComposite();
      expect(await get(u.id)).toEqual(u);
      expect(await get(c.id)).toEqual(c);
      expect((await get(u.id.toUpperCase())).id).toBe(u.id);
      expect((await tasks.getTask({ id: c.id })).task?.task.case).toBe("compositeTask");
    });

    it("answers an unknown id with NotFound and a malformed one with InvalidArgument", async () => {
      const err = await expectCode(tasks.getTask({ id: UNKNOWN_ID }), Code.NotFound);
      expect(err.rawMessage).toContain(UNKNOWN_ID);
      for (const id of ["", "  ", "not-a-uuid", `${UNKNOWN_ID}0`]) await expectInvalid(tasks.getTask({ id }), "id");
    });
  });

  describe("ListTasks", () => {
    let lf: Fixture;
    /** Created in this order, so the list shows them newest (last) first. */
    const made: View[] = [];
    const ids = (...indexes: number[]) => indexes.map((i) => made[i]!.id);
    const list = async (req: Parameters<Tasks["listTasks"]>[0]) => (await tasks.listTasks({ workspaceId: lf.workspaceId, ...req })).tasks.map((x) => view(x).id);

    beforeAll(async () => {
      lf = await fixture("list");
      const specs: [KindName, RepositoryGroup, string, string][] = [
        ["unit", lf.group, "Fix login redirect", "Users land on the home page after signing in."],
        ["composite", lf.group, "Split the billing service", "Plan the split along the invoice boundary."],
        ["unit", lf.single, "100% coverage for the parser", "Cover every branch."],
        ["unit", lf.single, "1000 files renamed", "Rename them all."],
        ["composite", lf.single, "snake_case config keys", "Rename every key."],
        ["unit", lf.group, "snakeXcase names in the UI", "Labels look odd."],
        ["unit", lf.group, "Another task", "The REDIRECT loops on logout."],
      ];
      for (const [kind, group, title, prompt] of specs) {
        const v =
          kind === "unit"
            ? view({ task: { case: "unitTask", value: (await tasks.createUnitTask({ repositoryGroupId: group.id, title, prompt })).unitTask! } } as Task)
            : view({
                task: { case: "compositeTask", value: (await tasks.createCompositeTask({ repositoryGroupId: group.id, title, prompt })).compositeTask! },
              } as Task);
        made.push(v);
      }
      await runner(caller(t)).finish(made[0]!.id);
      await tasks.updateTaskStatus({ id: made[2]!.id, status: TaskStatus.CANCELLED });
      await tasks.updateTaskStatus({ id: made[4]!.id, status: TaskStatus.CANCELLED });
      await runner(caller(t)).finish(made[1]!.id);
    });

    it("lists both kinds newest first, each as GetTask shows it", async () => {
      const res = await tasks.listTasks({ workspaceId: lf.workspaceId });
      expect(res.nextPageToken).toBe("");
      expect(res.tasks.map((x) => view(x).id)).toEqual(ids(6, 5, 4, 3, 2, 1, 0));
      for (const task of res.tasks) expect(task).toEqual((await tasks.getTask({ id: view(task).id })).task);
      expect(res.tasks.map((x) => view(x).kind)).toEqual(["unit", "unit", "composite", "unit", "unit", "composite", "unit"]);
    });

    it("filters by any of several statuses", async () => {
      expect(await list({ statuses: [TaskStatus.IN_REVIEW, TaskStatus.CANCELLED] })).toEqual(ids(4, 2, 0));
      expect(await list({ statuses: [TaskStatus.IN_PROGRESS] })).toEqual(ids(6, 5, 3));
      expect(await list({ statuses: [TaskStatus.PLANNING, TaskStatus.PENDING_APPROVAL] })).toEqual(ids(1));
      expect(await list({ statuses: [TaskStatus.CANCELLED, TaskStatus.CANCELLED] })).toEqual(ids(4, 2));
      expect(await list({ statuses: [TaskStatus.DONE] })).toEqual([]);
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, statuses: [99 as TaskStatus] }), "statuses");
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, statuses: [TaskStatus.UNSPECIFIED] }), "statuses");
    });

    it("filters by kind and repository group", async () => {
      expect(await list({ kind: TaskKind.UNIT })).toEqual(ids(6, 5, 3, 2, 0));
      expect(await list({ kind: TaskKind.COMPOSITE })).toEqual(ids(4, 1));
      expect(await list({ repositoryGroupId: lf.group.id })).toEqual(ids(6, 5, 1, 0));
      expect(await list({ repositoryGroupId: lf.single.id.toUpperCase() })).toEqual(ids(4, 3, 2));
      expect(await list({ repositoryGroupId: lf.group.id, kind: TaskKind.UNIT, statuses: [TaskStatus.IN_PROGRESS] })).toEqual(ids(6, 5));
      expect(await list({ repositoryGroupId: UNKNOWN_ID })).toEqual([]);
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, kind: 9 as TaskKind }), "kind");
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, repositoryGroupId: "nope" }), "repository_group_id");
    });

    it("finds text in the title or prompt, case-insensitively, with % and _ taken literally", async () => {
      expect(await list({ query: "redirect" })).toEqual(ids(6, 0));
      expect(await list({ query: "  ReDiReCt " })).toEqual(ids(6, 0));
      expect(await list({ query: "invoice boundary" })).toEqual(ids(1));
      expect(await list({ query: "0%" })).toEqual(ids(2));
      expect(await list({ query: "%" })).toEqual(ids(2));
      expect(await list({ query: "snake_case" })).toEqual(ids(4));
      expect(await list({ query: "_" })).toEqual(ids(4));
      expect(await list({ query: "\\" })).toEqual([]);
      expect(await list({ query: "nothing like this" })).toEqual([]);
      expect(await list({ query: "redirect", statuses: [TaskStatus.IN_REVIEW] })).toEqual(ids(0));
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, query: "two\nlines" }), "query");
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, query: "q".repeat(201) }), "query");
    });

    it("folds the case of letters beyond ASCII alike on both databases", async () => {
      const uf = await fixture("unicode");
      const a = await createUnit(uf, "Édition Über alles");
      const b = await createUnit(uf, "Plain ascii", { title: "ΣΊΣΥΦΟΣ release notes" });
      const find = async (query: string) =>
        (await tasks.listTasks({ workspaceId: uf.workspaceId, query })).tasks.map((x) => view(x).id);
      expect(await find("édition über")).toEqual([a.id]);
      expect(await find("ÉDITION")).toEqual([a.id]);
      expect(await find("σίσυφος")).toEqual([b.id]);
      expect(await find("ascii")).toEqual([b.id]);
    });

    it("requires a known workspace", async () => {
      await expectInvalid(tasks.listTasks({ workspaceId: "" }), "workspace_id");
      await expectInvalid(tasks.listTasks({ workspaceId: "not-a-uuid" }), "workspace_id");
      const err = await expectCode(tasks.listTasks({ workspaceId: UNKNOWN_ID }), Code.NotFound);
      expect(err.rawMessage).toContain(UNKNOWN_ID);
    });

    it("pages across both kinds without duplicates or misses, also while tasks are added", async () => {
      const pf = await fixture("pages");
      const created: View[] = [];
      for (let i = 0; i < 25; i++) created.push(await create(i % 3 === 1 ? "composite" : "unit", pf, `Task number ${i}`));
      const newestFirst = created.map((v) => v.id).reverse();

      const pages: string[][] = [];
      let pageToken = "";
      do {
        const res = await tasks.listTasks({ workspaceId: pf.workspaceId, pageSize: 7, pageToken });
        pages.push(res.tasks.map((x) => view(x).id));
        pageToken = res.nextPageToken;
        expect(pages.length).toBeLessThan(10);
      } while (pageToken !== "");
      expect(pages.map((p) => p.length)).toEqual([7, 7, 7, 4]);
      expect(pages.flat()).toEqual(newestFirst);

      // Tasks created between pages are newer than the ones still to come, so they show up in neither.
      const first = await tasks.listTasks({ workspaceId: pf.workspaceId, pageSize: 7 });
      const later = [(await createUnit(pf, "late 1")).id, (await createComposite(pf, "late 2")).id];
      const rest: string[] = [];
      pageToken = first.nextPageToken;
      while (pageToken !== "") {
        const res = await tasks.listTasks({ workspaceId: pf.workspaceId, pageSize: 7, pageToken });
        rest.push(...res.tasks.map((x) => view(x).id));
        pageToken = res.nextPageToken;
      }
      expect([...first.tasks.map((x) => view(x).id), ...rest]).toEqual(newestFirst);
      expect((await tasks.listTasks({ workspaceId: pf.workspaceId, pageSize: 2 })).tasks.map((x) => view(x).id)).toEqual([...later].reverse());

      // Filtered pages, the page size exactly dividing the list (no empty last page): "late 1"
      // and the 17 unit tasks of the 25.
      const units = [later[0]!, ...[...created].reverse().filter((v) => v.kind === "unit").map((v) => v.id)];
      expect(units).toHaveLength(18);
      const unitPages: string[] = [];
      pageToken = "";
      do {
        const res = await tasks.listTasks({ workspaceId: pf.workspaceId, kind: TaskKind.UNIT, pageSize: units.length / 2, pageToken });
        expect(res.tasks.length).toBe(units.length / 2);
        unitPages.push(...res.tasks.map((x) => view(x).id));
        pageToken = res.nextPageToken;
      } while (pageToken !== "");
      expect(unitPages).toEqual(units);
    });

    it("refuses a page token with other filters, another workspace's or a forged one", async () => {
      const first = await tasks.listTasks({ workspaceId: lf.workspaceId, pageSize: 2 });
      expect(first.nextPageToken).not.toBe("");
      const pageToken = first.nextPageToken;
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, pageSize: 2, pageToken, kind: TaskKind.UNIT }), "page_token");
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, pageSize: 2, pageToken, statuses: [TaskStatus.CANCELLED] }), "page_token");
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, pageSize: 2, pageToken, query: "redirect" }), "page_token");
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, pageSize: 2, pageToken, repositoryGroupId: lf.group.id }), "page_token");
      await expectInvalid(tasks.listTasks({ workspaceId: fx.workspaceId, pageSize: 2, pageToken }), "page_token");
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, pageToken: "garbage" }), "page_token");
      await expectInvalid(tasks.listTasks({ workspaceId: lf.workspaceId, pageSize: -1 }), "page_size");
      // The same filters, the page size aside, may go on with it.
      const next = await tasks.listTasks({ workspaceId: lf.workspaceId, pageSize: 3, pageToken });
      expect(next.tasks.map((x) => view(x).id)).toEqual(ids(4, 3, 2));
    });
  });

  describe("the state machine", () => {
    it("TRANSITIONS covers each kind's statuses, and the tests can reach every one of them", () => {
      expect([...statusesOf("unit"), ...statusesOf("composite")].every((s) => ALL_STATUSES.includes(s))).toBe(true);
      expect(new Set([...statusesOf("unit"), ...statusesOf("composite")])).toEqual(new Set(ALL_STATUSES));
      for (const kind of KINDS) {
        for (const [from, next] of Object.entries(TRANSITIONS[kind])) {
          for (const to of next) expect(statusesOf(kind), `${kind}: ${from} → ${to}`).toContain(to);
        }
        for (const status of statusesOf(kind)) expect(() => pathTo(kind, status)).not.toThrow();
      }
    });

    describe.each(KINDS)("of a %s task", (kind) => {
      it.each(statusesOf(kind))(
        "UpdateTaskStatus from %s to every status",
        async (from) => {
          await inBatches(ALL_STATUSES.length, 5, async (i) => {
            const to = ALL_STATUSES[i]!;
            const label = `${kind} ${from} → ${to}`;
            const before = await drive(kind, from);
            const call = tasks.updateTaskStatus({ id: before.id, status: statusValue(to) });
            if (to === from) {
              await expectRefused(call, from);
            } else if (!legal(kind, from, to)) {
              const err = await expectRefused(call, from);
              expect(err.rawMessage, label).toContain(to);
            } else if (from === workStatus(kind) && to === reviewStatus(kind)) {
              // Its run is queued: only the run's end moves the task into review.
              const err = await expectRefused(call, from);
              expect(err.rawMessage, label).toContain("run is queued");
              expect(errorMetadata(err).execution_state, label).toBe("queued");
            } else if (AGENT_WORK.includes(to)) {
              const err = await expectCode(call, Code.FailedPrecondition);
              expect(err.rawMessage, label).toContain(agentRpc(kind, from, to));
              expect(err.rawMessage, label).toMatch(word(from));
              expect(errorMetadata(err).current_status, label).toBe(from);
            } else {
              const after = view((await call).task);
              expect(after.status, label).toBe(to);
              expect(after.execution, label).toBe(ExecutionState.IDLE);
              expect(activeSessions(after), label).toEqual([]);
              // What ran before is cancelled; nothing else changed.
              const wasActive = new Set(activeSessions(before).map((s) => s.id));
              const sessions = after.agentTasks.flatMap((a) => a.sessions);
              for (const s of sessions) if (wasActive.has(s.id)) expect(s.state, label).toBe(SessionState.CANCELLED);
              expect(sessions.map((s) => s.id)).toEqual(before.agentTasks.flatMap((a) => a.sessions).map((s) => s.id));
              expect(await get(before.id), label).toEqual(after);
              expect((await runCounts([before.id])).get(before.id)!.active, label).toBe(0);
              return;
            }
            // A refused move changes nothing.
            expect(await get(before.id), label).toEqual(before);
          });
        },
        120_000,
      );
    });

    it("refuses an unspecified or unknown status, a malformed id and an unknown task", async () => {
      const u = await createUnit();
      await expectInvalid(tasks.updateTaskStatus({ id: u.id, status: TaskStatus.UNSPECIFIED }), "status");
      await expectInvalid(tasks.updateTaskStatus({ id: u.id, status: 99 as TaskStatus }), "status");
      await expectInvalid(tasks.updateTaskStatus({ id: "nope", status: TaskStatus.CANCELLED }), "id");
      await expectCode(tasks.updateTaskStatus({ id: UNKNOWN_ID, status: TaskStatus.CANCELLED }), Code.NotFound);
      expect(await get(u.id)).toEqual(u);
    });
  });

  describe("review", () => {
    it("ApproveTask moves a unit task in review to approved", async () => {
      const v = await drive("unit", "in_review");
      const after = view((await tasks.approveTask({ id: v.id })).task);
      expect(after.status).toBe("approved");
      expect(after.execution).toBe(ExecutionState.IDLE);
      expect(activeSessions(after)).toEqual([]);
    });

    it("ApproveTask moves a composite task's plan from pending_approval to in_progress", async () => {
      const v = await drive("composite", "pending_approval");
      const after = view((await tasks.approveTask({ id: v.id })).task);
      expect(after.status).toBe("in_progress");
      expect(after.execution).toBe(ExecutionState.IDLE);
      expect(activeSessions(after)).toEqual([]);
    });

    it("RejectTask moves a task in review to rejected, with a reason of at most 2000 characters", async () => {
      for (const kind of KINDS) {
        const v = await drive(kind, reviewStatus(kind));
        await expectInvalid(tasks.rejectTask({ id: v.id, reason: "r".repeat(2001) }), "reason");
        await expectInvalid(tasks.rejectTask({ id: v.id, reason: "bad\u0007reason" }), "reason");
        expect((await get(v.id)).status).toBe(reviewStatus(kind));
        const after = view((await tasks.rejectTask({ id: v.id, reason: "r".repeat(2000) })).task);
        expect(after.status).toBe("rejected");
        expect(after.execution).toBe(ExecutionState.IDLE);
        const bare = await drive(kind, reviewStatus(kind));
        expect(view((await tasks.rejectTask({ id: bare.id })).task).status).toBe("rejected");
      }
    });

    it("keeps a reject reason with the task, and clears it on the next move", async () => {
      for (const kind of KINDS) {
        const v = await drive(kind, reviewStatus(kind));
        const rejected = view((await tasks.rejectTask({ id: v.id, reason: "  Out of scope for this quarter.  " })).task);
        expect((rejected.unit ?? rejected.composite)!.statusReason).toBe("Out of scope for this quarter.");
        const again = await get(v.id);
        expect((again.unit ?? again.composite)!.statusReason).toBe("Out of scope for this quarter.");
        const moved = await drive(kind, reviewStatus(kind));
        const cancelled = view((await tasks.updateTaskStatus({ id: moved.id, status: TaskStatus.CANCELLED })).task);
        expect((cancelled.unit ?? cancelled.composite)!.statusReason).toBe("");
      }
    });

    it("RequestChanges queues a request_changes agent task on the same branch, with the feedback in its prompt", async () => {
      const prompt = "Add pagination to the audit log endpoint";
      let v = await createUnit(fx, prompt);
      const branch = v.unit!.branchName;
      const initial = v.agentTasks[0]!;
      v = await apply(v.id, { rpc: "FinishRun", to: "in_review" });

      await expectInvalid(tasks.requestChanges({ id: v.id, feedback: "" }), "feedback");
      await expectInvalid(tasks.requestChanges({ id: v.id, feedback: " \n " }), "feedback");
      await expectInvalid(tasks.requestChanges({ id: v.id, feedback: "f".repeat(20_001) }), "feedback");
      expect((await get(v.id)).agentTasks).toHaveLength(1);

      const feedback = "Use cursor pagination, not offsets.";
      const after = view((await tasks.requestChanges({ id: v.id, feedback: `  ${feedback}\n` })).task);
      expect(after.status).toBe("in_progress");
      expect(after.execution).toBe(ExecutionState.QUEUED);
      expect(after.unit!.branchName).toBe(branch);
      expect(after.agentTasks.map((a) => a.kind)).toEqual([AgentTaskKind.INITIAL, AgentTaskKind.REQUEST_CHANGES]);
      const next = after.agentTasks[1]!;
      expect(next.id).not.toBe(initial.id);
      expect(next.prompt).toContain(prompt);
      expect(next.prompt).toContain(feedback);
      expect(next.agentType).toBe(initial.agentType);
      expect(next.sessions.map((s) => [s.attempt, s.state])).toEqual([[1, SessionState.QUEUED]]);
      expect(activeSessions(after).map((s) => s.id)).toEqual([next.sessions[0]!.id]);
      // The same repositories, base and branch as the first run.
      const remotes = await baseRemotes(next.id);
      expect(remotes).toHaveLength(2);
      expect(remotes).toEqual(await baseRemotes(initial.id));
      for (const r of remotes) expect(r.branch_name).toBe(branch);

      // A second round carries both rounds of feedback.
      await runner(caller(t)).finish(v.id);
      const third = view((await tasks.requestChanges({ id: v.id, feedback: "Also add a test." })).task).agentTasks[2]!;
      expect(third.kind).toBe(AgentTaskKind.REQUEST_CHANGES);
      expect(third.prompt).toContain(prompt);
      expect(third.prompt).toContain(feedback);
      expect(third.prompt).toContain("Also add a test.");
      expect(await baseRemotes(third.id)).toEqual(remotes);
    });

    it("RequestChanges on a composite plan goes back to planning with a new planning agent task", async () => {
      const prompt = "Migrate the jobs to the new queue";
      let v = await createComposite(fx, prompt);
      const firstPlanning = v.agentTasks[0]!;
      v = await apply(v.id, { rpc: "FinishRun", to: "pending_approval" });
      const after = view((await tasks.requestChanges({ id: v.id, feedback: "Do the email jobs first." })).task);
      expect(after.status).toBe("planning");
      expect(after.execution).toBe(ExecutionState.QUEUED);
      const planning = after.composite!.planningAgentTask!;
      expect(planning.id).not.toBe(firstPlanning.id);
      expect(planning.kind).toBe(AgentTaskKind.PLANNING);
      expect(planning.prompt).toContain(prompt);
      expect(planning.prompt).toContain("Do the email jobs first.");
      expect(planning.sessions.map((s) => [s.attempt, s.state])).toEqual([[1, SessionState.QUEUED]]);
      expect((await runCounts([v.id])).get(v.id)).toEqual({ agentTasks: 2, sessions: 2, active: 1 });
    });

    describe.each(KINDS)("on a %s task in the wrong status", (kind) => {
      it.each(statusesOf(kind).filter((s) => s !== reviewStatus(kind)))("Approve, Reject and RequestChanges from %s are refused", async (from) => {
        const v = await drive(kind, from);
        const approve = await expectRefused(tasks.approveTask({ id: v.id }), from);
        expect(approve.rawMessage).toContain(reviewStatus(kind));
        await expectRefused(tasks.rejectTask({ id: v.id, reason: "no" }), from);
        await expectRefused(tasks.requestChanges({ id: v.id, feedback: "more" }), from);
        expect(await get(v.id)).toEqual(v);
      });
    });

    it("review RPCs answer NotFound for an unknown task and InvalidArgument for a malformed id", async () => {
      for (const id of [UNKNOWN_ID]) {
        await expectCode(tasks.approveTask({ id }), Code.NotFound);
        await expectCode(tasks.rejectTask({ id }), Code.NotFound);
        await expectCode(tasks.requestChanges({ id, feedback: "x" }), Code.NotFound);
        await expectCode(tasks.retryTask({ id }), Code.NotFound);
      }
      await expectInvalid(tasks.approveTask({ id: "x" }), "id");
      await expectInvalid(tasks.rejectTask({ id: "x" }), "id");
      await expectInvalid(tasks.requestChanges({ id: "x", feedback: "x" }), "id");
      await expectInvalid(tasks.retryTask({ id: "" }), "id");
    });
  });

  describe("RetryTask", () => {
    it.each(["failed", "cancelled"] as StatusName[])("queues attempt 2 of the same agent task of a %s unit task", async (from) => {
      const v = await drive("unit", from);
      const agent = v.agentTasks[0]!;
      const after = view((await tasks.retryTask({ id: v.id })).task);
      expect(after.status).toBe("in_progress");
      expect(after.execution).toBe(ExecutionState.QUEUED);
      expect(after.agentTasks.map((a) => a.id)).toEqual([agent.id]);
      expect(after.agentTasks[0]!.sessions.map((s) => [s.attempt, s.state])).toEqual([
        [1, SessionState.CANCELLED],
        [2, SessionState.QUEUED],
      ]);
      // And attempt 3 after the next failure.
      await tasks.updateTaskStatus({ id: v.id, status: TaskStatus.FAILED });
      const third = view((await tasks.retryTask({ id: v.id })).task);
      expect(third.agentTasks[0]!.sessions.map((s) => s.attempt)).toEqual([1, 2, 3]);
      expect(activeSessions(third).map((s) => s.attempt)).toEqual([3]);
    });

    it.each(["failed", "cancelled"] as StatusName[])("plans a %s composite task again with attempt 2 of its planning agent task", async (from) => {
      const v = await drive("composite", from);
      const planning = v.agentTasks[0]!;
      const after = view((await tasks.retryTask({ id: v.id })).task);
      expect(after.status).toBe("planning");
      expect(after.execution).toBe(ExecutionState.QUEUED);
      expect(after.composite!.planningAgentTask!.id).toBe(planning.id);
      expect(after.agentTasks[0]!.sessions.map((s) => [s.attempt, s.state])).toEqual([
        [1, SessionState.CANCELLED],
        [2, SessionState.QUEUED],
      ]);
    });

    it.each(["failed", "cancelled"] as StatusName[])("resumes execution of a %s composite task whose plan was approved", async (from) => {
      const v = await drive("composite", "pending_approval");
      const approved = view((await tasks.approveTask({ id: v.id })).task);
      expect(approved.status).toBe("in_progress");
      expect(approved.composite!.planApproveTime).toBeDefined();
      await tasks.updateTaskStatus({ id: v.id, status: from === "failed" ? TaskStatus.FAILED : TaskStatus.CANCELLED });
      const after = view((await tasks.retryTask({ id: v.id })).task);
      expect(after.status).toBe("in_progress");
      expect(after.execution).toBe(ExecutionState.IDLE);
      // No new planning run: the approved plan stands.
      expect(after.agentTasks[0]!.sessions).toHaveLength(1);
      expect(activeSessions(after)).toEqual([]);
    });

    it("plans again when a composite task's plan was never approved, even after a re-plan", async () => {
      const v = await drive("composite", "pending_approval");
      await tasks.requestChanges({ id: v.id, feedback: "Fewer nodes." });
      await tasks.updateTaskStatus({ id: v.id, status: TaskStatus.FAILED });
      const after = view((await tasks.retryTask({ id: v.id })).task);
      expect(after.status).toBe("planning");
      expect(after.composite!.planApproveTime).toBeUndefined();
      expect(activeSessions(after)).toHaveLength(1);
    });

    describe.each(KINDS)("of a %s task", (kind) => {
      it.each(statusesOf(kind).filter((s) => s !== "failed" && s !== "cancelled"))("is refused from %s", async (from) => {
        const v = await drive(kind, from);
        const err = await expectRefused(tasks.retryTask({ id: v.id }), from);
        expect(err.rawMessage).toContain("failed or cancelled");
        expect(await get(v.id)).toEqual(v);
      });
    });
  });

  describe("DeleteTask", () => {
    it.each(KINDS)("deletes a %s task, cancelling what runs; a second delete is NotFound", async (kind) => {
      const v = await create(kind);
      expect(activeSessions(v)).toHaveLength(1);
      expect(await tasks.deleteTask({ id: v.id.toUpperCase() })).toBeDefined();
      await expectCode(tasks.getTask({ id: v.id }), Code.NotFound);
      await expectCode(tasks.deleteTask({ id: v.id }), Code.NotFound);
      await expectCode(tasks.updateTaskStatus({ id: v.id, status: TaskStatus.CANCELLED }), Code.NotFound);
      await expectCode(tasks.retryTask({ id: v.id }), Code.NotFound);
      expect((await runCounts([v.id])).get(v.id)).toEqual({ agentTasks: 0, sessions: 0, active: 0 });
      const { tasks: listed } = await tasks.listTasks({ workspaceId: fx.workspaceId, pageSize: 1000 });
      expect(listed.map((x) => view(x).id)).not.toContain(v.id);
    });

    it("deletes from any status", async () => {
      for (const kind of KINDS) {
        await inBatches(statusesOf(kind).length, 4, async (i) => {
          const v = await drive(kind, statusesOf(kind)[i]!);
          await tasks.deleteTask({ id: v.id });
          await expectCode(tasks.getTask({ id: v.id }), Code.NotFound);
        });
      }
    });

    it("refuses a malformed id", async () => {
      await expectInvalid(tasks.deleteTask({ id: "x" }), "id");
      await expectCode(tasks.deleteTask({ id: UNKNOWN_ID }), Code.NotFound);
    });
  });

  describe("concurrent calls", () => {
    /** Splits settled calls into the successes and the errors. */
    function outcomes<T>(results: PromiseSettledResult<T>[]): { ok: T[]; errors: unknown[] } {
      return {
        ok: results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : [])),
        errors: results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : [])),
      };
    }

    it.each([2, 10])("of %i ApproveTask calls on one unit task in review, exactly one wins", async (n) => {
      const v = await drive("unit", "in_review");
      const { ok, errors } = outcomes(await Promise.allSettled(Array.from({ length: n }, () => tasks.approveTask({ id: v.id }))));
      expect(ok).toHaveLength(1);
      expect(view(ok[0]!.task).status).toBe("approved");
      expect(errors).toHaveLength(n - 1);
      for (const e of errors) await expectRefused(Promise.reject(e), "approved");
      expect((await get(v.id)).status).toBe("approved");
    });

    it("of 10 ApproveTask calls on one composite plan, exactly one wins", async () => {
      const v = await drive("composite", "pending_approval");
      const { ok, errors } = outcomes(await Promise.allSettled(Array.from({ length: 10 }, () => tasks.approveTask({ id: v.id }))));
      expect(ok).toHaveLength(1);
      for (const e of errors) await expectRefused(Promise.reject(e), "in_progress");
      expect((await get(v.id)).status).toBe("in_progress");
    });

    it.each(KINDS)("of 10 RequestChanges calls on one %s task in review, exactly one creates an agent task", async (kind) => {
      const v = await drive(kind, reviewStatus(kind));
      const calls = Array.from({ length: 10 }, (_, i) => tasks.requestChanges({ id: v.id, feedback: `feedback ${i}` }));
      const { ok, errors } = outcomes(await Promise.allSettled(calls));
      expect(ok).toHaveLength(1);
      expect(errors).toHaveLength(9);
      for (const e of errors) await expectRefused(Promise.reject(e), workStatus(kind));
      expect((await runCounts([v.id])).get(v.id)).toEqual({ agentTasks: 2, sessions: 2, active: 1 });
      const after = await get(v.id);
      expect(after.status).toBe(workStatus(kind));
      const feedbacks = Array.from({ length: 10 }, (_, i) => `feedback ${i}`).filter((f) => after.agentTasks.at(-1)!.prompt.endsWith(f));
      expect(feedbacks).toHaveLength(1);
    });

    it("of 10 RetryTask calls on one failed task, exactly one queues a new attempt", async () => {
      const v = await drive("unit", "failed");
      const { ok } = outcomes(await Promise.allSettled(Array.from({ length: 10 }, () => tasks.retryTask({ id: v.id }))));
      expect(ok).toHaveLength(1);
      expect((await get(v.id)).agentTasks[0]!.sessions.map((s) => s.attempt)).toEqual([1, 2]);
    });

    // Every call here needs the task in review, and none can follow another: whichever comes
    // first, the rest find a status they cannot move from. (Calls that could follow one another,
    // such as Approve then UpdateTaskStatus(pr_open), may both succeed, and rightly.)
    it("of Approve, Reject, RequestChanges and UpdateTaskStatus racing on one task, exactly one wins", async () => {
      const v = await drive("unit", "in_review");
      const calls = [
        tasks.approveTask({ id: v.id }),
        tasks.rejectTask({ id: v.id, reason: "no" }),
        tasks.requestChanges({ id: v.id, feedback: "again" }),
        tasks.updateTaskStatus({ id: v.id, status: TaskStatus.APPROVED }),
        tasks.updateTaskStatus({ id: v.id, status: TaskStatus.REJECTED }),
        tasks.approveTask({ id: v.id }),
        tasks.requestChanges({ id: v.id, feedback: "and again" }),
      ];
      const { ok, errors } = outcomes(await Promise.allSettled(calls));
      expect(ok).toHaveLength(1);
      const winner = view(ok[0]!.task);
      for (const e of errors) await expectRefused(Promise.reject(e), winner.status);
      expect(await get(v.id)).toEqual(winner);
      expect((await runCounts([v.id])).get(v.id)!.agentTasks).toBe(winner.status === "in_progress" ? 2 : 1);
    });
  });

  describe("a randomised sequence of calls", () => {
    interface Model {
      id: string;
      kind: KindName;
      status: StatusName;
      agentTasks: number;
      sessions: number;
      /** A composite task's plan was approved once: RetryTask then resumes execution. */
      planApproved: boolean;
    }

    type Call = { rpc: Rpc; to?: StatusName } | { rpc: "DeleteTask" };

    /** What the call does to a task in the model's status: the status it moves to, or undefined if it is refused. */
    function expected(m: Model, call: Call): StatusName | undefined {
      const review = m.status === reviewStatus(m.kind);
      switch (call.rpc) {
        case "UpdateTaskStatus":
          // In work status the task's run is queued (or held by the runner): review waits for its end.
          if (m.status === workStatus(m.kind) && call.to === reviewStatus(m.kind)) return undefined;
          return call.to !== m.status && legal(m.kind, m.status, call.to!) && !AGENT_WORK.includes(call.to!) ? call.to : undefined;
        case "FinishRun":
          return m.status === workStatus(m.kind) ? reviewStatus(m.kind) : undefined;
        case "ApproveTask":
          return review ? (m.kind === "unit" ? "approved" : "in_progress") : undefined;
        case "RejectTask":
          return review ? "rejected" : undefined;
        case "RequestChanges":
          return review ? workStatus(m.kind) : undefined;
        case "RetryTask":
          // A composite task whose plan was approved resumes execution; otherwise it plans again.
          if (m.status !== "failed" && m.status !== "cancelled") return undefined;
          return m.kind === "composite" && m.planApproved ? "in_progress" : workStatus(m.kind);
        case "DeleteTask":
          return undefined;
      }
    }

    /** Every call the sequence makes (DeleteTask aside, which always succeeds on a live task). */
    const everyCall = (): Call[] => [
      ...ALL_STATUSES.map((to): Call => ({ rpc: "UpdateTaskStatus", to })),
      { rpc: "ApproveTask" },
      { rpc: "RejectTask" },
      { rpc: "RequestChanges" },
      { rpc: "RetryTask" },
      // Only chosen when it succeeds: a run that is not there cannot be finished, nor refused.
      { rpc: "FinishRun" },
    ];

    function invoke(id: string, call: Call): Promise<unknown> {
      switch (call.rpc) {
        case "UpdateTaskStatus":
          return tasks.updateTaskStatus({ id, status: statusValue(call.to!) });
        case "ApproveTask":
          return tasks.approveTask({ id });
        case "RejectTask":
          return tasks.rejectTask({ id, reason: "random" });
        case "RequestChanges":
          return tasks.requestChanges({ id, feedback: "random feedback" });
        case "RetryTask":
          return tasks.retryTask({ id });
        case "FinishRun":
          return runner(caller(t)).finish(id).then((task) => ({ task }));
        case "DeleteTask":
          return tasks.deleteTask({ id });
      }
    }

    it("keeps every task in a legal state, and each call's outcome agrees with TRANSITIONS", async () => {
      const seed = Number(process.env.TASK_SEQUENCE_SEED ?? Math.floor(Math.random() * 2 ** 31));
      const random = prng(seed);
      const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
      const sf = await fixture("random");
      const live: Model[] = [];
      const gone: string[] = [];
      const add = async (kind: KindName) => {
        const v = await create(kind, sf);
        live.push({ id: v.id, kind, status: v.status, agentTasks: 1, sessions: 1, planApproved: false });
      };
      for (const kind of ["unit", "unit", "composite", "composite"] as KindName[]) await add(kind);

      const STEPS = 150;
      let step = 0;
      let description = "setup";
      const tally = { ok: 0, refused: 0, notFound: 0 };
      try {
        for (step = 0; step < STEPS; step++) {
          const ghost = gone.length > 0 && random() < 0.06;
          const m = ghost ? undefined : pick(live);
          const id = m?.id ?? pick(gone);
          let call: Call;
          // Half the time a call the model expects to succeed (so tasks keep moving), else any call.
          const succeeding = m === undefined ? [] : everyCall().filter((c) => expected(m, c) !== undefined);
          if (succeeding.length > 0 && random() < 0.5) call = pick(succeeding);
          else {
            const r = random();
            if (r < 0.4) call = { rpc: "UpdateTaskStatus", to: pick(ALL_STATUSES) };
            else if (r < 0.52) call = { rpc: "ApproveTask" };
            else if (r < 0.62) call = { rpc: "RejectTask" };
            else if (r < 0.75) call = { rpc: "RequestChanges" };
            else if (r < 0.94) call = { rpc: "RetryTask" };
            else call = { rpc: "DeleteTask" };
          }
          description = `${call.rpc}${"to" in call && call.to ? `(${call.to})` : ""} on ${m ? `${m.kind} ${m.status}` : "a deleted task"} ${id}`;

          if (m === undefined) {
            await expectCode(invoke(id, call), Code.NotFound);
            tally.notFound++;
          } else if (call.rpc === "DeleteTask") {
            await invoke(id, call);
            tally.ok++;
            live.splice(live.indexOf(m), 1);
            gone.push(id);
            await add(random() < 0.5 ? "unit" : "composite");
          } else {
            const to = expected(m, call);
            if (to === undefined) {
              await expectRefused(invoke(id, call), m.status);
              tally.refused++;
            } else {
              // Each move an RPC makes is one TRANSITIONS allows.
              expect(legal(m.kind, m.status, to), `${m.kind} ${m.status} → ${to}`).toBe(true);
              const res = (await invoke(id, call)) as { task?: Task };
              expect(view(res.task).status).toBe(to);
              if (call.rpc === "RequestChanges") {
                m.agentTasks++;
                m.sessions++;
              }
              if (call.rpc === "RetryTask" && to === workStatus(m.kind)) m.sessions++;
              if (call.rpc === "ApproveTask" && m.kind === "composite") m.planApproved = true;
              m.status = to;
              tally.ok++;
            }
          }

          // The invariants, over every task of the workspace.
          const listed = (await tasks.listTasks({ workspaceId: sf.workspaceId, pageSize: 1000 })).tasks.map(view);
          expect(listed.map((v) => v.id).sort()).toEqual(live.map((x) => x.id).sort());
          const counts = await runCounts(listed.map((v) => v.id));
          for (const v of listed) {
            const model = live.find((x) => x.id === v.id)!;
            const c = counts.get(v.id)!;
            expect(v.kind).toBe(model.kind);
            expect(v.status).toBe(model.status);
            expect(statusesOf(v.kind)).toContain(v.status);
            expect(c.agentTasks).toBe(model.agentTasks);
            expect(c.sessions).toBe(model.sessions);
            if (ACTIVE_EXECUTION.includes(v.execution)) {
              expect(v.status).toBe(workStatus(v.kind));
              expect(c.active).toBe(1);
              expect(activeSessions(v)).toHaveLength(1);
            } else {
              expect(v.execution).toBe(ExecutionState.IDLE);
              expect(c.active).toBe(0);
            }
            // Agent work is queued (or held by the runner's worker) exactly when the task waits for it.
            expect(ACTIVE_EXECUTION.includes(v.execution)).toBe(v.status === workStatus(v.kind));
          }
        }
      } catch (error) {
        const message = `randomised sequence failed with seed ${seed} (TASK_SEQUENCE_SEED=${seed} replays it) at step ${step}: ${description}`;
        console.error(message);
        throw new Error(`${message}\n${error instanceof Error ? error.message : String(error)}`, { cause: error });
      }
      // The sequence exercised each outcome.
      expect(tally.ok).toBeGreaterThan(0);
      expect(tally.refused).toBeGreaterThan(0);
    }, 180_000);
  });

  describe("WatchTasks", () => {
    /** A WatchTasks stream read in the background, with waits that end on a message. */
    class Watcher {
      readonly messages: WatchTasksResponse[] = [];
      private readonly abort = new AbortController();
      private readonly waiters = new Set<() => void>();
      private failure: unknown;
      private ended = false;
      readonly finished: Promise<void>;

      constructor(request: { workspaceId: string; cursor?: string }, client: Tasks = tasks) {
        this.finished = (async () => {
          try {
            for await (const message of client.watchTasks(request, { signal: this.abort.signal })) {
              this.messages.push(message);
              this.wake();
            }
          } catch (error) {
            if (!this.abort.signal.aborted) this.failure = error;
          } finally {
            this.ended = true;
            this.wake();
          }
        })();
      }

      get changes(): TaskChange[] {
        return this.messages.flatMap((m) => (m.event.case === "change" ? [m.event.value] : []));
      }

      get keepAlives(): number {
        return this.messages.filter((m) => m.event.case === "keepAlive").length;
      }

      async until(what: string, done: () => boolean): Promise<void> {
        const deadline = Date.now() + WAIT_MS;
        while (!done()) {
          if (this.ended) throw new Error(`the stream ended while waiting for ${what}: ${String(this.failure)}`);
          const left = deadline - Date.now();
          if (left <= 0) throw new Error(`no ${what} within ${WAIT_MS} ms; received ${JSON.stringify(this.summary())}`);
          await new Promise<void>((resolve) => {
            const timer = setTimeout(finish, left);
            const waiters = this.waiters;
            function finish() {
              clearTimeout(timer);
              waiters.delete(finish);
              resolve();
            }
            waiters.add(finish);
          });
        }
      }

      /** Waits until n changes have arrived; returns them all. */
      async changesUpTo(n: number): Promise<TaskChange[]> {
        await this.until(`${n} changes`, () => this.changes.length >= n);
        return this.changes;
      }

      /** Waits for a keep-alive, which comes only once the stream has read what there was and is idle. */
      async idle(): Promise<void> {
        const seen = this.keepAlives;
        await this.until("a keep-alive", () => this.keepAlives > seen);
      }

      summary(): [string, string][] {
        return this.changes.map((c) => [TaskChangeType[c.type], c.taskId]);
      }

      async close(): Promise<void> {
        this.abort.abort();
        await this.finished;
      }

      private wake(): void {
        for (const w of [...this.waiters]) w();
      }
    }

    const watchers: Watcher[] = [];
    const watch = (request: { workspaceId: string; cursor?: string }, client?: Tasks) => {
      const w = new Watcher(request, client);
      watchers.push(w);
      return w;
    };

    afterEach(async () => {
      await Promise.all(watchers.splice(0).map((w) => w.close()));
    });

    const summary = (changes: TaskChange[]) => changes.map((c) => [TaskChangeType[c.type], c.taskId]);

    /** Each change is well formed; cursors are distinct and increase. */
    function checkChanges(changes: TaskChange[]): void {
      const cursors = changes.map((c) => c.cursor);
      expect(new Set(cursors).size).toBe(cursors.length);
      for (const c of changes) {
        expect(c.cursor).not.toBe("");
        expect(c.changeTime).toBeDefined();
        if (c.type === TaskChangeType.DELETED) expect(c.task).toBeUndefined();
      }
      for (let i = 1; i < cursors.length; i++) expect(BigInt(cursors[i]!)).toBeGreaterThan(BigInt(cursors[i - 1]!));
    }

    it("streams CREATED, UPDATED and DELETED in order, each with the task, for this workspace only", async () => {
      const wf = await fixture("watch");
      const other = await fixture("watch other");
      const w = watch({ workspaceId: wf.workspaceId });
      const wOther = watch({ workspaceId: other.workspaceId });
      await Promise.all([w.idle(), wOther.idle()]);

      const u = await createUnit(wf, "Watch me");
      let changes = await w.changesUpTo(1);
      expect(changes[0]!.type).toBe(TaskChangeType.CREATED);
      expect(changes[0]!.taskId).toBe(u.id);
      expect(view(changes[0]!.task)).toEqual(u);

      const o = await createUnit(other, "Elsewhere");
      await tasks.updateTaskStatus({ id: o.id, status: TaskStatus.CANCELLED });

      // A worker claims the run (one change) and reports it succeeded (another).
      const reviewed = await apply(u.id, { rpc: "FinishRun", to: "in_review" });
      changes = await w.changesUpTo(3);
      expect(changes[1]!.type).toBe(TaskChangeType.UPDATED);
      expect(view(changes[2]!.task)).toEqual(reviewed);

      const c = await createComposite(wf, "Plan while watched");
      changes = await w.changesUpTo(4);
      expect(view(changes[3]!.task)).toEqual(c);
      const approved = await apply(u.id, { rpc: "ApproveTask", to: "approved" });
      changes = await w.changesUpTo(5);
      expect(view(changes[4]!.task)).toEqual(approved);
      const pending = await apply(c.id, { rpc: "FinishRun", to: "pending_approval" });
      changes = await w.changesUpTo(7);
      expect(view(changes[6]!.task).status).toBe(pending.status);
      const replanned = await apply(c.id, { rpc: "RequestChanges", to: "planning" });
      changes = await w.changesUpTo(8);
      expect(view(changes[7]!.task)).toEqual(replanned);

      await tasks.deleteTask({ id: o.id });
      await tasks.deleteTask({ id: u.id });
      changes = await w.changesUpTo(9);

      expect(summary(changes)).toEqual([
        ["CREATED", u.id],
        ["UPDATED", u.id],
        ["UPDATED", u.id],
        ["CREATED", c.id],
        ["UPDATED", u.id],
        ["UPDATED", c.id],
        ["UPDATED", c.id],
        ["UPDATED", c.id],
        ["DELETED", u.id],
      ]);
      checkChanges(changes);

      // The other workspace's watcher saw only its own task.
      const others = await wOther.changesUpTo(3);
      expect(summary(others)).toEqual([
        ["CREATED", o.id],
        ["UPDATED", o.id],
        ["DELETED", o.id],
      ]);
      checkChanges(others);
    });

    it("resumes from the last cursor after a disconnect with exactly the missed changes", async () => {
      const wf = await fixture("resume");
      const other = await fixture("resume other");
      const first = watch({ workspaceId: wf.workspaceId });
      await first.idle();
      const u1 = await createUnit(wf, "Before the disconnect");
      const [seen] = await first.changesUpTo(1);
      expect(seen!.taskId).toBe(u1.id);
      await first.close();

      // Missed while disconnected.
      await runner(caller(t)).finish(u1.id);
      const c = await createComposite(wf, "Missed composite");
      await createUnit(other, "Not this workspace");
      await runner(caller(t)).finish(c.id);
      const u2 = await createUnit(wf, "Missed unit");
      await tasks.requestChanges({ id: c.id, feedback: "Smaller steps." });
      await tasks.deleteTask({ id: u1.id });
      // A finished run is two changes: its claim and its report.
      const missed = [
        ["UPDATED", u1.id],
        ["UPDATED", u1.id],
        ["CREATED", c.id],
        ["UPDATED", c.id],
        ["UPDATED", c.id],
        ["CREATED", u2.id],
        ["UPDATED", c.id],
        ["DELETED", u1.id],
      ];

      const second = watch({ workspaceId: wf.workspaceId, cursor: seen!.cursor });
      await second.changesUpTo(missed.length);
      // A change made after reconnecting follows them, with nothing in between.
      await tasks.updateTaskStatus({ id: u2.id, status: TaskStatus.CANCELLED });
      const resumed = await second.changesUpTo(missed.length + 1);
      expect(summary(resumed)).toEqual([...missed, ["UPDATED", u2.id]]);
      checkChanges([seen!, ...resumed]);
      // Changes of tasks that still exist carry them as they are.
      for (const change of resumed) {
        if (change.taskId === c.id) expect(view(change.task).id).toBe(c.id);
        if (change.taskId === u2.id) expect(view(change.task).id).toBe(u2.id);
      }
      expect(view(resumed.at(-1)!.task).status).toBe("cancelled");

      // Resuming from a change in the middle replays what follows it, and only that.
      const third = watch({ workspaceId: wf.workspaceId, cursor: resumed[2]!.cursor });
      const replayed = await third.changesUpTo(resumed.length - 3);
      await third.idle();
      expect(summary(third.changes)).toEqual(summary(resumed.slice(3)));
      expect(replayed.map((x) => x.cursor)).toEqual(resumed.slice(3).map((x) => x.cursor));
    });

    it("starts from now when the cursor is empty", async () => {
      const wf = await fixture("from now");
      const old = await createUnit(wf, "Made before watching");
      await tasks.updateTaskStatus({ id: old.id, status: TaskStatus.CANCELLED });
      const w = watch({ workspaceId: wf.workspaceId, cursor: "" });
      await w.idle();
      const fresh = await createComposite(wf, "Made while watching");
      const changes = await w.changesUpTo(1);
      expect(summary(changes)).toEqual([["CREATED", fresh.id]]);
      await w.idle();
      expect(summary(w.changes)).toEqual([["CREATED", fresh.id]]);
    });

    it("sends keep-alives while idle", async () => {
      const wf = await fixture("keep-alive");
      const w = watch({ workspaceId: wf.workspaceId });
      await w.idle();
      await w.idle();
      expect(w.keepAlives).toBeGreaterThanOrEqual(2);
      expect(w.changes).toEqual([]);
      expect(w.messages.every((m) => m.event.case === "keepAlive")).toBe(true);
    });

    it('replays every change from cursor "0", and from the newest cursor waits for the next change', async () => {
      const wf = await fixture("cursor zero");
      const u = await createUnit(wf, "Made first");
      await tasks.updateTaskStatus({ id: u.id, status: TaskStatus.CANCELLED });
      const all = watch({ workspaceId: wf.workspaceId, cursor: "0" });
      const replayed = await all.changesUpTo(2);
      await all.idle();
      expect(summary(all.changes)).toEqual([
        ["CREATED", u.id],
        ["UPDATED", u.id],
      ]);
      checkChanges(replayed);

      // The newest change's cursor is valid: nothing to replay, and the next change follows.
      const atNewest = watch({ workspaceId: wf.workspaceId, cursor: replayed[1]!.cursor });
      await atNewest.idle();
      expect(atNewest.changes).toEqual([]);
      const next = await createUnit(wf, "Made while watching from the newest");
      expect(summary(await atNewest.changesUpTo(1))).toEqual([["CREATED", next.id]]);

      // "0" on a workspace with no change yet waits too.
      const empty = await fixture("cursor zero, no changes");
      const fromZero = watch({ workspaceId: empty.workspaceId, cursor: "0" });
      await fromZero.idle();
      const first = await createComposite(empty, "The first change here");
      expect(summary(await fromZero.changesUpTo(1))).toEqual([["CREATED", first.id]]);
    });

    it("refuses at once a cursor past the workspace's newest change, naming cursor", async () => {
      /** The call's error, which must come at once: a stream that waits instead fails here. */
      const refusal = (workspaceId: string, cursor: string) =>
        expectInvalid(
          Promise.race([
            drain(tasks.watchTasks({ workspaceId, cursor })),
            new Promise((_, reject) => setTimeout(() => reject(new Error(`cursor ${cursor} was not refused within 5 s`)), 5_000).unref()),
          ]),
          "cursor",
        );
      const wf = await fixture("cursor past");
      const u = await createUnit(wf, "The newest change");
      const w = watch({ workspaceId: wf.workspaceId, cursor: "0" });
      const [created] = await w.changesUpTo(1);
      const newest = BigInt(created!.cursor);

      const err = await refusal(wf.workspaceId, String(newest + 1n));
      expect(err.rawMessage).toContain(`newest change (${newest})`);
      await refusal(wf.workspaceId, "999999999999999");
      // Another workspace's later change is past this one's newest: not a cursor of this stream.
      const other = await fixture("cursor past, elsewhere");
      await createUnit(other, "Newer, in another workspace");
      const o = watch({ workspaceId: other.workspaceId, cursor: "0" });
      const [elsewhere] = await o.changesUpTo(1);
      expect(BigInt(elsewhere!.cursor)).toBeGreaterThan(newest);
      await refusal(wf.workspaceId, elsewhere!.cursor);
      // A workspace with no change has no cursor but "0" (and "").
      const empty = await fixture("cursor past, no changes");
      await refusal(empty.workspaceId, "1");

      // The stream from "0" was not disturbed, and the newest cursor stays valid.
      await tasks.updateTaskStatus({ id: u.id, status: TaskStatus.CANCELLED });
      expect(summary(await w.changesUpTo(2))).toEqual([
        ["CREATED", u.id],
        ["UPDATED", u.id],
      ]);
    });

    it("refuses a malformed cursor or workspace and answers an unknown workspace with NotFound", async () => {
      for (const cursor of ["abc", "-1", "1.5", " 1 2 ", "1".repeat(16), "0x10"]) {
        await expectInvalid(drain(tasks.watchTasks({ workspaceId: fx.workspaceId, cursor })), "cursor");
      }
      await expectInvalid(drain(tasks.watchTasks({ workspaceId: "" })), "workspace_id");
      await expectInvalid(drain(tasks.watchTasks({ workspaceId: "nope", cursor: "x" })), "workspace_id", "cursor");
      const err = await expectCode(drain(tasks.watchTasks({ workspaceId: UNKNOWN_ID })), Code.NotFound);
      expect(err.rawMessage).toContain(UNKNOWN_ID);
    });
  });

  describe("owner isolation", () => {
    let provider: TestProvider;
    let mt: TestServer;
    let aliceUser: User;
    let bobUser: User;

    beforeAll(async () => {
      provider = await startOidcProvider();
      mt = await startMultiUserServer(dialect, provider);
      aliceUser = await signIn(mt, provider, { sub: "alice", email: "alice@example.com", name: "Alice" });
      bobUser = await signIn(mt, provider, { sub: "bob", email: "bob@example.com", name: "Bob" });
    });

    afterAll(async () => {
      await mt?.close();
      await provider?.close();
    });

    it("answers NotFound to bob for alice's tasks, workspace and groups in every TaskService RPC", async () => {
      const alice = aliceUser.client(TaskService);
      const bob = bobUser.client(TaskService);
      const af = await makeFixture(aliceUser, "alice");
      const bf = await makeFixture(bobUser, "bob");

      const unit = view({ task: { case: "unitTask", value: (await alice.createUnitTask({ repositoryGroupId: af.group.id, prompt: "Alice's" })).unitTask! } } as Task);
      const composite = view({
        task: { case: "compositeTask", value: (await alice.createCompositeTask({ repositoryGroupId: af.group.id, prompt: "Alice's plan" })).compositeTask! },
      } as Task);
      await runner(aliceUser).finish(unit.id);
      await runner(aliceUser).finish(composite.id);
      const failed = view({ task: { case: "unitTask", value: (await alice.createUnitTask({ repositoryGroupId: af.group.id, prompt: "Failing" })).unitTask! } } as Task);
      await alice.updateTaskStatus({ id: failed.id, status: TaskStatus.FAILED });
      const before = await Promise.all([unit, composite, failed].map(async (x) => (await alice.getTask({ id: x.id })).task));

      // Bob sees his own workspace fine, and none of alice's tasks in it.
      expect((await bob.listTasks({ workspaceId: bf.workspaceId })).tasks).toEqual([]);

      for (const target of [unit, composite, failed]) {
        const id = target.id;
        const calls: [string, () => Promise<unknown>][] = [
          ["GetTask", () => bob.getTask({ id })],
          ["UpdateTaskStatus", () => bob.updateTaskStatus({ id, status: TaskStatus.CANCELLED })],
          ["ApproveTask", () => bob.approveTask({ id })],
          ["RejectTask", () => bob.rejectTask({ id, reason: "mine now" })],
          ["RequestChanges", () => bob.requestChanges({ id, feedback: "do it my way" })],
          ["RetryTask", () => bob.retryTask({ id })],
          ["DeleteTask", () => bob.deleteTask({ id })],
        ];
        for (const [rpc, call] of calls) {
          const err = await expectCode(call(), Code.NotFound);
          expect(err.rawMessage, rpc).toContain(id);
        }
      }
      await expectCode(bob.listTasks({ workspaceId: af.workspaceId }), Code.NotFound);
      await expectCode(drain(bob.watchTasks({ workspaceId: af.workspaceId })), Code.NotFound);
      await expectCode(bob.createUnitTask({ repositoryGroupId: af.group.id, prompt: "in her group" }), Code.NotFound);
      await expectCode(bob.createCompositeTask({ repositoryGroupId: af.group.id, prompt: "in her group" }), Code.NotFound);

      // Nothing of alice's changed, and bob made nothing.
      const after = await Promise.all([unit, composite, failed].map(async (x) => (await alice.getTask({ id: x.id })).task));
      expect(after).toEqual(before);
      expect((await alice.listTasks({ workspaceId: af.workspaceId })).tasks).toHaveLength(3);
      expect((await bob.listTasks({ workspaceId: bf.workspaceId })).tasks).toEqual([]);
    });
  });
});

describe.each(DIALECTS)("WatchTasks at shutdown on %s", (dialect) => {
  it("ends an open stream cleanly when the server shuts down, and the shutdown does not wait it out", async () => {
    // A long grace period: if the stream did not end on the shutdown, close() would wait it out.
    const t = await startTestServer(dialect, { FOREMAN_STREAM_KEEPALIVE_SECONDS: "1", FOREMAN_SHUTDOWN_TIMEOUT_SECONDS: "600" });
    let closed = false;
    try {
      const workspace = await caller(t).workspace({ name: "shutdown" });
      const messages: string[] = [];
      let started!: () => void;
      const running = new Promise<void>((resolve) => (started = resolve));
      const reading = (async () => {
        for await (const res of t.client(TaskService).watchTasks({ workspaceId: workspace.id })) {
          messages.push(res.event.case ?? "none");
          started();
        }
      })();
      await running;
      await t.close();
      closed = true;
      // The stream ended without an error (a killed stream would reject here).
      await reading;
      expect(messages.length).toBeGreaterThan(0);
    } finally {
      if (!closed) await t.close();
    }
  });
});

describe.each(DIALECTS)("WatchTasks says at once that it is live on %s", (dialect) => {
  it("sends a keep-alive as its first message when there is nothing to replay, long before the keep-alive interval, and a change first when there is", async () => {
    // Keep-alives every 5 minutes: a keep-alive within the test's time is the opening one.
    const t = await startTestServer(dialect, { FOREMAN_STREAM_KEEPALIVE_SECONDS: "300" });
    try {
      const workspace = await caller(t).workspace({ name: "live at once" });
      const first = async (cursor: string) => {
        const controller = new AbortController();
        try {
          for await (const res of t.client(TaskService).watchTasks({ workspaceId: workspace.id, cursor }, { signal: controller.signal })) return res.event.case;
        } finally {
          controller.abort();
        }
        return undefined;
      };
      expect(await first("")).toBe("keepAlive");
      const repository = await caller(t).repository(workspace.id);
      const group = await caller(t).group(workspace.id, [repository.id]);
      await t.client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "Fix the flaky test" });
      // Cursor 0 replays the workspace's changes: the first message is one of them.
      expect(await first("0")).toBe("change");
      // And from now, with nothing new, a keep-alive again.
      expect(await first("")).toBe("keepAlive");
    } finally {
      await t.close();
    }
  });
});

describe.each(DIALECTS)("WatchTasks past the shared feed's buffer on %s", (dialect) => {
  it("delivers every change in order to streams behind the buffer, from the database, with no gap or repeat", async () => {
    const t = await startTestServer(dialect, { FOREMAN_STREAM_KEEPALIVE_SECONDS: "1", FOREMAN_STREAM_POLL_SECONDS: "1" });
    const controllers: AbortController[] = [];
    try {
      const workspace = await caller(t).workspace({ name: "many changes" });
      /** A stream's change cursors as they arrive, and a wait for the count to reach n. */
      const watch = (cursor: string) => {
        const controller = new AbortController();
        controllers.push(controller);
        const cursors: number[] = [];
        let waiter: { n: number; resolve: () => void } | undefined;
        let keepAlive!: () => void;
        const started = new Promise<void>((resolve) => (keepAlive = resolve));
        const done = (async () => {
          try {
            for await (const res of t.client(TaskService).watchTasks({ workspaceId: workspace.id, cursor }, { signal: controller.signal })) {
              if (res.event.case === "keepAlive") keepAlive();
              if (res.event.case !== "change") continue;
              cursors.push(Number(res.event.value.cursor));
              if (waiter !== undefined && cursors.length >= waiter.n) waiter.resolve();
            }
          } catch (error) {
            if (!controller.signal.aborted) throw error;
          }
        })();
        const reach = (n: number) =>
          new Promise<void>((resolve, reject) => {
            if (cursors.length >= n) return resolve();
            waiter = { n, resolve };
            setTimeout(() => reject(new Error(`${cursors.length} of ${n} changes after 60 s`)), 60_000).unref();
          });
        return { cursors, started, reach, done };
      };

      const live = watch("");
      await live.started;
      // More changes at once than the feed keeps (256): written straight to the change log, as
      // another replica would, so only the feed's poll finds them.
      const COUNT = 1100;
      await t.server.db.kysely.transaction().execute(async (trx) => {
        for (let i = 0; i < COUNT; i++) {
          await insertTaskEvent(trx, t.server.db.adapter, { ownerId: LOCAL_USER_ID, workspaceId: workspace.id, taskId: randomUUID(), type: "updated" }, new Date());
        }
      });
      await live.reach(COUNT);
      const late = watch("0");
      await late.reach(COUNT);
      for (const stream of [live, late]) {
        expect(stream.cursors).toHaveLength(COUNT);
        // Strictly increasing: in order, nothing twice.
        expect(stream.cursors.every((c, i) => i === 0 || c > stream.cursors[i - 1]!)).toBe(true);
      }
      expect(late.cursors).toEqual(live.cursors);
    } finally {
      for (const c of controllers) c.abort();
      await t.close();
    }
  }, 120_000);
});
