// One clock: what the server records as "when" (create and update times, the time in an id)
// comes from the clock it was started with, so tests of leases, heartbeats and expiry can move
// time instead of waiting for it.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIALECTS } from "../helpers/databases.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** The milliseconds a UUIDv7 carries in its first 48 bits. */
function idMillis(id: string): number {
  return parseInt(id.replace(/-/g, "").slice(0, 12), 16);
}

describe.each(DIALECTS)("the server's clock on %s", (dialect) => {
  let t: TestServer;
  let now = new Date("2031-05-06T07:08:09.123Z");

  beforeAll(async () => {
    t = await startTestServer(dialect, {}, undefined, { clock: () => new Date(now) });
  });

  afterAll(async () => {
    await t?.close();
  });

  it("stamps what it creates and changes with the clock it was given, ids too", async () => {
    const { workspace } = await t.workspaces.createWorkspace({ name: "on a moved clock" });
    expect(timestampDate(workspace!.createTime!).toISOString()).toBe("2031-05-06T07:08:09.123Z");
    expect(idMillis(workspace!.id)).toBe(now.getTime());

    now = new Date("2031-05-06T08:00:00.000Z");
    const { workspace: updated } = await t.workspaces.updateWorkspace({ id: workspace!.id, name: "an hour later" });
    expect(timestampDate(updated!.updateTime!).toISOString()).toBe("2031-05-06T08:00:00.000Z");
    expect(timestampDate(updated!.createTime!).toISOString()).toBe("2031-05-06T07:08:09.123Z");
  });
});
