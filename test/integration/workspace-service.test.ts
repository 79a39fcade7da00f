// WorkspaceService through the generated client over real HTTP (Connect, h2c), on a real
// server in process, once per database dialect.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Workspace } from "../../gen/foreman/v1/workspace_pb.js";
import { inBatches } from "../helpers/batches.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { UNKNOWN_ID, expectCode, expectInvalid } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe.each(DIALECTS)("WorkspaceService on %s", (dialect) => {
  let t: TestServer;

  let local: Caller;

  beforeAll(async () => {
    t = await startTestServer(dialect);
    local = caller(t);
  });

  afterAll(async () => {
    await t?.close();
  });

  // The workspace list is per owner and every call is the single-user mode's local user, so
  // each test starts from no workspaces at all.
  beforeEach(async () => {
    for (;;) {
      const { workspaces } = await t.workspaces.listWorkspaces({ pageSize: 1000 });
      if (workspaces.length === 0) break;
      await inBatches(workspaces.length, 20, (i) => t.workspaces.deleteWorkspace({ id: workspaces[i]!.id, force: true }));
    }
  });

  async function listAll(pageSize: number): Promise<{ pages: Workspace[][]; tokens: string[] }> {
    const pages: Workspace[][] = [];
    const tokens: string[] = [];
    let pageToken = "";
    do {
      const res = await t.workspaces.listWorkspaces({ pageSize, pageToken });
      pages.push(res.workspaces);
      tokens.push(res.nextPageToken);
      pageToken = res.nextPageToken;
      expect(pages.length).toBeLessThan(200);
    } while (pageToken !== "");
    return { pages, tokens };
  }

  describe("CreateWorkspace and GetWorkspace", () => {
    it("creates a workspace whose fields round-trip through Get and List", async () => {
      const before = Date.now();
      const created = await local.workspace({ name: "Platform team", description: "Services and their libraries." });
      const after = Date.now();

      expect(created.id).toMatch(UUID);
      expect(created.name).toBe("Platform team");
      expect(created.description).toBe("Services and their libraries.");
      expect(created.createTime).toBeDefined();
      expect(created.updateTime).toEqual(created.createTime);
      const createMs = timestampDate(created.createTime!).getTime();
      expect(createMs).toBeGreaterThanOrEqual(before);
      expect(createMs).toBeLessThanOrEqual(after);

      const { workspace: got } = await t.workspaces.getWorkspace({ id: created.id });
      expect(got).toEqual(created);

      const { workspaces, nextPageToken } = await t.workspaces.listWorkspaces({});
      expect(workspaces).toEqual([created]);
      expect(nextPageToken).toBe("");
    });

    it("trims name and description, and defaults the description to empty", async () => {
      const trimmed = await local.workspace({ name: "  Data  ", description: "\n  Pipelines \t" });
      expect(trimmed.name).toBe("Data");
      expect(trimmed.description).toBe("Pipelines");
      const bare = await local.workspace({ name: "No description" });
      expect(bare.description).toBe("");
      expect((await t.workspaces.getWorkspace({ id: bare.id })).workspace?.description).toBe("");
    });

    it("keeps multi-byte text intact", async () => {
      const name = "Équipe 数据 🚀";
      const description = "Ünïcödé — 説明 👩‍💻\nsecond line\twith a tab";
      const created = await local.workspace({ name, description });
      expect(created.name).toBe(name);
      expect(created.description).toBe(description);
      const { workspace } = await t.workspaces.getWorkspace({ id: created.id });
      expect(workspace?.name).toBe(name);
      expect(workspace?.description).toBe(description);
    });

    it("accepts ids in upper case", async () => {
      const created = await local.workspace({ name: "Upper" });
      const { workspace } = await t.workspaces.getWorkspace({ id: created.id.toUpperCase() });
      expect(workspace?.id).toBe(created.id);
    });

    it.each([
      ["empty", ""],
      ["whitespace only", " \t\n "],
    ])("refuses an %s name", async (_label, name) => {
      const err = await expectInvalid(t.workspaces.createWorkspace({ name }), "name");
      expect(err.rawMessage).toContain("required");
    });

    it("counts name and description length in characters, not bytes or UTF-16 units", async () => {
      // 100 characters of 2 bytes, and of 4 bytes (2 UTF-16 units), are within the limit.
      await local.workspace({ name: "é".repeat(100), description: "ü".repeat(2000) });
      await local.workspace({ name: "😀".repeat(100), description: "😀".repeat(2000) });
      await expectInvalid(t.workspaces.createWorkspace({ name: "é".repeat(101) }), "name");
      await expectInvalid(t.workspaces.createWorkspace({ name: "😀".repeat(101) }), "name");
      await expectInvalid(t.workspaces.createWorkspace({ name: "a".repeat(101) }), "name");
      await expectInvalid(t.workspaces.createWorkspace({ name: "ok", description: "ü".repeat(2001) }), "description");
      await expectInvalid(t.workspaces.createWorkspace({ name: "ok", description: "x".repeat(2001) }), "description");
      const { workspaces } = await t.workspaces.listWorkspaces({});
      expect(workspaces.map((w) => w.name)).toEqual(["é".repeat(100), "😀".repeat(100)]);
    });

    it.each([
      ["NUL", "\u0000"],
      ["bell", "\u0007"],
      ["escape", "\u001b"],
      ["DEL", "\u007f"],
    ])("refuses a %s control character in name and description", async (_label, c) => {
      await expectInvalid(t.workspaces.createWorkspace({ name: `bad${c}name` }), "name");
      await expectInvalid(t.workspaces.createWorkspace({ name: "fine", description: `bad${c}text` }), "description");
      expect((await t.workspaces.listWorkspaces({})).workspaces).toEqual([]);
    });

    it("refuses a name with a line break or tab, which a description may hold", async () => {
      for (const name of ["two\nlines", "carriage\rreturn", "tab\there"]) {
        const err = await expectInvalid(t.workspaces.createWorkspace({ name }), "name");
        expect(err.rawMessage).toContain("single line");
      }
      const ok = await local.workspace({ name: "one line", description: "two\nlines\twith a tab" });
      await expectInvalid(t.workspaces.updateWorkspace({ id: ok.id, name: "now\ntwo" }), "name");
      expect((await t.workspaces.listWorkspaces({})).workspaces.map((w) => w.name)).toEqual(["one line"]);
    });

    it("names every invalid field at once", async () => {
      const err = await expectInvalid(
        t.workspaces.createWorkspace({ name: "", description: "d".repeat(2001) }),
        "name",
        "description",
      );
      expect(err.rawMessage).toContain("name");
      expect(err.rawMessage).toContain("description");
    });

    it("refuses a duplicate name, also after trimming, and frees the name on delete", async () => {
      const first = await local.workspace({ name: "Shared" });
      const err = await expectCode(t.workspaces.createWorkspace({ name: "Shared" }), Code.AlreadyExists);
      expect(err.rawMessage).toContain("Shared");
      await expectCode(t.workspaces.createWorkspace({ name: "  Shared " }), Code.AlreadyExists);
      expect((await t.workspaces.listWorkspaces({})).workspaces.map((w) => w.id)).toEqual([first.id]);

      await t.workspaces.deleteWorkspace({ id: first.id });
      const second = await local.workspace({ name: "Shared" });
      expect(second.id).not.toBe(first.id);
    });

    it("lets exactly one of concurrent creates with the same name succeed", async () => {
      const attempts = 8;
      const results = await Promise.allSettled(
        Array.from({ length: attempts }, (_, i) => t.workspaces.createWorkspace({ name: "Race", description: `attempt ${i}` })),
      );
      const ok = results.filter((r) => r.status === "fulfilled");
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(ok).toHaveLength(1);
      expect(failed).toHaveLength(attempts - 1);
      for (const f of failed) await expectCode(Promise.reject(f.reason), Code.AlreadyExists);

      const { workspaces } = await t.workspaces.listWorkspaces({});
      expect(workspaces.filter((w) => w.name === "Race")).toHaveLength(1);
      expect(workspaces).toHaveLength(1);
      expect(workspaces[0]?.id).toBe(ok[0]!.value.workspace?.id);
    });

    it.each([
      ["not a UUID", "not-a-uuid"],
      ["empty", ""],
      ["whitespace", "   "],
      ["almost a UUID", `${UNKNOWN_ID}0`],
    ])("refuses a malformed id (%s) on Get", async (_label, id) => {
      await expectInvalid(t.workspaces.getWorkspace({ id }), "id");
    });

    it("answers Get for an unknown id with NotFound", async () => {
      const err = await expectCode(t.workspaces.getWorkspace({ id: UNKNOWN_ID }), Code.NotFound);
      expect(err.rawMessage).toContain(UNKNOWN_ID);
    });
  });

  describe("UpdateWorkspace", () => {
    it("changes only the name when only the name is set", async () => {
      const created = await local.workspace({ name: "Before", description: "Kept description" });
      const { workspace: updated } = await t.workspaces.updateWorkspace({ id: created.id, name: "  After " });
      expect(updated?.id).toBe(created.id);
      expect(updated?.name).toBe("After");
      expect(updated?.description).toBe("Kept description");
      expect(updated?.createTime).toEqual(created.createTime);
      expect(timestampDate(updated!.updateTime!).getTime()).toBeGreaterThanOrEqual(timestampDate(created.createTime!).getTime());
      expect((await t.workspaces.getWorkspace({ id: created.id })).workspace).toEqual(updated);
    });

    it("changes only the description when only the description is set", async () => {
      const created = await local.workspace({ name: "Kept name", description: "Old" });
      const { workspace: updated } = await t.workspaces.updateWorkspace({ id: created.id, description: "New" });
      expect(updated?.name).toBe("Kept name");
      expect(updated?.description).toBe("New");
      expect((await t.workspaces.getWorkspace({ id: created.id })).workspace).toEqual(updated);
    });

    it("clears the description when it is set to empty", async () => {
      const created = await local.workspace({ name: "Clearable", description: "Something" });
      const { workspace: updated } = await t.workspaces.updateWorkspace({ id: created.id, description: "" });
      expect(updated?.description).toBe("");
      expect(updated?.name).toBe("Clearable");
    });

    it("leaves everything as it was when no field is set", async () => {
      const created = await local.workspace({ name: "Untouched", description: "Same" });
      const { workspace: updated } = await t.workspaces.updateWorkspace({ id: created.id });
      expect(updated?.name).toBe("Untouched");
      expect(updated?.description).toBe("Same");
      expect(updated?.createTime).toEqual(created.createTime);
    });

    it("updates both fields at once", async () => {
      const created = await local.workspace({ name: "One", description: "first" });
      const { workspace: updated } = await t.workspaces.updateWorkspace({ id: created.id, name: "Two", description: "second" });
      expect(updated?.name).toBe("Two");
      expect(updated?.description).toBe("second");
    });

    it("validates the fields that are set and changes nothing when they are invalid", async () => {
      const created = await local.workspace({ name: "Valid", description: "valid" });
      await expectInvalid(t.workspaces.updateWorkspace({ id: created.id, name: "" }), "name");
      await expectInvalid(t.workspaces.updateWorkspace({ id: created.id, name: "   " }), "name");
      await expectInvalid(t.workspaces.updateWorkspace({ id: created.id, name: "é".repeat(101) }), "name");
      await expectInvalid(t.workspaces.updateWorkspace({ id: created.id, name: "a\u0000b" }), "name");
      await expectInvalid(t.workspaces.updateWorkspace({ id: created.id, description: "ü".repeat(2001) }), "description");
      await expectInvalid(
        t.workspaces.updateWorkspace({ id: "nope", name: "", description: "\u0007" }),
        "id",
        "name",
        "description",
      );
      const { workspace } = await t.workspaces.getWorkspace({ id: created.id });
      expect(workspace).toEqual(created);
    });

    it("refuses a rename onto another workspace's name but allows keeping its own", async () => {
      const a = await local.workspace({ name: "Alpha" });
      const b = await local.workspace({ name: "Beta" });
      await expectCode(t.workspaces.updateWorkspace({ id: b.id, name: "Alpha" }), Code.AlreadyExists);
      expect((await t.workspaces.getWorkspace({ id: b.id })).workspace?.name).toBe("Beta");
      const { workspace: same } = await t.workspaces.updateWorkspace({ id: a.id, name: "Alpha", description: "still alpha" });
      expect(same?.name).toBe("Alpha");
      expect(same?.description).toBe("still alpha");
    });

    it("refuses a malformed id and answers an unknown one with NotFound", async () => {
      await expectInvalid(t.workspaces.updateWorkspace({ id: "workspace-1", name: "x" }), "id");
      await expectInvalid(t.workspaces.updateWorkspace({ id: "", name: "x" }), "id");
      await expectCode(t.workspaces.updateWorkspace({ id: UNKNOWN_ID, name: "x" }), Code.NotFound);
      await expectCode(t.workspaces.updateWorkspace({ id: UNKNOWN_ID }), Code.NotFound);
    });
  });

  describe("DeleteWorkspace", () => {
    it("deletes an empty workspace", async () => {
      const kept = await local.workspace({ name: "Kept" });
      const doomed = await local.workspace({ name: "Doomed" });
      await t.workspaces.deleteWorkspace({ id: doomed.id });
      await expectCode(t.workspaces.getWorkspace({ id: doomed.id }), Code.NotFound);
      await expectCode(t.workspaces.deleteWorkspace({ id: doomed.id }), Code.NotFound);
      expect((await t.workspaces.listWorkspaces({})).workspaces.map((w) => w.id)).toEqual([kept.id]);
    });

    it("refuses a malformed id and answers an unknown one with NotFound", async () => {
      await expectInvalid(t.workspaces.deleteWorkspace({ id: "123" }), "id");
      await expectInvalid(t.workspaces.deleteWorkspace({ id: "" }), "id");
      await expectCode(t.workspaces.deleteWorkspace({ id: UNKNOWN_ID }), Code.NotFound);
      await expectCode(t.workspaces.deleteWorkspace({ id: UNKNOWN_ID, force: true }), Code.NotFound);
    });

    it("refuses a workspace holding a repository without force, and deletes it and its contents with force", async () => {
      const ws = await local.workspace({ name: "Busy" });
      const other = await local.workspace({ name: "Neighbour" });
      const repo = await local.repository(ws.id, "https://github.com/acme/busy.git");
      const second = await local.repository(ws.id, "https://github.com/acme/busier.git");
      const group = await local.group(ws.id, [repo.id, second.id], "both");
      const neighbourRepo = await local.repository(other.id, "https://github.com/acme/busy.git");

      const err = await expectCode(t.workspaces.deleteWorkspace({ id: ws.id }), Code.FailedPrecondition);
      expect(err.rawMessage).toContain("force");
      expect((await t.workspaces.getWorkspace({ id: ws.id })).workspace?.id).toBe(ws.id);
      expect((await t.repositories.getRepository({ id: repo.id })).repository?.id).toBe(repo.id);

      await t.workspaces.deleteWorkspace({ id: ws.id, force: true });
      await expectCode(t.workspaces.getWorkspace({ id: ws.id }), Code.NotFound);
      await expectCode(t.repositories.getRepository({ id: repo.id }), Code.NotFound);
      await expectCode(t.repositories.getRepository({ id: second.id }), Code.NotFound);
      await expectCode(t.repositories.deleteRepositoryGroup({ id: group.id }), Code.NotFound);
      await expectCode(t.repositories.listRepositories({ workspaceId: ws.id }), Code.NotFound);
      await expectCode(t.repositories.listRepositoryGroups({ workspaceId: ws.id }), Code.NotFound);

      // The other workspace and its repository for the same URL are untouched.
      expect((await t.repositories.getRepository({ id: neighbourRepo.id })).repository?.workspaceId).toBe(other.id);
      expect((await t.workspaces.listWorkspaces({})).workspaces.map((w) => w.id)).toEqual([other.id]);
    });

    it("needs force for a workspace holding just one repository", async () => {
      const ws = await local.workspace({ name: "Lone" });
      await local.repository(ws.id, "git@github.com:acme/lone.git");
      await expectCode(t.workspaces.deleteWorkspace({ id: ws.id, force: false }), Code.FailedPrecondition);
      await t.workspaces.deleteWorkspace({ id: ws.id, force: true });
      await expectCode(t.workspaces.getWorkspace({ id: ws.id }), Code.NotFound);
    });
  });

  describe("ListWorkspaces", () => {
    it("pages through 25 workspaces 10 at a time, oldest first, with nothing repeated or missing", async () => {
      const created: Workspace[] = [];
      // One at a time, so creation order is well defined.
      for (let i = 0; i < 25; i++) created.push(await local.workspace({ name: `ws-${String(i).padStart(2, "0")}` }));

      const { pages, tokens } = await listAll(10);
      expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
      expect(tokens[0]).not.toBe("");
      expect(tokens[1]).not.toBe("");
      expect(tokens[2]).toBe("");
      const listed = pages.flat();
      expect(new Set(listed.map((w) => w.id)).size).toBe(25);
      expect(listed.map((w) => w.id)).toEqual(created.map((w) => w.id));
      expect(listed).toEqual(created);

      // The same pages again: the order is stable.
      const again = await listAll(10);
      expect(again.pages.flat().map((w) => w.id)).toEqual(created.map((w) => w.id));

      // Default page size (100) returns all of them on one page.
      const all = await t.workspaces.listWorkspaces({ pageSize: 0 });
      expect(all.workspaces.map((w) => w.id)).toEqual(created.map((w) => w.id));
      expect(all.nextPageToken).toBe("");

      // A page size equal to what is left ends the list without an extra empty page.
      const exact = await listAll(25);
      expect(exact.pages.map((p) => p.length)).toEqual([25]);
    });

    it("keeps paging correctly when an item on an earlier page is deleted", async () => {
      const created: Workspace[] = [];
      for (let i = 0; i < 6; i++) created.push(await local.workspace({ name: `page-${i}` }));
      const first = await t.workspaces.listWorkspaces({ pageSize: 3 });
      expect(first.workspaces.map((w) => w.id)).toEqual(created.slice(0, 3).map((w) => w.id));
      await t.workspaces.deleteWorkspace({ id: created[2]!.id });
      const second = await t.workspaces.listWorkspaces({ pageSize: 3, pageToken: first.nextPageToken });
      expect(second.workspaces.map((w) => w.id)).toEqual(created.slice(3).map((w) => w.id));
      expect(second.nextPageToken).toBe("");
    });

    it.each([
      ["garbage", "garbage!!"],
      ["base64 of nonsense", Buffer.from("not json").toString("base64url")],
      ["JSON without a position", Buffer.from(JSON.stringify({ f: "x" })).toString("base64url")],
      ["a position that is not an id", Buffer.from(JSON.stringify({ a: "1 or 1=1", f: "x" })).toString("base64url")],
      ["very long", "A".repeat(5000)],
    ])("refuses a %s page_token", async (_label, pageToken) => {
      await expectInvalid(t.workspaces.listWorkspaces({ pageToken }), "page_token");
    });

    it("refuses a page token issued by another list", async () => {
      const ws = await local.workspace({ name: "Tokens" });
      for (let i = 0; i < 3; i++) await local.repository(ws.id, `https://github.com/acme/r${i}.git`);
      const { nextPageToken } = await t.repositories.listRepositories({ workspaceId: ws.id, pageSize: 1 });
      expect(nextPageToken).not.toBe("");
      await expectInvalid(t.workspaces.listWorkspaces({ pageToken: nextPageToken }), "page_token");
    });

    it("refuses a negative page_size", async () => {
      await local.workspace({ name: "Any" });
      await expectInvalid(t.workspaces.listWorkspaces({ pageSize: -1 }), "page_size");
      await expectInvalid(t.workspaces.listWorkspaces({ pageSize: -2147483648 }), "page_size");
    });

    it("caps page_size at 1000", { timeout: 120_000 }, async () => {
      const total = 1001;
      await inBatches(total, 25, (i) => t.workspaces.createWorkspace({ name: `bulk-${String(i).padStart(4, "0")}` }));
      const first = await t.workspaces.listWorkspaces({ pageSize: 5000 });
      expect(first.workspaces).toHaveLength(1000);
      expect(first.nextPageToken).not.toBe("");
      const second = await t.workspaces.listWorkspaces({ pageSize: 2147483647, pageToken: first.nextPageToken });
      expect(second.workspaces).toHaveLength(1);
      expect(second.nextPageToken).toBe("");
      const ids = new Set([...first.workspaces, ...second.workspaces].map((w) => w.id));
      expect(ids.size).toBe(total);
    });
  });
});
