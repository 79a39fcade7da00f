// The access matrix: every method of every foreman.v1 service, called by four callers — the
// owner of the resources it names (alice), another user (bob), a worker (registered with
// alice's registration token) and an anonymous caller — each answer checked against the table
// below, on both databases. A method without a row fails, so a new RPC cannot escape the matrix.
import type { DescMethod, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { Code, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService, type WorkerRegistrationToken } from "../../gen/foreman/v1/auth_pb.js";
import { AgentType, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { DeliveryMode, RepositoryService, type Repository, type RepositoryGroup } from "../../gen/foreman/v1/repository_pb.js";
import { SecretsService } from "../../gen/foreman/v1/secrets_pb.js";
import { SessionService, TtyInputType } from "../../gen/foreman/v1/session_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { TodoItemStatus, TodoService } from "../../gen/foreman/v1/todo_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { WorkspaceService, type Workspace } from "../../gen/foreman/v1/workspace_pb.js";
import { FOREMAN_FILES } from "../../src/api/routes.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller, registerWorker, signIn, type Caller as Credentialed, type User } from "../helpers/fixtures.js";
import { startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { UNKNOWN_ID, expectCode, expectInvalid } from "../helpers/rpc-errors.js";
import { runner } from "../helpers/runner.js";
import type { TestServer } from "../helpers/server.js";

/** The server's configured worker registration token (48 characters). */
const CONFIGURED_REGISTRATION_TOKEN = "matrix-configured-registration-token-0123456789a";

const SERVICES: DescService[] = [
  TaskService,
  SessionService,
  WorkerService,
  AuthService,
  RepositoryService,
  WorkspaceService,
  TodoService,
  SecretsService,
];

const CALLERS = ["owner", "other", "worker", "anonymous"] as const;
type Caller = (typeof CALLERS)[number];

const OK = "OK";
type Outcome = typeof OK | Code;


interface Fixtures {
  t: TestServer;
  alice: User;
  bob: User;
  /** A worker registered with alice's registration token. */
  workerCredential: string;
  workerId: string;
  /** A worker registered with the server's configured token: every user sees it. */
  poolWorkerId: string;
  workspace: Workspace;
  repository: Repository;
  group: RepositoryGroup;
  registration: { token: WorkerRegistrationToken; secret: string };
  /** Alice's unit task in the fixture group, left in_progress. */
  taskId: string;
  /** Every workspace and registration token alice has, so lists can be checked for them. */
  aliceWorkspaceIds: Set<string>;
  aliceTokenIds: Set<string>;
  credentialOf(caller: Caller): string | undefined;
  client<S extends DescService>(service: S, credential: string | undefined): Client<S>;
  // Fresh resources of alice's for the owner's changing calls, so that the fixtures above
  // stay as they are: only what the other callers try may touch those.
  scratchWorkspace(): Promise<Workspace>;
  scratchRepository(): Promise<Repository>;
  scratchGroup(): Promise<RepositoryGroup>;
  scratchRegistrationToken(): Promise<WorkerRegistrationToken>;
  /** A fresh unit task of alice's, moved through these statuses; returns its id. */
  scratchTask(path: TaskStatus[]): Promise<string>;
  freshWorker(): Promise<string>;
  freshAliceLogin(): Promise<User>;
}

interface Call<I> {
  request: I;
  /** Call with this credential instead of the caller's. */
  as?: string;
}

interface Row<I, O> {
  expect: Record<Caller, Outcome>;
  /** The fields an InvalidArgument answer names. */
  invalid?: string[];
  call(fx: Fixtures, caller: Caller): Call<I> | Promise<Call<I>>;
  /** Checks a successful answer (for streams, the first message). */
  check?(res: O, fx: Fixtures, caller: Caller, call: Call<I>): void | Promise<void>;
}

type Rows<M extends GenServiceMethods> = {
  [K in keyof M]: Row<MessageInitShape<M[K]["input"]>, MessageShape<M[K]["output"]>>;
};

interface Entry {
  service: DescService;
  method: DescMethod;
  row: Row<unknown, unknown>;
}

/** The matrix, keyed "Service/Method". */
const MATRIX = new Map<string, Entry>();

function rows<M extends GenServiceMethods>(service: GenService<M>, table: Rows<M>): void {
  for (const [localName, row] of Object.entries(table) as [string, Row<unknown, unknown>][]) {
    const method = (service as unknown as DescService).methods.find((m) => m.localName === localName);
    if (method === undefined) throw new Error(`${service.name} has no method ${localName}`);
    MATRIX.set(`${service.name}/${method.name}`, { service: service as unknown as DescService, method, row });
  }
}

const { FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated } = Code;

/** A method for signed-in users. */
function users(owner: Outcome, other: Outcome): Record<Caller, Outcome> {
  return { owner, other, worker: PermissionDenied, anonymous: Unauthenticated };
}
/** A WorkerService method. */
function workers(worker: Outcome): Record<Caller, Outcome> {
  return { owner: PermissionDenied, other: PermissionDenied, worker, anonymous: Unauthenticated };
}
/** A public method: the same for everyone. */
function everyone(outcome: Outcome): Record<Caller, Outcome> {
  return { owner: outcome, other: outcome, worker: outcome, anonymous: outcome };
}

let serial = 0;
const unique = (): number => ++serial;
const LEASE = "lease-token-that-names-nothing";

rows(WorkspaceService, {
  createWorkspace: {
    expect: users(OK, OK),
    call: (_fx, caller) => ({ request: { name: `made by ${caller} ${unique()}` } }),
    check: (res, _fx, caller) => expect(res.workspace?.name).toContain(`made by ${caller}`),
  },
  listWorkspaces: {
    expect: users(OK, OK),
    call: () => ({ request: { pageSize: 1000 } }),
    check: (res, fx, caller) => {
      const ids = res.workspaces.map((w) => w.id);
      if (caller === "owner") expect(ids).toContain(fx.workspace.id);
      else expect(ids.filter((id) => fx.aliceWorkspaceIds.has(id))).toEqual([]);
    },
  },
  getWorkspace: {
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { id: fx.workspace.id } }),
    check: (res, fx) => expect(res.workspace).toEqual(fx.workspace),
  },
  updateWorkspace: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => {
      const id = caller === "owner" ? (await fx.scratchWorkspace()).id : fx.workspace.id;
      return { request: { id, name: `renamed by ${caller} ${unique()}`, description: `changed by ${caller}` } };
    },
    check: (res) => expect(res.workspace?.description).toBe("changed by owner"),
  },
  deleteWorkspace: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: { id: caller === "owner" ? (await fx.scratchWorkspace()).id : fx.workspace.id, force: true },
    }),
  },
  setWorkspaceCredentials: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: {
        id: caller === "owner" ? (await fx.scratchWorkspace()).id : fx.workspace.id,
        upstreamCredentials: { kind: { case: "token" as const, value: `workspace-token-of-${caller}` } },
      },
    }),
    check: (res) => expect(res.workspace?.hasUpstreamCredentials).toBe(true),
  },
  clearWorkspaceCredentials: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({ request: { id: caller === "owner" ? (await fx.scratchWorkspace()).id : fx.workspace.id } }),
    check: (res) => expect(res.workspace?.hasUpstreamCredentials).toBe(false),
  },
});

