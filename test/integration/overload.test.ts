// An overloaded server says so: when every database connection stays busy past the pool's
// connection timeout (10 s), a call is unavailable with reason SERVER_BUSY (the client may retry),
// not internal, and the log says it in a few warn lines, not one error per call.
import { Code } from "@connectrpc/connect";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runsOn } from "../helpers/databases.js";
import { caller } from "../helpers/fixtures.js";
import { expectError } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

describe.runIf(runsOn("postgres"))("a server whose database connections are all busy", () => {
  let t: TestServer;
  const logLines: string[] = [];

  beforeAll(async () => {
    t = await startTestServer("postgres", { FOREMAN_DB_POOL_SIZE: "1" }, undefined, { logLines });
  });

  afterAll(async () => {
    await t?.close();
  });

  it("answers unavailable (SERVER_BUSY) once the pool's wait runs out, and logs it as a warning", async () => {
    const workspace = await caller(t).workspace();
    // The pool's one connection, held past the 10 s a call waits for one.
    const holding = t.server.db.kysely.transaction().execute((trx) => sql`SELECT pg_sleep(15)`.execute(trx));
    try {
      await expectError(caller(t).workspaces.getWorkspace({ id: workspace.id }), { code: Code.Unavailable, reason: "SERVER_BUSY" });
    } finally {
      await holding;
    }
    // Served again once the connection is free.
    expect((await caller(t).workspaces.getWorkspace({ id: workspace.id })).workspace?.id).toBe(workspace.id);
    const logged = logLines.map((l) => JSON.parse(l) as { level: number; msg: string });
    expect(logged.filter((l) => l.msg.startsWith("calls refused: every database connection stayed busy"))).toEqual([expect.objectContaining({ level: 40 })]);
    expect(logged.filter((l) => l.level >= 50)).toEqual([]);
  }, 60_000);
});
