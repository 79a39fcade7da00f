// Queries compiled once (store/prepared.ts), on both databases: each run binds its own
// arguments, runs inside a transaction as in one, and a query whose shape would hang on an
// argument is refused when it is first compiled.
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Db } from "../../src/db/database.js";
import { migrateToLatest } from "../../src/db/migrator.js";
import { prepared } from "../../src/store/prepared.js";
import { ensureLocalUser } from "../../src/store/users.js";
import { LOCAL_USER_ID } from "../../src/model/users.js";
import { insertWorkspace } from "../../src/store/workspaces.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";

const ID_A = "0192f2a4-0000-7000-8000-00000000000a";
const ID_B = "0192f2a4-0000-7000-8000-00000000000b";
const ID_C = "0192f2a4-0000-7000-8000-00000000000c";

const workspaceNamed = prepared((db, ownerId: string, id: string) =>
  db.selectFrom("workspaces").select(["id", "name"]).where("owner_id", "=", ownerId).where("id", "=", id),
);

describe.each(DIALECTS)("prepared queries on %s", (dialect) => {
  let database: TestDatabase;
  let db: Db;
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    db = openDatabase({ databaseUrl: database.databaseUrl, sqlitePath: path.join(database.dataDir, "foreman.db") });
    await migrateToLatest(db);
    await ensureLocalUser(db.kysely, new Date());
    for (const [id, name] of [[ID_A, "a"], [ID_B, "b"]] as const) {
      await insertWorkspace(db.kysely, { id, ownerId: LOCAL_USER_ID, name, description: "", createdAt: new Date() });
    }
  });
  afterAll(async () => {
    await db.close();
    await database.drop();
  });

  it("binds each run's arguments, also when runs overlap", async () => {
    const [a, b, none, otherOwner] = await Promise.all([
      workspaceNamed(db.kysely, LOCAL_USER_ID, ID_A),
      workspaceNamed(db.kysely, LOCAL_USER_ID, ID_B),
      workspaceNamed(db.kysely, LOCAL_USER_ID, ID_C),
      workspaceNamed(db.kysely, ID_C, ID_A),
    ]);
    expect(a).toEqual([{ id: ID_A, name: "a" }]);
    expect(b).toEqual([{ id: ID_B, name: "b" }]);
    expect(none).toEqual([]);
    expect(otherOwner).toEqual([]);
  });

  it("runs inside a transaction, seeing what the transaction wrote", async () => {
    await db.kysely
      .transaction()
      .execute(async (trx) => {
        await insertWorkspace(trx, { id: ID_C, ownerId: LOCAL_USER_ID, name: "c", description: "", createdAt: new Date() });
        expect(await workspaceNamed(trx, LOCAL_USER_ID, ID_C)).toEqual([{ id: ID_C, name: "c" }]);
        throw new Error("roll back");
      })
      .catch((error: unknown) => expect(String(error)).toContain("roll back"));
    expect(await workspaceNamed(db.kysely, LOCAL_USER_ID, ID_C)).toEqual([]);
  });

  it("refuses a query that does not use every argument as a value", async () => {
    const shapedByArgument = prepared((d, ownerId: string, limit: number) =>
      d.selectFrom("workspaces").select("id").where("owner_id", "=", ownerId).limit(typeof limit === "number" ? limit : 1),
    );
    await expect(shapedByArgument(db.kysely, LOCAL_USER_ID, 5)).rejects.toThrow("used 1 of its 2 arguments as values");
  });
});