rows(RepositoryService, {
  addRepository: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: {
        workspaceId: caller === "owner" ? (await fx.scratchWorkspace()).id : fx.workspace.id,
        remoteUrl: `https://github.com/${caller}/added-${unique()}.git`,
      },
    }),
    check: (res) => expect(res.repository?.remoteUrl).toMatch(/^https:\/\/github\.com\/owner\/added-\d+\.git$/),
  },
  listRepositories: {
    // Another user's workspace is as unknown as a missing one, for lists in it too.
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { workspaceId: fx.workspace.id, pageSize: 1000 } }),
    check: (res, fx) => expect(res.repositories).toEqual([fx.repository]),
  },
  getRepository: {
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { id: fx.repository.id } }),
    check: (res, fx) => expect(res.repository).toEqual(fx.repository),
  },
  removeRepository: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({ request: { id: caller === "owner" ? (await fx.scratchRepository()).id : fx.repository.id } }),
  },
  setRepositoryCredentials: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: {
        id: caller === "owner" ? (await fx.scratchRepository()).id : fx.repository.id,
        upstreamCredentials: { kind: { case: "token" as const, value: `token-of-${caller}` } },
      },
    }),
    check: (res) => expect(res.repository?.hasUpstreamCredentials).toBe(true),
  },
  clearRepositoryCredentials: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({ request: { id: caller === "owner" ? (await fx.scratchRepository()).id : fx.repository.id } }),
    check: (res) => expect(res.repository?.hasUpstreamCredentials).toBe(false),
  },
  setRepositoryDeliveryMode: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: { id: caller === "owner" ? (await fx.scratchRepository()).id : fx.repository.id, deliveryMode: DeliveryMode.SQUASH },
    }),
    check: (res) => expect(res.repository?.deliveryMode).toBe(DeliveryMode.SQUASH),
  },
  createRepositoryGroup: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => {
      const repository = caller === "owner" ? await fx.scratchRepository() : fx.repository;
      return { request: { workspaceId: repository.workspaceId, name: `group of ${caller}`, repositoryIds: [repository.id] } };
    },
    check: (res) => expect(res.repositoryGroup?.name).toBe("group of owner"),
  },
  listRepositoryGroups: {
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { workspaceId: fx.workspace.id, pageSize: 1000 } }),
    check: (res, fx) => expect(res.repositoryGroups).toEqual([fx.group]),
  },
  updateRepositoryGroup: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: { id: caller === "owner" ? (await fx.scratchGroup()).id : fx.group.id, name: `renamed by ${caller}` },
    }),
    check: (res) => expect(res.repositoryGroup?.name).toBe("renamed by owner"),
  },
  deleteRepositoryGroup: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({ request: { id: caller === "owner" ? (await fx.scratchGroup()).id : fx.group.id } }),
  },
});

