// Two servers on one PostgreSQL database, as replicas behind a load balancer: no replica holds
// state another needs. A change made through one reaches a WatchTasks stream on the other (by
// the poll backstop), and a race between replicas still has exactly one winner.
import { Code } from "@connectrpc/connect";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskChangeType, TaskService, type TaskChange } from "../../gen/foreman/v1/task_pb.js";
import { createTestDatabase, runsOn, type TestDatabase } from "../helpers/databases.js";
import { caller, signIn } from "../helpers/fixtures.js";
import { clientWith, movableClock, multiUserEnv, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { AuthService, type TokenSet } from "../../gen/foreman/v1/auth_pb.js";
import { insertTaskEvent, latestTaskEventId } from "../../src/store/task-events.js";
import { LOCAL_USER_ID } from "../../src/model/users.js";
import { UNKNOWN_ID, expectCode } from "../helpers/rpc-errors.js";
import { runner } from "../helpers/runner.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const WAIT_MS = 20_000;

describe.runIf(runsOn("postgres"))("two replicas on one PostgreSQL database", () => {
  let database: TestDatabase;
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    database = await createTestDatabase("postgres");
    // Both start at once: migrations are locked, so they run once.
    // A poll far longer than the tests wait: a change reaching the other replica proves NOTIFY woke it.
    const env = { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_STREAM_KEEPALIVE_SECONDS: "300" };
    [a, b] = await Promise.all([startTestServer("postgres", env, database), startTestServer("postgres", env, database)]);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await database?.drop();
  });

  /** A new workspace, made on A, with a group of one repository. */
  async function group(): Promise<{ workspaceId: string; groupId: string }> {
    const { workspace, group: made } = await caller(a).groupOfOne();
    return { workspaceId: workspace.id, groupId: made.id };
  }

  it("shows a workspace created on one replica on the other", async () => {
    const { workspaceId } = await group();
    expect((await b.workspaces.getWorkspace({ id: workspaceId })).workspace?.id).toBe(workspaceId);
  });

  /** A WatchTasks stream on B from the start of the workspace; next() resolves on the next change. */
  function watchOnB(workspaceId: string) {
    const controller = new AbortController();
    const changes: TaskChange[] = [];
    let arrived: (() => void) | undefined;
    const next = () =>
      new Promise<void>((resolve, reject) => {
        arrived = resolve;
        setTimeout(() => reject(new Error("no change within 20 s")), WAIT_MS).unref();
      });
    const reading = (async () => {
      try {
        for await (const res of b.client(TaskService).watchTasks({ workspaceId, cursor: "0" }, { signal: controller.signal })) {
          if (res.event.case === "change") {
            changes.push(res.event.value);
            arrived?.();
          }
        }
      } catch (error) {
        if (!controller.signal.aborted) throw error;
      }
    })();
    return {
      changes,
      next,
      async stop() {
        controller.abort();
        await reading;
      },
    };
  }

  it("streams a change made through one replica to a watcher on the other, woken by NOTIFY", async () => {
    const { workspaceId, groupId } = await group();
    const watch = watchOnB(workspaceId);
    try {
      // A change on B itself first: once it has arrived, the stream has caught up and waits.
      let arrival = watch.next();
      const local = (await b.client(TaskService).createUnitTask({ repositoryGroupId: groupId, prompt: "Made on replica B" })).unitTask!;
      await arrival;
      // Then one on A: with keep-alives and polls far off, only a NOTIFY can wake B's stream now.
      arrival = watch.next();
      const remote = (await a.client(TaskService).createUnitTask({ repositoryGroupId: groupId, prompt: "Made on replica A" })).unitTask!;
      await arrival;
      expect(watch.changes.map((c) => [c.type, c.taskId])).toEqual([
        [TaskChangeType.CREATED, local.id],
        [TaskChangeType.CREATED, remote.id],
      ]);
    } finally {
      await watch.stop();
    }
  });

  it("reopens a LISTEN connection the database dropped, and the stream on it still hears of changes", async () => {
    const { workspaceId, groupId } = await group();
    const watch = watchOnB(workspaceId);
    try {
      let arrival = watch.next();
      await b.client(TaskService).createUnitTask({ repositoryGroupId: groupId, prompt: "Before the drop" });
      await arrival;
      arrival = watch.next();
      // Drop every LISTEN connection of this database (A's and B's), as a failover would.
      const killed = await sql<{ pid: number }>`
        SELECT pg_terminate_backend(pid) AS pid FROM pg_stat_activity
        WHERE datname = current_database() AND query LIKE 'LISTEN%'`.execute(b.server.db.kysely);
      expect(killed.rows.length).toBeGreaterThanOrEqual(2);
      // Changes made until the connection is back are caught by the wake-up on reconnecting,
      // those after it by NOTIFY again.
      const remote = (await a.client(TaskService).createUnitTask({ repositoryGroupId: groupId, prompt: "After the drop" })).unitTask!;
      await arrival;
      expect(watch.changes.at(-1)?.taskId).toBe(remote.id);
    } finally {
      await watch.stop();
    }
  });

  it("starts a watch from now after its own workspace's newest committed change, not another workspace's", async () => {
    const w = await group();
    const x = await group();
    const db = a.server.db.kysely;
    await a.client(TaskService).createUnitTask({ repositoryGroupId: w.groupId, prompt: "Committed in W" });
    const committedInW = await latestTaskEventId(db, w.workspaceId);
    // A change in W in flight (holding W's lock, as every task change does), while a later one in X commits.
    const inFlight = await db.startTransaction().execute();
    try {
      await insertTaskEvent(inFlight, a.server.db.adapter, { ownerId: LOCAL_USER_ID, workspaceId: w.workspaceId, taskId: UNKNOWN_ID, type: "updated" }, new Date());
      await b.client(TaskService).createUnitTask({ repositoryGroupId: x.groupId, prompt: "Committed in X" });
      expect(await latestTaskEventId(db, x.workspaceId)).toBeGreaterThan(committedInW);
      // A watch of W starting now must begin before W's change in flight, which commits later.
      expect(await latestTaskEventId(db, w.workspaceId)).toBe(committedInW);
    } finally {
      await inFlight.commit().execute();
    }
    expect(await latestTaskEventId(db, w.workspaceId)).toBeGreaterThan(committedInW);
  });

  it("lets exactly one of two replicas approve a task", async () => {
    const { groupId } = await group();
    const task = (await a.client(TaskService).createUnitTask({ repositoryGroupId: groupId, prompt: "Race" })).unitTask!;
    // Its run finishes through B (claimed and reported there), so the task is in review.
    await runner(caller(b)).finish(task.id);
    const results = await Promise.allSettled([
      a.client(TaskService).approveTask({ id: task.id }),
      b.client(TaskService).approveTask({ id: task.id }),
      a.client(TaskService).approveTask({ id: task.id }),
      b.client(TaskService).approveTask({ id: task.id }),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results) if (r.status === "rejected") await expectCode(Promise.reject(r.reason), Code.FailedPrecondition);
  });
});

