// Heartbeats written together (core/heartbeat-writer.ts), on both databases: heartbeats that
// arrive together are one UPDATE, those that arrive during a write go in the next one, each
// answer waits for its write, an unregistered worker stays so, an unhealthy one is active
// again, and a write that fails fails only its own heartbeats.
import path from "node:path";
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Db } from "../../src/db/database.js";
import { migrateToLatest } from "../../src/db/migrator.js";
import { HeartbeatWriter } from "../../src/core/heartbeat-writer.js";
import { newId } from "../../src/store/codec.js";
import { findWorker, insertWorker, markUnhealthy, unregisterWorker } from "../../src/store/workers.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";

/** Counts the UPDATEs the writer makes, and fails the next one when told to. */
class UpdateCounter implements KyselyPlugin {
  updates = 0;
  failNext = false;
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (args.node.kind === "UpdateQueryNode") {
      this.updates++;
      if (this.failNext) {
        this.failNext = false;
        throw new Error("the database went away");
      }
    }
    return args.node;
  }
  transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return Promise.resolve(args.result);
  }
}

describe.each(DIALECTS)("the heartbeat writer on %s", (dialect) => {
  let database: TestDatabase;
  let db: Db;
  const registered = new Date("2026-12-01T10:00:00Z");

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    db = openDatabase({ databaseUrl: database.databaseUrl, sqlitePath: path.join(database.dataDir, "foreman.db") });
    await migrateToLatest(db);
  });
  afterAll(async () => {
    await db?.close();
    await database?.drop();
  });

  async function workers(n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const id = newId(registered.getTime());
      await insertWorker(db.kysely, {
        id,
        ownerId: null,
        registrationTokenId: null,
        name: `w${i}`,
        hostname: "h",
        version: "1",
        agentTypes: [],
        labels: {},
        maxConcurrentSessions: 1,
        registeredAt: registered,
        credentialHash: `hash-${id}`,
      });
      ids.push(id);
    }
    return ids;
  }

  const seen = async (id: string) => (await findWorker(db.kysely, id))!;

  it("writes heartbeats that arrive together in one UPDATE, and answers each once it is written", async () => {
    const counter = new UpdateCounter();
    const writer = new HeartbeatWriter(db.kysely.withPlugin(counter));
    const ids = await workers(200);
    const at = new Date("2026-12-01T10:00:30Z");
    const answers = await Promise.all(ids.map((id) => writer.touch(id, at)));
    expect(answers).toEqual(ids.map(() => ({ registered: true, hasCommands: false })));
    expect(counter.updates).toBe(1);
    for (const id of ids) expect((await seen(id)).lastHeartbeatAt).toEqual(at);
  });

  it("puts heartbeats that arrive during a write in the next one, recorded at the earliest of them", async () => {
    const counter = new UpdateCounter();
    const writer = new HeartbeatWriter(db.kysely.withPlugin(counter), 50);
    const [first, ...rest] = await workers(21);
    const firstDone = writer.touch(first!, new Date("2026-12-01T10:01:00Z"));
    // The first write is under way (its timer fired): these wait for the next, 50 ms after it began.
    await new Promise((resolve) => setTimeout(resolve, 5));
    const later = rest.map((id, i) => writer.touch(id, new Date(Date.parse("2026-12-01T10:01:01Z") + i * 1000)));
    await Promise.all([firstDone, ...later]);
    expect(counter.updates).toBe(2);
    expect((await seen(first!)).lastHeartbeatAt).toEqual(new Date("2026-12-01T10:01:00Z"));
    for (const id of rest) expect((await seen(id)).lastHeartbeatAt).toEqual(new Date("2026-12-01T10:01:01Z"));
  });

  it("makes an unhealthy worker active again and leaves an unregistered one as it was", async () => {
    const writer = new HeartbeatWriter(db.kysely);
    const [sick, gone, well] = await workers(3);
    expect(await markUnhealthy(db.kysely, sick!, new Date("2026-12-01T11:00:00Z"))).toBe(true);
    await unregisterWorker(db.kysely, db.adapter, gone!, new Date("2026-12-01T10:30:00Z"));
    const at = new Date("2026-12-01T11:00:05Z");
    const touched = await Promise.all([sick, gone, well].map((id) => writer.touch(id!, at)));
    // The unregistered one's heartbeat is told so (its call is then refused).
    expect(touched.map((t) => t.registered)).toEqual([true, false, true]);
    expect(await seen(sick!)).toMatchObject({ status: "active", lastHeartbeatAt: at });
    expect(await seen(gone!)).toMatchObject({ status: "unregistered", lastHeartbeatAt: registered });
    expect(await seen(well!)).toMatchObject({ status: "active", lastHeartbeatAt: at });
  });

  it("fails the heartbeats of a write that failed, and writes the next ones", async () => {
    const counter = new UpdateCounter();
    const writer = new HeartbeatWriter(db.kysely.withPlugin(counter));
    const [a, b] = await workers(2);
    counter.failNext = true;
    const failed = await Promise.allSettled([writer.touch(a!, new Date("2026-12-01T12:00:00Z")), writer.touch(b!, new Date("2026-12-01T12:00:00Z"))]);
    expect(failed.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(String((failed[0] as PromiseRejectedResult).reason)).toContain("the database went away");
    expect((await seen(a!)).lastHeartbeatAt).toEqual(registered);
    await writer.touch(a!, new Date("2026-12-01T12:00:10Z"));
    expect((await seen(a!)).lastHeartbeatAt).toEqual(new Date("2026-12-01T12:00:10Z"));
  });
});