rows(AuthService, {
  getLoginUrl: { expect: everyone(InvalidArgument), invalid: ["redirect_uri"], call: () => ({ request: {} }) },
  handleCallback: { expect: everyone(InvalidArgument), invalid: ["code", "redirect_uri", "state"], call: () => ({ request: {} }) },
  refreshToken: { expect: everyone(InvalidArgument), invalid: ["refresh_token"], call: () => ({ request: {} }) },
  getCurrentUser: {
    expect: users(OK, OK),
    call: () => ({ request: {} }),
    check: (res, fx, caller) => expect(res.user?.id).toBe(caller === "owner" ? fx.alice.id : fx.bob.id),
  },
  logout: {
    // Another user's refresh token is as unknown as a made-up one (see logins.logout).
    expect: users(OK, InvalidArgument),
    invalid: ["refresh_token"],
    call: async (fx, caller) => {
      if (caller !== "owner") return { request: { refreshToken: fx.alice.refreshToken } };
      // Logging out the fixture login would end alice's access token; end a login of its own.
      const fresh = await fx.freshAliceLogin();
      return { request: { refreshToken: fresh.refreshToken }, as: fresh.accessToken };
    },
    check: async (_res, fx, _caller, call) => {
      await expectCode(fx.client(AuthService, call.as).getCurrentUser({}), Unauthenticated);
    },
  },
  createWorkerRegistrationToken: {
    expect: users(OK, OK),
    call: (_fx, caller) => ({ request: { name: `made by ${caller}` } }),
    check: (res) => expect(res.secret).toMatch(/^fwr_/),
  },
  listWorkerRegistrationTokens: {
    expect: users(OK, OK),
    call: () => ({ request: { pageSize: 1000 } }),
    check: (res, fx, caller) => {
      const ids = res.tokens.map((token) => token.id);
      if (caller === "owner") expect(ids).toContain(fx.registration.token.id);
      else expect(ids.filter((id) => fx.aliceTokenIds.has(id))).toEqual([]);
    },
  },
  revokeWorkerRegistrationToken: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: { id: caller === "owner" ? (await fx.scratchRegistrationToken()).id : fx.registration.token.id },
    }),
  },
  listWorkers: {
    // Alice sees her workers and the pool's; bob sees the pool's, and none of alice's.
    expect: users(OK, OK),
    call: () => ({ request: { pageSize: 1000, includeUnregistered: true } }),
    check: (res, fx, caller) => {
      const ids = res.workers.map((w) => w.id);
      expect(ids).toContain(fx.poolWorkerId);
      const self = caller === "owner" ? fx.alice.id : fx.bob.id;
      expect(res.workers.filter((w) => !w.servesEveryUser && w.ownerId !== self)).toEqual([]);
      if (caller === "owner") expect(ids).toContain(fx.workerId);
      else expect(ids).not.toContain(fx.workerId);
    },
  },
});