describe.runIf(runsOn("postgres"))("two multi-user replicas on one PostgreSQL database", () => {
  let database: TestDatabase;
  let provider: TestProvider;
  let a: TestServer;
  let b: TestServer;
  const clock = movableClock();

  beforeAll(async () => {
    database = await createTestDatabase("postgres");
    provider = await startOidcProvider();
    const env = multiUserEnv(provider);
    // One clock for both, so that a test can move both past the refresh-token grace.
    [a, b] = await Promise.all([
      startTestServer("postgres", env, database, { clock: clock.now }),
      startTestServer("postgres", env, database, { clock: clock.now }),
    ]);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await database?.drop();
    await provider?.close();
  });

  it("accepts a login made on one replica on the other, and ends it there soon after a logout on the first", async () => {
    const user = await signIn(a, provider, { sub: "replica-user" });
    const onB = caller(b, user.token).workspaces;
    // B has now seen the login live (and remembers that for a moment).
    await onB.listWorkspaces({});
    await user.auth.logout({ refreshToken: user.refreshToken });
    await expectCode(user.workspaces.listWorkspaces({}), Code.Unauthenticated);
    // B learns of it from the database once its memory of the login runs out (about a second).
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const refused = await onB.listWorkspaces({}).then(
        () => false,
        () => true,
      );
      if (refused) break;
      if (Date.now() > deadline) throw new Error("replica B still accepts the token 20 s after the logout");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await expectCode(onB.listWorkspaces({}), Code.Unauthenticated);
  });
  /** The refresh-token rows of one login, oldest first. */
  async function familyRows(accessToken: string) {
    const fam = JSON.parse(Buffer.from(accessToken.split(".")[1]!, "base64url").toString("utf8")).fam as string;
    return a.server.db.kysely.selectFrom("refresh_tokens").select(["token_hash", "used_at"]).where("family_id", "=", fam).orderBy("created_at").execute();
  }

  const refreshOn = (t: TestServer, refreshToken: string): Promise<TokenSet> =>
    clientWith(t, AuthService, undefined).refreshToken({ refreshToken }).then((r) => r.tokens!);

  it("answers a refresh repeated on the other replica within the grace with the same pair", async () => {
    const user = await signIn(a, provider, { sub: "replica-refresher" });
    const onA = await refreshOn(a, user.refreshToken);
    const onB = await refreshOn(b, user.refreshToken);
    expect(onB).toEqual(onA);
    expect(await familyRows(user.accessToken)).toHaveLength(2);
    await caller(b, onB.accessToken).workspaces.listWorkspaces({});
    await caller(a, onA.accessToken).workspaces.listWorkspaces({});
  });

  it("gives refreshes of one token in flight on both replicas at once the same pair, recording one rotation", async () => {
    const user = await signIn(a, provider, { sub: "replica-racer" });
    const pairs = await Promise.all([a, b, a, b].map((t) => refreshOn(t, user.refreshToken)));
    for (const pair of pairs) expect(pair).toEqual(pairs[0]);
    const rows = await familyRows(user.accessToken);
    expect(rows).toHaveLength(2);
    expect(rows[1]!.used_at).toBeNull();
    const next = await refreshOn(b, pairs[0]!.refreshToken);
    await caller(a, next.accessToken).workspaces.listWorkspaces({});
  });

  it("revokes the login on both replicas when the rotated token comes back to the other after the grace", async () => {
    const user = await signIn(a, provider, { sub: "replica-reuser" });
    const rotated = await refreshOn(a, user.refreshToken);
    await caller(b, rotated.accessToken).workspaces.listWorkspaces({});
    clock.advance(a.config.auth.refreshReuseGraceSeconds + 1);
    await expectCode(refreshOn(b, user.refreshToken), Code.Unauthenticated);
    await expectCode(caller(b, rotated.accessToken).workspaces.listWorkspaces({}), Code.Unauthenticated);
    await expectCode(refreshOn(a, rotated.refreshToken), Code.Unauthenticated);
    // A remembered the login as live for a moment; past that it asks the database and refuses.
    clock.advance(2);
    await expectCode(caller(a, rotated.accessToken).workspaces.listWorkspaces({}), Code.Unauthenticated);
  });
});
