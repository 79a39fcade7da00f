// Named (prepared) statements on a real PostgreSQL (src/db/named-statements.ts): a query shape
// is prepared once per connection and then reused, and a prepared statement that a schema
// change made stale costs the connection, not the server: the call after it prepares afresh.
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Db } from "../../src/db/database.js";
import { createTestDatabase, runsOn, type TestDatabase } from "../helpers/databases.js";

describe.runIf(runsOn("postgres"))("named statements on postgres", () => {
  let database: TestDatabase;
  let db: Db;

  beforeAll(async () => {
    database = await createTestDatabase("postgres");
    db = openDatabase({ databaseUrl: database.databaseUrl, poolSize: 1 });
    await sql`CREATE TABLE scratch (id integer PRIMARY KEY, a text)`.execute(db.kysely);
    await sql`INSERT INTO scratch VALUES (1, 'one')`.execute(db.kysely);
  });

  afterAll(async () => {
    await db?.close();
    await database?.drop();
  });

  const read = async (id: number) => (await sql<Record<string, unknown>>`SELECT * FROM scratch WHERE id = ${id}`.execute(db.kysely)).rows;

  it("prepares a query shape once on a connection and runs it again by name", async () => {
    expect(await read(1)).toEqual([{ id: 1, a: "one" }]);
    expect(await read(1)).toEqual([{ id: 1, a: "one" }]);
    const prepared = await sql<{ statement: string }>`SELECT statement FROM pg_prepared_statements`.execute(db.kysely);
    expect(prepared.rows.filter((r) => r.statement.includes("FROM scratch WHERE id = $1"))).toHaveLength(1);
  });

  it("after another connection changes the table, at most one call fails and the next reads the new columns", async () => {
    expect(await read(1)).toEqual([{ id: 1, a: "one" }]);
    const other = new pg.Client({ connectionString: database.databaseUrl });
    await other.connect();
    await other.query("ALTER TABLE scratch ADD COLUMN b text DEFAULT 'bee'");
    await other.end();
    const first = await read(1).then(
      (rows) => ({ rows }),
      (error: unknown) => ({ error: error as { code?: string; message: string } }),
    );
    if ("error" in first) expect(first.error.message).toMatch(/cached plan must not change result type/);
    else expect(first.rows).toEqual([{ id: 1, a: "one", b: "bee" }]);
    expect(await read(1)).toEqual([{ id: 1, a: "one", b: "bee" }]);
  });
});