rows(WorkerService, {
  registerWorker: {
    // The registration token in the body is the credential: a user's bearer is refused before it
    // is looked at, a worker's bearer lets it through (it is the worker's previous identity,
    // which gets its id back and a new credential: so a fresh worker, not the shared one), and
    // without either there is none.
    expect: { owner: PermissionDenied, other: PermissionDenied, worker: OK, anonymous: Unauthenticated },
    call: async (fx, caller) => ({
      request: { registrationToken: caller === "anonymous" ? "" : fx.registration.secret, name: `registered as ${caller}` },
      ...(caller === "worker" ? { as: await fx.freshWorker() } : {}),
    }),
    check: (res) => {
      expect(res.workerToken).toMatch(/^fwk_/);
      expect(res.heartbeatIntervalSeconds).toBeGreaterThan(0);
    },
  },
  heartbeat: {
    expect: workers(OK),
    call: () => ({ request: { leases: [{ sessionId: UNKNOWN_ID, leaseToken: LEASE }] } }),
    check: (res) => expect(res.lostSessionIds).toEqual([UNKNOWN_ID]),
  },
  unregisterWorker: {
    expect: workers(OK),
    // Unregistering the shared worker would end its credential for the other cells.
    call: async (fx, caller) => (caller === "worker" ? { request: {}, as: await fx.freshWorker() } : { request: {} }),
    check: async (_res, fx, _caller, call) => {
      await expectCode(fx.client(WorkerService, call.as).heartbeat({}), Unauthenticated);
    },
  },
  getTask: {
    expect: workers(OK),
    call: () => ({ request: { pollId: "poll-1", waitSeconds: 0 } }),
    check: (res) => expect(res.commands).toEqual([]),
  },
  reportStatus: {
    expect: workers(NotFound),
    call: () => ({ request: { sessionId: UNKNOWN_ID, leaseToken: LEASE, state: SessionState.RUNNING } }),
  },
  getSecrets: { expect: workers(NotFound), call: () => ({ request: { sessionId: UNKNOWN_ID, leaseToken: LEASE } }) },
  appendLogs: { expect: workers(NotFound), call: () => ({ request: { sessionId: UNKNOWN_ID, leaseToken: LEASE, batches: [] } }) },
  createTtyInputRequest: {
    expect: workers(NotFound),
    call: () => ({
      request: { sessionId: UNKNOWN_ID, leaseToken: LEASE, prompt: "Go on?", inputType: TtyInputType.CONFIRM, clientRequestId: "r1" },
    }),
  },
  receiveCommands: {
    expect: workers(OK),
    call: () => ({ request: {} }),
    // The stream says at once that it is live.
    check: (res) => expect(res.event.case).toBe("keepAlive"),
  },
  // An id the worker does not have changes nothing.
  acknowledgeCommands: { expect: workers(OK), call: () => ({ request: { commandIds: [UNKNOWN_ID] } }) },
});

