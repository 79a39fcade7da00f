// The task change log's order on real databases: a workspace's changes become visible in the
// order of their ids, whatever order their transactions ran in, so a WatchTasks reader that
// keeps the last id it read as its cursor never skips one; and a transaction holds no lock
// between its change and its commit, so one workspace's transactions do not wait on each other
// (migrations/0009_task_events_commit_order.ts).
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Db } from "../../src/db/database.js";
import { migrateToLatest } from "../../src/db/migrator.js";
import { insertTaskEvent, latestTaskEventId, listTaskEvents } from "../../src/store/task-events.js";
import { createTestDatabase, DIALECTS, type TestDatabase } from "../helpers/databases.js";

/** A promise and the function that settles it. */
function gate(): { opened: Promise<void>; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

describe.each(DIALECTS)("task change order on %s", (dialect) => {
  let database: TestDatabase;
  let db: Db;
  const ownerId = randomUUID();

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    db = openDatabase({ databaseUrl: database.databaseUrl, sqlitePath: `${database.dataDir}/foreman.db` });
    await migrateToLatest(db);
  });

  afterAll(async () => {
    await db?.close();
    await database?.drop();
  });

  const change = (trx: Db["kysely"], workspaceId: string) =>
    insertTaskEvent(trx, db.adapter, { ownerId, workspaceId, taskId: randomUUID(), type: "updated" }, new Date());

  it.runIf(dialect === "postgres")("a change made first but committed last gets the later id, and the other transaction does not wait for it", async () => {
    const workspaceId = randomUUID();
    const changed = gate();
    const release = gate();
    const first = db.adapter.transaction(db.kysely, async (trx) => {
      await change(trx, workspaceId);
      changed.open();
      await release.opened;
    });
    await changed.opened;
    // The second transaction of the same workspace commits while the first is still open.
    await db.adapter.transaction(db.kysely, (trx) => change(trx, workspaceId));
    const afterSecond = await listTaskEvents(db.kysely, ownerId, workspaceId, 0, 10);
    expect(afterSecond).toHaveLength(1);
    release.open();
    await first;
    const all = await listTaskEvents(db.kysely, ownerId, workspaceId, 0, 10);
    expect(all).toHaveLength(2);
    // The first transaction's change committed last, so its id is the higher one: a reader at
    // the second's id still finds it.
    expect(all[0]!.id).toBe(afterSecond[0]!.id);
    expect((await listTaskEvents(db.kysely, ownerId, workspaceId, afterSecond[0]!.id, 10)).map((e) => e.id)).toEqual([all[1]!.id]);
    expect(await latestTaskEventId(db.kysely, workspaceId)).toBe(all[1]!.id);
  });

  it("a reader following by cursor sees every change of many concurrent transactions, each once", async () => {
    const workspaceId = randomUUID();
    const other = randomUUID();
    const writers = 40;
    const seen: number[] = [];
    let cursor = 0;
    let writing = true;
    const reader = (async () => {
      for (;;) {
        const done = !writing;
        const batch = await listTaskEvents(db.kysely, ownerId, workspaceId, cursor, 1000);
        for (const e of batch) seen.push(e.id);
        if (batch.length > 0) cursor = batch.at(-1)!.id;
        if (done && batch.length === 0) return;
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    })();
    // Each writer waits a different while between its change and its commit, and changes
    // another workspace too, so commits come in an order unlike the order of the inserts.
    await Promise.all(
      Array.from({ length: writers }, (_, i) =>
        db.adapter.transaction(db.kysely, async (trx) => {
          await change(trx, workspaceId);
          await new Promise((resolve) => setTimeout(resolve, (i * 7) % 23));
          await change(trx, other);
        }),
      ),
    );
    writing = false;
    await reader;
    const stored = (await listTaskEvents(db.kysely, ownerId, workspaceId, 0, 1000)).map((e) => e.id);
    expect(stored).toHaveLength(writers);
    expect(seen).toEqual(stored);
  });
});
