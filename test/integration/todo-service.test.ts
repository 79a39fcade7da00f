// TodoService through the generated client over real HTTP, on a real server in process, once
// per database dialect. Items are made the only way they can be: signed GitHub webhook
// deliveries to the same server. A multi-user server checks that items are their owner's alone.
import { randomUUID } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TodoItemStatus, TodoItemType, TodoService, type TodoItem } from "../../gen/foreman/v1/todo_pb.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller, signIn, type GitHubRepository } from "../helpers/fixtures.js";
import { deliver, issuePayload, pullRequestPayload } from "../helpers/github.js";
import { clientWith, startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { UNKNOWN_ID, expectCode, expectInvalid } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const { PENDING, IN_PROGRESS, DONE, DISMISSED } = TodoItemStatus;
const ALL_STATUSES = [PENDING, IN_PROGRESS, DONE, DISMISSED];
const NAMES: Record<number, string> = { [PENDING]: "pending", [IN_PROGRESS]: "in_progress", [DONE]: "done", [DISMISSED]: "dismissed" };

/** The legal moves; setting the current status again is also accepted (and changes nothing). */
const LEGAL: Record<number, TodoItemStatus[]> = {
  [PENDING]: [IN_PROGRESS, DONE, DISMISSED],
  [IN_PROGRESS]: [PENDING, DONE, DISMISSED],
  [DONE]: [],
  [DISMISSED]: [PENDING],
};

/** How to bring a new (pending) item to each status by legal moves. */
const PATH: Record<number, TodoItemStatus[]> = {
  [PENDING]: [],
  [IN_PROGRESS]: [IN_PROGRESS],
  [DONE]: [IN_PROGRESS, DONE],
  [DISMISSED]: [DISMISSED],
};

/** Opens an issue (or a pull request) on the repository through a signed delivery. */
async function open(baseUrl: string, repo: GitHubRepository, kind: "issue" | "pr" = "issue", number = 1): Promise<void> {
  const [event, payload] =
    kind === "issue"
      ? ["issues", issuePayload(repo.fullName, { number, title: `issue ${number}` })]
      : ["pull_request", pullRequestPayload(repo.fullName, { number })];
  const res = await deliver(baseUrl, { event, secret: repo.secret, payload });
  expect(res.body).toEqual({ status: "created", todo_items: 1 });
}

describe.each(DIALECTS)("TodoService on %s", (dialect) => {
  let t: TestServer;
  let todos: Client<typeof TodoService>;

  beforeAll(async () => {
    t = await startTestServer(dialect);
    todos = t.client(TodoService);
  });

  afterAll(async () => {
    await t?.close();
  });

  const repo = (workspaceId?: string) => caller(t).githubRepository({ workspaceId });

  async function all(workspaceId: string, filter: { repositoryId?: string; status?: TodoItemStatus; type?: TodoItemType } = {}) {
    const res = await todos.listTodoItems({ workspaceId, pageSize: 1000, ...filter });
    expect(res.nextPageToken).toBe("");
    return res.items;
  }

  /** A new pending issue_triage item on a repository of its own. */
  async function newItem(): Promise<TodoItem> {
    const r = await repo();
    await open(t.url, r);
    const [item] = await all(r.workspaceId);
    expect(item?.status).toBe(PENDING);
    return item!;
  }

  async function itemIn(status: TodoItemStatus): Promise<TodoItem> {
    let item = await newItem();
    for (const step of PATH[status]!) item = (await todos.updateTodoItemStatus({ id: item.id, status: step })).item!;
    expect(item.status).toBe(status);
    return item;
  }

  describe("GetTodoItem and ListTodoItems", () => {
    it("returns an item by id, also written in upper case", async () => {
      const item = await newItem();
      expect((await todos.getTodoItem({ id: item.id })).item).toEqual(item);
      expect((await todos.getTodoItem({ id: ` ${item.id.toUpperCase()} ` })).item).toEqual(item);
    });

    it("lists a workspace's items oldest first, and filters by repository, status and type", async () => {
      const a = await repo();
      const b = await repo(a.workspaceId);
      await open(t.url, a, "issue", 1);
      await open(t.url, b, "pr", 2);
      await open(t.url, a, "pr", 3);
      await open(t.url, b, "issue", 4);
      const items = await all(a.workspaceId);
      expect(items).toHaveLength(4);
      expect(items.map((i) => i.id)).toEqual(items.map((i) => i.id).sort());
      const numbers = items.map((i) => (i.data.case === "issueTriage" ? i.data.value.issueNumber : i.data.value?.prNumber));
      expect(numbers).toEqual([1, 2, 3, 4]);

      await todos.updateTodoItemStatus({ id: items[0]!.id, status: IN_PROGRESS });
      await todos.dismissTodoItem({ id: items[3]!.id });

      const ids = async (filter: Parameters<typeof all>[1]) => (await all(a.workspaceId, filter)).map((i) => i.id);
      expect(await ids({ repositoryId: a.id })).toEqual([items[0]!.id, items[2]!.id]);
      expect(await ids({ repositoryId: b.id.toUpperCase() })).toEqual([items[1]!.id, items[3]!.id]);
      expect(await ids({ type: TodoItemType.PR_REVIEW })).toEqual([items[1]!.id, items[2]!.id]);
      expect(await ids({ type: TodoItemType.ISSUE_TRIAGE })).toEqual([items[0]!.id, items[3]!.id]);
      expect(await ids({ status: PENDING })).toEqual([items[1]!.id, items[2]!.id]);
      expect(await ids({ status: IN_PROGRESS })).toEqual([items[0]!.id]);
      expect(await ids({ status: DISMISSED })).toEqual([items[3]!.id]);
      expect(await ids({ status: DONE })).toEqual([]);
      expect(await ids({ repositoryId: b.id, status: PENDING, type: TodoItemType.PR_REVIEW })).toEqual([items[1]!.id]);
      expect(await ids({ repositoryId: UNKNOWN_ID })).toEqual([]);

      // Another workspace sees none of them.
      const other = await repo();
      expect(await all(other.workspaceId)).toEqual([]);
    });

    it("pages through a list with opaque tokens bound to its filters", async () => {
      const r = await repo();
      for (let n = 1; n <= 5; n++) await open(t.url, r, "issue", n);
      const everything = await all(r.workspaceId);
      expect(everything).toHaveLength(5);

      const seen: TodoItem[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const res = await todos.listTodoItems({ workspaceId: r.workspaceId, pageSize: 2, pageToken });
        expect(res.items.length).toBeLessThanOrEqual(2);
        seen.push(...res.items);
        pageToken = res.nextPageToken;
        pages++;
      } while (pageToken !== "");
      expect(pages).toBe(3);
      expect(seen).toEqual(everything);

      const first = await todos.listTodoItems({ workspaceId: r.workspaceId, pageSize: 2 });
      // A token is for the list and filters that issued it.
      await expectInvalid(
        todos.listTodoItems({ workspaceId: r.workspaceId, status: PENDING, pageSize: 2, pageToken: first.nextPageToken }),
        "page_token",
      );
      await expectInvalid(
        todos.listTodoItems({ workspaceId: r.workspaceId, repositoryId: r.id, pageSize: 2, pageToken: first.nextPageToken }),
        "page_token",
      );
      await expectInvalid(todos.listTodoItems({ workspaceId: r.workspaceId, pageToken: "not-a-token" }), "page_token");
      await expectInvalid(todos.listTodoItems({ workspaceId: r.workspaceId, pageSize: -1 }), "page_size");

      // With the same filters the token carries on where the first page ended.
      const second = await todos.listTodoItems({ workspaceId: r.workspaceId, pageSize: 2, pageToken: first.nextPageToken });
      expect(second.items).toEqual(everything.slice(2, 4));
    });

    it("answers NotFound for an unknown item or workspace, InvalidArgument for bad ids and filters", async () => {
      await expectCode(todos.getTodoItem({ id: UNKNOWN_ID }), Code.NotFound);
      await expectCode(todos.listTodoItems({ workspaceId: UNKNOWN_ID }), Code.NotFound);
      await expectInvalid(todos.getTodoItem({ id: "" }), "id");
      await expectInvalid(todos.getTodoItem({ id: "not-a-uuid" }), "id");
      await expectInvalid(todos.listTodoItems({}), "workspace_id");
      await expectInvalid(todos.listTodoItems({ workspaceId: "nope" }), "workspace_id");
      const r = await repo();
      await expectInvalid(todos.listTodoItems({ workspaceId: r.workspaceId, repositoryId: "nope" }), "repository_id");
      await expectInvalid(todos.listTodoItems({ workspaceId: r.workspaceId, status: 99 as TodoItemStatus }), "status");
      await expectInvalid(todos.listTodoItems({ workspaceId: r.workspaceId, type: 99 as TodoItemType }), "type");
      await expectInvalid(
        todos.listTodoItems({ workspaceId: "x", repositoryId: "y", status: 9 as TodoItemStatus, type: 9 as TodoItemType }),
        "workspace_id",
        "repository_id",
        "status",
        "type",
      );
    });

    it("loses a repository's items when the repository is removed", async () => {
      const r = await repo();
      await open(t.url, r);
      const [item] = await all(r.workspaceId);
      await t.repositories.removeRepository({ id: r.id });
      await expectCode(todos.getTodoItem({ id: item!.id }), Code.NotFound);
      expect(await all(r.workspaceId)).toEqual([]);
    });
  });

  describe("UpdateTodoItemStatus", () => {
    const cases = ALL_STATUSES.flatMap((from) => ALL_STATUSES.filter((to) => to !== from).map((to) => [from, to] as const));

    it.each(cases)("from %s to %s follows the state machine", async (from, to) => {
      const item = await itemIn(from);
      if (LEGAL[from]!.includes(to)) {
        const updated = (await todos.updateTodoItemStatus({ id: item.id, status: to })).item!;
        expect(updated.status).toBe(to);
        expect({ ...updated, status: from, updateTime: item.updateTime }).toEqual(item);
        expect(timestampDate(updated.updateTime!).getTime()).toBeGreaterThanOrEqual(timestampDate(item.updateTime!).getTime());
        expect((await todos.getTodoItem({ id: item.id })).item).toEqual(updated);
      } else {
        const error = await expectCode(todos.updateTodoItemStatus({ id: item.id, status: to }), Code.FailedPrecondition);
        expect(error.rawMessage).toContain(`is ${NAMES[from]}`);
        expect(error.rawMessage).toContain(NAMES[to]);
        expect((await todos.getTodoItem({ id: item.id })).item).toEqual(item);
      }
    });

    it.each(ALL_STATUSES)("setting status %s again changes nothing", async (status) => {
      const item = await itemIn(status);
      const same = (await todos.updateTodoItemStatus({ id: item.id, status })).item;
      expect(same).toEqual(item);
      expect((await todos.getTodoItem({ id: item.id })).item).toEqual(item);
    });

    it("refuses an unspecified or unknown status, and bad or unknown ids", async () => {
      const item = await newItem();
      await expectInvalid(todos.updateTodoItemStatus({ id: item.id }), "status");
      await expectInvalid(todos.updateTodoItemStatus({ id: item.id, status: TodoItemStatus.UNSPECIFIED }), "status");
      await expectInvalid(todos.updateTodoItemStatus({ id: item.id, status: 99 as TodoItemStatus }), "status");
      await expectInvalid(todos.updateTodoItemStatus({ id: "bad", status: 99 as TodoItemStatus }), "id", "status");
      await expectInvalid(todos.updateTodoItemStatus({ id: "", status: DONE }), "id");
      await expectCode(todos.updateTodoItemStatus({ id: UNKNOWN_ID, status: DONE }), Code.NotFound);
      expect((await todos.getTodoItem({ id: item.id })).item).toEqual(item);
    });

    it("lets exactly one of two conflicting concurrent changes win", async () => {
      for (let round = 0; round < 3; round++) {
        const item = await newItem();
        // From pending both are legal; after either, the other is not (done and dismissed are
        // not reachable from each other).
        const results = await Promise.allSettled([
          todos.updateTodoItemStatus({ id: item.id, status: DONE }),
          todos.updateTodoItemStatus({ id: item.id, status: DISMISSED }),
        ]);
        const won = results.flatMap((r) => (r.status === "fulfilled" ? [r.value.item!.status] : []));
        const lost = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
        expect(won).toHaveLength(1);
        expect(lost).toHaveLength(1);
        await expectCode(Promise.reject(lost[0]), Code.FailedPrecondition);
        expect((await todos.getTodoItem({ id: item.id })).item!.status).toBe(won[0]);
      }
    });
  });

  describe("DismissTodoItem", () => {
    it.each([PENDING, IN_PROGRESS])("dismisses an item that is %s, and a dismissed item can be restored", async (status) => {
      const item = await itemIn(status);
      const dismissed = (await todos.dismissTodoItem({ id: item.id })).item!;
      expect(dismissed.status).toBe(DISMISSED);
      expect({ ...dismissed, status: item.status, updateTime: item.updateTime }).toEqual(item);
      expect((await todos.getTodoItem({ id: item.id })).item).toEqual(dismissed);
      const restored = (await todos.updateTodoItemStatus({ id: item.id, status: PENDING })).item!;
      expect(restored.status).toBe(PENDING);
    });

    it("is idempotent on an item already dismissed, also when called concurrently", async () => {
      const item = await newItem();
      const first = (await todos.dismissTodoItem({ id: item.id })).item!;
      const again = (await todos.dismissTodoItem({ id: item.id })).item!;
      expect(again).toEqual(first);

      const other = await newItem();
      const results = await Promise.all(Array.from({ length: 5 }, () => todos.dismissTodoItem({ id: other.id })));
      for (const res of results) expect(res.item!.status).toBe(DISMISSED);
      const stored = (await todos.getTodoItem({ id: other.id })).item!;
      expect(results.map((r) => r.item!.updateTime)).toContainEqual(stored.updateTime);
    });

    it("refuses to dismiss a done item", async () => {
      const item = await itemIn(DONE);
      const error = await expectCode(todos.dismissTodoItem({ id: item.id }), Code.FailedPrecondition);
      expect(error.rawMessage).toContain("is done");
      expect((await todos.getTodoItem({ id: item.id })).item).toEqual(item);
    });

    it("answers NotFound for an unknown id and InvalidArgument for a bad one", async () => {
      await expectCode(todos.dismissTodoItem({ id: UNKNOWN_ID }), Code.NotFound);
      await expectInvalid(todos.dismissTodoItem({ id: "" }), "id");
      await expectInvalid(todos.dismissTodoItem({ id: "123" }), "id");
    });
  });
});

describe.each(DIALECTS)("TodoService with several users on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startMultiUserServer(dialect, provider);
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  async function user(sub: string) {
    const signedIn = await signIn(t, provider, sub);
    return { ...signedIn, todos: signedIn.client(TodoService) };
  }

  it("shows each user only the items of their own repositories", async () => {
    const alice = await user(`alice-${randomUUID()}`);
    const bob = await user(`bob-${randomUUID()}`);
    const aliceRepo = await alice.githubRepository();
    await open(t.url, aliceRepo, "issue", 1);
    const [item] = (await alice.todos.listTodoItems({ workspaceId: aliceRepo.workspaceId })).items;
    expect(item).toBeDefined();

    // For bob, alice's item and workspace do not exist.
    await expectCode(bob.todos.getTodoItem({ id: item!.id }), Code.NotFound);
    await expectCode(bob.todos.updateTodoItemStatus({ id: item!.id, status: DONE }), Code.NotFound);
    await expectCode(bob.todos.dismissTodoItem({ id: item!.id }), Code.NotFound);
    await expectCode(bob.todos.listTodoItems({ workspaceId: aliceRepo.workspaceId }), Code.NotFound);

    // Bob adds the same GitHub repository with his own secret; each delivery reaches only the
    // repository whose secret signed it.
    const workspace = await bob.workspace({ name: "bob's" });
    const bobRepo = await bob.githubRepository({ workspaceId: workspace.id, fullName: aliceRepo.fullName, secret: `bob-secret-${randomUUID()}` });
    await open(t.url, bobRepo, "pr", 2);
    const bobItems = (await bob.todos.listTodoItems({ workspaceId: bobRepo.workspaceId })).items;
    expect(bobItems.map((i) => [i.repositoryId, i.type])).toEqual([[bobRepo.id, TodoItemType.PR_REVIEW]]);
    expect((await bob.todos.listTodoItems({ workspaceId: bobRepo.workspaceId, repositoryId: aliceRepo.id })).items).toEqual([]);
    const aliceItems = (await alice.todos.listTodoItems({ workspaceId: aliceRepo.workspaceId })).items;
    expect(aliceItems.map((i) => i.id)).toEqual([item!.id]);
    await expectCode(alice.todos.getTodoItem({ id: bobItems[0]!.id }), Code.NotFound);

    // Bob's changes touch only his item; alice's is as it was.
    await bob.todos.dismissTodoItem({ id: bobItems[0]!.id });
    expect((await alice.todos.getTodoItem({ id: item!.id })).item).toEqual(item);
    await alice.todos.updateTodoItemStatus({ id: item!.id, status: IN_PROGRESS });
    expect((await bob.todos.getTodoItem({ id: bobItems[0]!.id })).item!.status).toBe(DISMISSED);
  });

  it("refuses an anonymous caller", async () => {
    const anonymous = clientWith(t, TodoService, undefined);
    await expectCode(anonymous.getTodoItem({ id: UNKNOWN_ID }), Code.Unauthenticated);
    await expectCode(anonymous.listTodoItems({ workspaceId: UNKNOWN_ID }), Code.Unauthenticated);
  });
});