rows(TaskService, {
  createUnitTask: {
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { repositoryGroupId: fx.group.id, prompt: "Fix the build", agentType: AgentType.CLAUDE_CODE } }),
    check: (res, fx) => expect(res.unitTask?.repositoryGroupId).toBe(fx.group.id),
  },
  createCompositeTask: {
    expect: users(OK, NotFound),
    call: (fx) => ({
      request: {
        repositoryGroupId: fx.group.id,
        prompt: "Split the service",
        planningAgentType: AgentType.CLAUDE_CODE,
        executionAgentType: AgentType.CODEX,
      },
    }),
    check: (res) => expect(res.compositeTask?.status).toBe(TaskStatus.PLANNING),
  },
  getTask: {
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { id: fx.taskId } }),
    check: (res, fx) => expect(res.task?.task.value?.id).toBe(fx.taskId),
  },
  listTasks: {
    // Another user's workspace is as unknown as a missing one.
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { workspaceId: fx.workspace.id, pageSize: 1000 } }),
    check: (res, fx) => expect(res.tasks.map((task) => task.task.value?.id)).toContain(fx.taskId),
  },
  updateTaskStatus: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: { id: caller === "owner" ? await fx.scratchTask([]) : fx.taskId, status: TaskStatus.CANCELLED },
    }),
    check: (res) => expect(res.task?.task.value?.status).toBe(TaskStatus.CANCELLED),
  },
  deleteTask: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({ request: { id: caller === "owner" ? await fx.scratchTask([]) : fx.taskId } }),
  },
  retryTask: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({ request: { id: caller === "owner" ? await fx.scratchTask([TaskStatus.FAILED]) : fx.taskId } }),
    check: (res) => expect(res.task?.task.value?.status).toBe(TaskStatus.IN_PROGRESS),
  },
  approveTask: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({ request: { id: caller === "owner" ? await fx.scratchTask([TaskStatus.IN_REVIEW]) : fx.taskId } }),
    check: (res) => expect(res.task?.task.value?.status).toBe(TaskStatus.APPROVED),
  },
  rejectTask: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: { id: caller === "owner" ? await fx.scratchTask([TaskStatus.IN_REVIEW]) : fx.taskId, reason: "not needed" },
    }),
    check: (res) => expect(res.task?.task.value?.status).toBe(TaskStatus.REJECTED),
  },
  requestChanges: {
    expect: users(OK, NotFound),
    call: async (fx, caller) => ({
      request: { id: caller === "owner" ? await fx.scratchTask([TaskStatus.IN_REVIEW]) : fx.taskId, feedback: "add tests" },
    }),
    check: (res) => expect(res.task?.task.value?.status).toBe(TaskStatus.IN_PROGRESS),
  },
  watchTasks: {
    expect: users(OK, NotFound),
    // Cursor 0 replays the workspace's changes, so the first message is a change, not a keep-alive.
    call: (fx) => ({ request: { workspaceId: fx.workspace.id, cursor: "0" } }),
    check: (res) => expect(res.event.case).toBe("change"),
  },
  // This server contacts no remotes, so the owner's task has no base commit recorded: no diff.
  getTaskDiff: { expect: users(FailedPrecondition, NotFound), call: (fx) => ({ request: { id: fx.taskId } }) },
});

rows(SessionService, {
  getLog: { expect: users(NotFound, NotFound), call: () => ({ request: { sessionId: UNKNOWN_ID } }) },
  streamLog: { expect: users(NotFound, NotFound), call: () => ({ request: { sessionId: UNKNOWN_ID } }) },
  stopSession: { expect: users(NotFound, NotFound), call: () => ({ request: { sessionId: UNKNOWN_ID, reason: "enough" } }) },
  submitTtyInput: { expect: users(NotFound, NotFound), call: () => ({ request: { requestId: UNKNOWN_ID, response: "yes" } }) },
  listTtyInputRequests: {
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { taskId: fx.taskId } }),
    check: (res) => expect(res.requests).toEqual([]),
  },
});

rows(TodoService, {
  listTodoItems: {
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { workspaceId: fx.workspace.id, repositoryId: fx.repository.id } }),
    check: (res) => expect(res.items).toEqual([]),
  },
  // Items come only from signed webhook deliveries (test/integration/todo-service.test.ts checks
  // another user's items); here an unknown id is NotFound for every user.
  getTodoItem: { expect: users(NotFound, NotFound), call: () => ({ request: { id: UNKNOWN_ID } }) },
  updateTodoItemStatus: {
    expect: users(NotFound, NotFound),
    call: () => ({ request: { id: UNKNOWN_ID, status: TodoItemStatus.DONE } }),
  },
  dismissTodoItem: { expect: users(NotFound, NotFound), call: () => ({ request: { id: UNKNOWN_ID } }) },
});

rows(SecretsService, {
  sendSecrets: {
    expect: users(OK, NotFound),
    call: (fx) => ({ request: { taskId: fx.taskId, secrets: { API_KEY: "s3cret" }, ttlSeconds: 60 } }),
    check: (res) => expect(res.names).toEqual(["API_KEY"]),
  },
  clearSecrets: { expect: users(OK, NotFound), call: (fx) => ({ request: { taskId: fx.taskId } }) },
});

