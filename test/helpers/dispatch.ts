// What dispatch tests build and call: users with a group to file tasks against, workers
// registered with a user's (or the configured) registration token, claims through GetTask and
// reports through ReportStatus, all over HTTP with the generated clients. Each test works as
// its own user, so that one test's queued work is no other's. Every lease token handed out is
// kept, for a test to look for in the database and the logs.
import { randomUUID } from "node:crypto";
import { Code, type Client } from "@connectrpc/connect";
import { expect } from "vitest";
import { AgentType, SessionState } from "../../gen/foreman/v1/common_pb.js";
import type { RepositoryGroup } from "../../gen/foreman/v1/repository_pb.js";
import { TaskService, type AgentSession, type Task, type UnitTask } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService, type Assignment, type WorkerCommand, type WorkerServiceGetTaskResponse } from "../../gen/foreman/v1/worker_pb.js";
import { registerWorker, signIn, type RegisterInit, type User } from "./fixtures.js";
import { clientWith, type TestProvider } from "./oidc.js";
import { expectError } from "./rpc-errors.js";
import { activeSession } from "./runner.js";
import type { TestServer } from "./server.js";

export interface TestWorker {
  id: string;
  /** Its credential (RegisterWorker's worker_token). */
  token: string;
  client: Client<typeof WorkerService>;
}

/** A worker's open ReceiveCommands stream: what it has received, and a wait for the next command. */
export function openCommands(w: TestWorker, timeoutMs = 20_000) {
  const controller = new AbortController();
  const received: WorkerCommand[] = [];
  let keepAlives = 0;
  let waiting: { count: number; resolve: () => void } | undefined;
  let opened!: () => void;
  const live = new Promise<void>((resolve) => (opened = resolve));
  const reading = (async () => {
    try {
      for await (const res of w.client.receiveCommands({}, { signal: controller.signal })) {
        if (res.event.case === "keepAlive") {
          keepAlives++;
          opened();
        } else if (res.event.case === "command") {
          received.push(res.event.value);
        }
        if (waiting !== undefined && received.length >= waiting.count) waiting.resolve();
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    }
  })();
  return {
    received,
    keepAlives: () => keepAlives,
    /** Resolves once the stream said it is live (its first keep-alive). */
    live,
    /** Resolves when `count` commands in all have arrived. */
    until(count: number): Promise<WorkerCommand[]> {
      if (received.length >= count) return Promise.resolve(received);
      return new Promise((resolve, reject) => {
        waiting = { count, resolve: () => resolve(received) };
        setTimeout(() => reject(new Error(`${received.length} of ${count} commands within ${timeoutMs} ms`)), timeoutMs).unref();
      });
    },
    async close() {
      controller.abort();
      await reading;
    },
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise with whether it has settled yet. */
export function tracked<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  void promise.then(
    () => (done = true),
    () => (done = true),
  );
  return { promise, settled: () => done };
}

/** The task as a unit task, checked to be one. */
export function unit(task: Task | undefined): UnitTask {
  expect(task?.task.case).toBe("unitTask");
  return task!.task.value as UnitTask;
}

/** Expects the call refused as a stale lease: FailedPrecondition, LEASE_LOST, and the message if given. */
export const expectLeaseLost = (call: Promise<unknown>, message?: string | RegExp) =>
  expectError(call, { code: Code.FailedPrecondition, reason: "LEASE_LOST", ...(message === undefined ? {} : { message }) });

export interface DispatchFixtureOptions {
  /** The server the fixtures call (a getter: it is started in beforeAll). */
  server: () => TestServer;
  provider: () => TestProvider;
  /** Users are signed in as `<userPrefix>-<n>-<random>`. */
  userPrefix: string;
  /** The name workers register with unless a test names one. */
  workerName: string;
  /** The server's FOREMAN_WORKER_REGISTRATION_TOKEN, for workers that serve every user. */
  configuredToken?: string;
}

export interface TaskInit {
  agentType?: AgentType;
  agentModel?: string;
  prompt?: string;
  /** Held from before the run is queued (CreateUnitTask's secrets). */
  secrets?: Record<string, string>;
  secretsTtlSeconds?: number;
}

export interface ReportMore {
  errorMessage?: string;
  exitCode?: number;
  headCommit?: string;
}

export type DispatchFixtures = ReturnType<typeof dispatchFixtures>;

export function dispatchFixtures(options: DispatchFixtureOptions) {
  const leaseTokens = new Set<string>();
  const groups = new Map<string, RepositoryGroup>();
  let users = 0;

  /** A new user, with a workspace and a group of one repository to file tasks against. */
  async function newUser(): Promise<User> {
    const user = await signIn(options.server(), options.provider(), `${options.userPrefix}-${++users}-${randomUUID().slice(0, 6)}`);
    const { group } = await user.groupOfOne();
    groups.set(user.id, group);
    return user;
  }

  /** A worker of the user's (a registration token of theirs), or of the configured token; on `on` (another replica) if given. */
  async function newWorker(who: User | "configured", init: RegisterInit = {}, on: TestServer = options.server()): Promise<TestWorker> {
    let secret: string;
    if (who === "configured") {
      if (options.configuredToken === undefined) throw new Error("these fixtures have no configured registration token");
      secret = options.configuredToken;
    } else {
      secret = (await who.registrationToken()).secret;
    }
    const res = await registerWorker(on, secret, { name: options.workerName, ...init });
    return { id: res.workerId, token: res.workerToken, client: clientWith(on, WorkerService, res.workerToken) };
  }

  /** A unit task of the user's against their group ("Fix the flaky test" unless init says otherwise). */
  async function createTask(user: User, init: TaskInit = {}): Promise<UnitTask> {
    const { unitTask } = await user.client(TaskService).createUnitTask({ repositoryGroupId: groups.get(user.id)!.id, prompt: "Fix the flaky test", ...init });
    return unitTask!;
  }

  const getTask = async (user: User, id: string): Promise<Task | undefined> => (await user.client(TaskService).getTask({ id })).task;
  const getUnit = async (user: User, id: string): Promise<UnitTask> => unit(await getTask(user, id));
  /** The task's queued or held session. */
  const sessionOf = async (user: User, id: string): Promise<AgentSession> => activeSession(await getTask(user, id))!;
  /** Every session of every run of the unit task, oldest run first. */
  const sessionsOf = async (user: User, id: string): Promise<AgentSession[]> => (await getUnit(user, id)).agentTasks.flatMap((a) => a.sessions);

  function poll(w: TestWorker, waitSeconds = 0, pollId: string = randomUUID(), signal?: AbortSignal): Promise<WorkerServiceGetTaskResponse> {
    return w.client.getTask({ pollId, waitSeconds }, signal === undefined ? {} : { signal }).then((res) => {
      if (res.assignment?.lease) leaseTokens.add(res.assignment.lease.leaseToken);
      return res;
    });
  }

  /** A poll that must return an assignment. */
  async function claim(w: TestWorker, waitSeconds = 0): Promise<Assignment> {
    const { assignment } = await poll(w, waitSeconds);
    expect(assignment, "an assignment").toBeDefined();
    return assignment!;
  }

  const report = (w: TestWorker, a: Assignment, state: SessionState, more: ReportMore = {}) =>
    w.client.reportStatus({ sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken, state, errorMessage: "", headCommit: "", ...more });

  return { leaseTokens, groups, newUser, newWorker, createTask, getTask, getUnit, sessionOf, sessionsOf, poll, claim, report };
}