/** Every method of every service, by "Service/Method". */
const METHODS = SERVICES.flatMap((service) =>
  service.methods.map((method) => ({ key: `${service.name}/${method.name}`, service, method })),
);

const CELLS = METHODS.flatMap(({ key, service, method }) =>
  CALLERS.map((caller) => {
    const outcome = MATRIX.get(key)?.row.expect[caller];
    return { key, service, method, caller, expected: outcome === undefined ? "(no row)" : outcome === OK ? OK : Code[outcome] };
  }),
);

/** Calls a method generically: a unary call's answer, or a server stream's first message. */
async function invoke(client: Client<DescService>, method: DescMethod, request: unknown): Promise<unknown> {
  const fn = (client as unknown as Record<string, (req: unknown) => unknown>)[method.localName]!;
  switch (method.methodKind) {
    case "unary":
      return await fn(request);
    case "server_streaming":
      // Leaving the loop ends the stream.
      for await (const message of fn(request) as AsyncIterable<unknown>) return message;
      return undefined;
    default:
      throw new Error(`the access matrix cannot call ${method.methodKind} methods yet (${method.name})`);
  }
}

describe("the access matrix table", () => {
  it("lists every foreman.v1 service the server answers", () => {
    const declared = FOREMAN_FILES.flatMap((file) => file.services.map((s) => s.typeName)).sort();
    expect(SERVICES.map((s) => s.typeName).sort()).toEqual(declared);
  });

  it("has a row for every method of every service, and no row for a method that does not exist", () => {
    const methods = METHODS.map((m) => m.key).sort();
    expect(methods.filter((key) => !MATRIX.has(key))).toEqual([]);
    expect([...MATRIX.keys()].sort()).toEqual(methods);
  });
});

describe.each(DIALECTS)("access matrix on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  let fx: Fixtures;

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startMultiUserServer(dialect, provider, { FOREMAN_WORKER_REGISTRATION_TOKEN: CONFIGURED_REGISTRATION_TOKEN });
    const alice = await signIn(t, provider, "alice");
    const bob = await signIn(t, provider, "bob");

    // One caller per credential, each with one client per service.
    const callers = new Map<string | undefined, Credentialed>();
    const client = <S extends DescService>(service: S, credential: string | undefined): Client<S> => {
      let c = callers.get(credential);
      if (c === undefined) callers.set(credential, (c = caller(t, credential)));
      return c.client(service);
    };

    // Alice's resources are noted, so that lists can be checked for them.
    const aliceWorkspaceIds = new Set<string>();
    const aliceTokenIds = new Set<string>();
    const createWorkspace = async (name: string): Promise<Workspace> => {
      const workspace = await alice.workspace({ name, description: "alice's" });
      aliceWorkspaceIds.add(workspace.id);
      return workspace;
    };
    const createGroup = (repository: Repository, name: string): Promise<RepositoryGroup> =>
      alice.group(repository.workspaceId, [repository.id], name);
    const createRegistrationToken = async (name: string) => {
      const made = await alice.registrationToken(name);
      aliceTokenIds.add(made.token.id);
      return made;
    };

    const workspace = await createWorkspace("Alice's workspace");
    const repository = await alice.repository(workspace.id, "https://github.com/alice/app.git");
    const group = await createGroup(repository, "app");
    const registration = await createRegistrationToken("alice's laptop");
    const freshWorker = async (): Promise<string> =>
      (await registerWorker(t, registration.secret, { name: `worker ${unique()}` })).workerToken;
    const shared = await registerWorker(t, registration.secret, { name: "alice's shared worker" });
    const workerCredential = shared.workerToken;
    const poolWorkerId = (await registerWorker(t, CONFIGURED_REGISTRATION_TOKEN, { name: "pool worker" })).workerId;
    const createTask = async (prompt: string): Promise<string> =>
      (await alice.client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt })).unitTask!.id;
    const taskId = await createTask("Alice's task");
    const scratchRepository = async (): Promise<Repository> => {
      const ws = await createWorkspace(`scratch ${unique()}`);
      return alice.repository(ws.id, `https://github.com/alice/scratch-${unique()}.git`);
    };

    fx = {
      t,
      alice,
      bob,
      workerCredential,
      workerId: shared.workerId,
      poolWorkerId,
      workspace,
      repository,
      group,
      registration,
      taskId,
      aliceWorkspaceIds,
      aliceTokenIds,
      credentialOf: (caller) =>
        ({ owner: alice.accessToken, other: bob.accessToken, worker: workerCredential, anonymous: undefined })[caller],
      client,
      scratchWorkspace: () => createWorkspace(`scratch ${unique()}`),
      scratchRepository,
      scratchGroup: async () => createGroup(await scratchRepository(), `scratch ${unique()}`),
      scratchRegistrationToken: async () => (await createRegistrationToken(`scratch ${unique()}`)).token,
      scratchTask: async (path) => {
        const id = await createTask(`scratch ${unique()}`);
        // In review only by a run that finished: a worker of alice's runs it.
        for (const status of path) {
          if (status === TaskStatus.IN_REVIEW) await runner(alice).finish(id);
          else await alice.client(TaskService).updateTaskStatus({ id, status });
        }
        return id;
      },
      freshWorker,
      freshAliceLogin: () => signIn(t, provider, "alice"),
    };
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  const rowsOfCells = CELLS.map((cell) => [cell.key, cell.caller, cell.expected, cell] as const);
  it.each(rowsOfCells)("%s as %s: %s", async (_key, _caller, _expected, { key, method, service, caller }) => {
    const entry = MATRIX.get(key);
    if (entry === undefined) throw new Error(`${key} has no row in the access matrix`);
    const { row } = entry;
    const expected = row.expect[caller];
    const call = await row.call(fx, caller);
    // The table's requests are checked by the compiler only loosely: no field may be misspelled.
    const fields = new Set(method.input.members.map((m) => m.localName));
    expect(Object.keys(call.request as object).filter((name) => !fields.has(name))).toEqual([]);
    const answer = invoke(fx.client(service, call.as ?? fx.credentialOf(caller)), method, call.request);
    if (expected === OK) {
      await row.check?.(await answer, fx, caller, call);
    } else if (expected === Code.InvalidArgument && row.invalid !== undefined) {
      await expectInvalid(answer, ...row.invalid);
    } else {
      await expectCode(answer, expected);
    }
  });

  it("leaves alice's workspace, repository, group, registration token and worker as they were", async () => {
    const asAlice = <S extends DescService>(service: S) => fx.client(service, fx.alice.accessToken);
    expect((await asAlice(WorkspaceService).getWorkspace({ id: fx.workspace.id })).workspace).toEqual(fx.workspace);
    expect((await asAlice(RepositoryService).getRepository({ id: fx.repository.id })).repository).toEqual(fx.repository);
    const repositories = await asAlice(RepositoryService).listRepositories({ workspaceId: fx.workspace.id, pageSize: 1000 });
    expect(repositories.repositories).toEqual([fx.repository]);
    const groups = await asAlice(RepositoryService).listRepositoryGroups({ workspaceId: fx.workspace.id, pageSize: 1000 });
    expect(groups.repositoryGroups).toEqual([fx.group]);

    const { tokens } = await asAlice(AuthService).listWorkerRegistrationTokens({ pageSize: 1000 });
    const token = tokens.find((tk) => tk.id === fx.registration.token.id);
    expect(token?.revokeTime).toBeUndefined();
    expect(token?.name).toBe(fx.registration.token.name);
    // The token still registers workers, and the shared worker still passes authentication.
    const again = await fx.client(WorkerService, undefined).registerWorker({ registrationToken: fx.registration.secret, name: "after" });
    expect(again.workerToken).toMatch(/^fwk_/);
    await fx.client(WorkerService, fx.workerCredential).heartbeat({});
    const { task } = await asAlice(TaskService).getTask({ id: fx.taskId });
    expect(task?.task.value?.status).toBe(TaskStatus.IN_PROGRESS);
    expect(task?.task.value?.title).toBe("Alice's task");
    // Bob's Logout with alice's refresh token ended nothing of hers.
    expect((await asAlice(AuthService).getCurrentUser({})).user?.id).toBe(fx.alice.id);
  });
});
