// POST /webhooks/github on a real server in process, once per database dialect: deliveries sent
// with fetch as GitHub sends them (signed with node:crypto), and what they create checked through
// the generated TodoService client over real HTTP.
import { randomUUID } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TodoItemSource, TodoItemStatus, TodoItemType, TodoService, type TodoItem } from "../../gen/foreman/v1/todo_pb.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { deliver, issuePayload, pingPayload, pullRequestPayload, sign } from "../helpers/github.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** The test server's FOREMAN_MAX_MESSAGE_BYTES, small so an oversized delivery is cheap to send. */
const MAX_BYTES = 65_536;

describe.each(DIALECTS)("POST /webhooks/github on %s", (dialect) => {
  let t: TestServer;
  let todos: Client<typeof TodoService>;

  let local: Caller;

  beforeAll(async () => {
    t = await startTestServer(dialect, { FOREMAN_MAX_MESSAGE_BYTES: String(MAX_BYTES) });
    todos = t.client(TodoService);
    local = caller(t);
  });

  afterAll(async () => {
    await t?.close();
  });

  /** A GitHub repository name no other test uses. */
  function freshName(): string {
    return `acme/widgets-${randomUUID().slice(0, 8)}`;
  }

  async function items(workspaceId: string): Promise<TodoItem[]> {
    const res = await todos.listTodoItems({ workspaceId, pageSize: 1000 });
    expect(res.nextPageToken).toBe("");
    return res.items;
  }

  async function deliveryCount(): Promise<number> {
    const row = await t.server.db.kysely
      .selectFrom("webhook_deliveries")
      .select((eb) => eb.fn.countAll<number | string>().as("n"))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async function todoCount(): Promise<number> {
    const row = await t.server.db.kysely
      .selectFrom("todo_items")
      .select((eb) => eb.fn.countAll<number | string>().as("n"))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  describe("a correctly signed delivery", () => {
    it("turns an opened issue into a pending issue_triage item with the issue's fields", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const before = Date.now();
      const res = await deliver(t.url, {
        event: "issues",
        secret: repo.secret,
        payload: issuePayload(name, { number: 1347, title: "Found a bug", author: "octocat", labels: ["bug", "help wanted"] }),
      });
      const after = Date.now();
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ status: "created", todo_items: 1 });
      expect(res.headers.get("content-type")).toBe("application/json");
      expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);

      const [item, ...rest] = await items(repo.workspaceId);
      expect(rest).toEqual([]);
      expect(item).toMatchObject({
        type: TodoItemType.ISSUE_TRIAGE,
        source: TodoItemSource.AUTO,
        status: TodoItemStatus.PENDING,
        repositoryId: repo.id,
        workspaceId: repo.workspaceId,
        data: {
          case: "issueTriage",
          value: {
            issueUrl: `https://github.com/${name}/issues/1347`,
            issueTitle: "Found a bug",
            issueNumber: 1347,
            author: "octocat",
            labels: ["bug", "help wanted"],
          },
        },
      });
      const created = timestampDate(item!.createTime!).getTime();
      expect(created).toBeGreaterThanOrEqual(before);
      expect(created).toBeLessThanOrEqual(after);
      expect(item!.updateTime).toEqual(item!.createTime);
      expect((await todos.getTodoItem({ id: item!.id })).item).toEqual(item);
    });

    it("turns an opened pull request into a pr_review item with its branches", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const res = await deliver(t.url, {
        event: "pull_request",
        secret: repo.secret,
        payload: pullRequestPayload(name, { number: 12, title: "Add a feature", author: "hubot", head: "feature/x", base: "develop" }),
      });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ status: "created", todo_items: 1 });
      const [item, ...rest] = await items(repo.workspaceId);
      expect(rest).toEqual([]);
      expect(item).toMatchObject({
        type: TodoItemType.PR_REVIEW,
        source: TodoItemSource.AUTO,
        status: TodoItemStatus.PENDING,
        repositoryId: repo.id,
        workspaceId: repo.workspaceId,
        data: {
          case: "prReview",
          value: {
            prUrl: `https://github.com/${name}/pull/12`,
            prTitle: "Add a feature",
            prNumber: 12,
            author: "hubot",
            headBranch: "feature/x",
            baseBranch: "develop",
          },
        },
      });
      expect((await todos.getTodoItem({ id: item!.id })).item).toEqual(item);
    });

    it("matches the repository whatever the case of its stored URL, as GitHub ignores case in names", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name, remoteUrl: `https://github.com/${name.toUpperCase()}.git` });
      const res = await deliver(t.url, { event: "issues", secret: repo.secret, payload: issuePayload(name) });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ status: "created", todo_items: 1 });
      expect(await items(repo.workspaceId)).toHaveLength(1);
    });

    it("accepts application/json with a charset, and an issue without labels", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const payload = issuePayload(name);
      delete (payload.issue as Record<string, unknown>).labels;
      const res = await deliver(t.url, { event: "issues", secret: repo.secret, payload, contentType: "application/json; charset=utf-8" });
      expect(res.status).toBe(200);
      const [item] = await items(repo.workspaceId);
      expect(item?.data).toMatchObject({ case: "issueTriage", value: { labels: [] } });
    });

    it("stores text with control characters made harmless", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const res = await deliver(t.url, {
        event: "issues",
        secret: repo.secret,
        payload: issuePayload(name, {
          title: "nul\u0000and\nnewline \ud800 lone\u2028sep\u202eover\u0085nel\u2066iso",
          labels: ["a\u0007b", "c\u200fd"],
        }),
      });
      expect(res.status).toBe(200);
      const [item] = await items(repo.workspaceId);
      // Single-line text, as a title must be: no line or paragraph separators, C1 or bidi controls.
      expect(item?.data).toMatchObject({
        case: "issueTriage",
        value: { issueTitle: "nul and newline \ufffd lone sep over nel iso", labels: ["a b", "c d"] },
      });
    });

    it("answers a ping with 200 and creates nothing", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const res = await deliver(t.url, { event: "ping", secret: repo.secret, payload: pingPayload(name) });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ status: "pong" });
      expect(await items(repo.workspaceId)).toEqual([]);
    });

    it.each([
      ["issues", (n: string) => issuePayload(n, { action: "closed" })],
      ["issues", (n: string) => issuePayload(n, { action: "labeled" })],
      ["pull_request", (n: string) => pullRequestPayload(n, { action: "closed" })],
      ["pull_request", (n: string) => pullRequestPayload(n, { action: "synchronize" })],
      ["push", (n: string) => ({ ref: "refs/heads/main", repository: issuePayload(n).repository })],
      ["issue_comment", (n: string) => ({ ...issuePayload(n), action: "created", comment: { body: "hi" } })],
    ])("ignores %s events that open nothing (202), but records the delivery", async (event, payload) => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const first = await deliver(t.url, { event, secret: repo.secret, payload: payload(name) });
      expect(first.status).toBe(202);
      expect(first.body.status).toBe("ignored");
      expect(await items(repo.workspaceId)).toEqual([]);
      // Recorded: the same delivery id again is a duplicate.
      const again = await deliver(t.url, { event, secret: repo.secret, payload: payload(name), deliveryId: first.deliveryId });
      expect(again.status).toBe(200);
      expect(again.body).toEqual({ status: "duplicate" });
    });
  });

  describe("matching the repository", () => {
    it.each([
      ["the clone URL", (n: string) => `https://github.com/${n}.git`],
      ["the web URL", (n: string) => `https://github.com/${n}`],
      ["the web URL with a trailing slash", (n: string) => `https://github.com/${n}/`],
      ["the scp-like SSH URL", (n: string) => `git@github.com:${n}.git`],
      ["the SSH URL without .git", (n: string) => `git@github.com:${n}`],
      ["the git:// URL", (n: string) => `git://github.com/${n}.git`],
      // Spellings no payload field has: matched by the remote's canonical key.
      ["the ssh:// URL", (n: string) => `ssh://git@github.com/${n}.git`],
      ["the clone URL with the default port", (n: string) => `https://github.com:443/${n}.git`],
      ["the web URL in upper case", (n: string) => `HTTPS://GITHUB.COM/${n.toUpperCase()}`],
    ])("finds a repository added by %s", async (_label, remoteUrl) => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name, remoteUrl: remoteUrl(name) });
      const res = await deliver(t.url, { event: "issues", secret: repo.secret, payload: issuePayload(name) });
      expect(res.status).toBe(200);
      expect((await items(repo.workspaceId)).map((i) => i.repositoryId)).toEqual([repo.id]);
    });

    it("ignores a delivery for a repository nobody added (202), and records nothing", async () => {
      const name = freshName();
      const payload = issuePayload(name);
      const deliveryId = randomUUID();
      const before = { deliveries: await deliveryCount(), todos: await todoCount() };
      const res = await deliver(t.url, { event: "issues", secret: "any-secret", payload, deliveryId });
      expect(res.status).toBe(202);
      expect(res.body).toMatchObject({ status: "ignored" });
      expect({ deliveries: await deliveryCount(), todos: await todoCount() }).toEqual(before);

      // Nothing was recorded: once the repository is known, the same delivery id is handled.
      const repo = await local.githubRepository({ fullName: name, secret: "any-secret" });
      const later = await deliver(t.url, { event: "issues", secret: "any-secret", payload, deliveryId });
      expect(later.status).toBe(200);
      expect(await items(repo.workspaceId)).toHaveLength(1);
    });

    it("ignores a payload without a repository", async () => {
      const res = await deliver(t.url, { event: "issues", secret: "s", payload: { action: "opened", zen: "no repository" } });
      expect(res.status).toBe(202);
      expect(res.body.status).toBe("ignored");
    });

    it("creates one item per repository whose secret verifies, in each repository's workspace", async () => {
      const name = freshName();
      const shared = `shared-${randomUUID()}`;
      const a = await local.githubRepository({ fullName: name, secret: shared });
      const b = await local.githubRepository({ fullName: name, secret: shared, remoteUrl: `git@github.com:${name}.git` });
      const other = await local.githubRepository({ fullName: name, secret: `other-${randomUUID()}` });
      const res = await deliver(t.url, { event: "issues", secret: shared, payload: issuePayload(name) });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ status: "created", todo_items: 2 });
      expect((await items(a.workspaceId)).map((i) => i.repositoryId)).toEqual([a.id]);
      expect((await items(b.workspaceId)).map((i) => i.repositoryId)).toEqual([b.id]);
      expect(await items(other.workspaceId)).toEqual([]);

      // The third repository's own delivery (GitHub signs each hook with its own secret).
      const own = await deliver(t.url, { event: "issues", secret: other.secret, payload: issuePayload(name) });
      expect(own.body).toEqual({ status: "created", todo_items: 1 });
      expect((await items(other.workspaceId)).map((i) => i.repositoryId)).toEqual([other.id]);
      expect(await items(a.workspaceId)).toHaveLength(1);
    });
  });

  describe("signatures", () => {
    it("refuses a signature made with another secret (401) and stores nothing", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const payload = issuePayload(name);
      const deliveryId = randomUUID();
      const before = { deliveries: await deliveryCount(), todos: await todoCount() };
      const res = await deliver(t.url, { event: "issues", secret: "not-the-secret", payload, deliveryId });
      expect(res.status).toBe(401);
      expect(res.body.status).toBe("unauthorized");
      expect({ deliveries: await deliveryCount(), todos: await todoCount() }).toEqual(before);
      expect(await items(repo.workspaceId)).toEqual([]);

      // The refused delivery id was not recorded: the genuine delivery is still handled.
      const genuine = await deliver(t.url, { event: "issues", secret: repo.secret, payload, deliveryId });
      expect(genuine.status).toBe(200);
      expect(await items(repo.workspaceId)).toHaveLength(1);
    });

    it("refuses a signature of other bytes than the body sent", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const payload = issuePayload(name);
      const res = await deliver(t.url, {
        event: "issues",
        payload,
        // Signed, then re-serialised differently: the signature covers the raw bytes.
        signature: sign(repo.secret, JSON.stringify(payload)),
        rawBody: JSON.stringify(payload, null, 2),
      });
      expect(res.status).toBe(401);
      expect(await items(repo.workspaceId)).toEqual([]);
    });

    it.each([
      ["missing", undefined],
      ["empty", ""],
      ["sha1", "sha1=" + "0".repeat(40)],
      ["not hex", "sha256=" + "z".repeat(64)],
      ["too short", "sha256=abcdef"],
      ["without the prefix", "0".repeat(64)],
    ])("refuses a %s signature (401) and stores nothing", async (_label, signature) => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const before = { deliveries: await deliveryCount(), todos: await todoCount() };
      const res = await deliver(t.url, {
        event: "issues",
        payload: issuePayload(name),
        ...(signature === undefined ? {} : { signature }),
      });
      expect(res.status).toBe(401);
      expect(res.body.status).toBe("unauthorized");
      expect({ deliveries: await deliveryCount(), todos: await todoCount() }).toEqual(before);
      expect(await items(repo.workspaceId)).toEqual([]);
    });

    it("never accepts a delivery for a repository without a webhook secret", async () => {
      const name = freshName();
      const { id: ws } = await local.workspace();
      const repo = await local.repository(ws, `https://github.com/${name}.git`);
      expect(repo.hasWebhookSecret).toBe(false);
      for (const secret of ["", "anything"]) {
        const res = await deliver(t.url, { event: "issues", secret, payload: issuePayload(name) });
        expect(res.status).toBe(401);
      }
      expect(await items(ws)).toEqual([]);
    });

    it("accepts an upper-case hex signature", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const payload = issuePayload(name);
      const signature = `sha256=${sign(repo.secret, JSON.stringify(payload)).slice("sha256=".length).toUpperCase()}`;
      const res = await deliver(t.url, { event: "issues", payload, signature });
      expect(res.status).toBe(200);
    });
  });

  describe("replayed deliveries", () => {
    it("creates nothing the second time a delivery id arrives", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const payload = issuePayload(name);
      const first = await deliver(t.url, { event: "issues", secret: repo.secret, payload });
      expect(first.body).toEqual({ status: "created", todo_items: 1 });
      const second = await deliver(t.url, { event: "issues", secret: repo.secret, payload, deliveryId: first.deliveryId });
      expect(second.status).toBe(200);
      expect(second.body).toEqual({ status: "duplicate" });
      expect(await items(repo.workspaceId)).toHaveLength(1);

      // A new delivery id for the same event is a new delivery.
      const third = await deliver(t.url, { event: "issues", secret: repo.secret, payload });
      expect(third.body).toEqual({ status: "created", todo_items: 1 });
      expect(await items(repo.workspaceId)).toHaveLength(2);
    });

    it("creates exactly one item when the same delivery arrives five times at once", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const payload = pullRequestPayload(name);
      const deliveryId = randomUUID();
      const results = await Promise.all(
        Array.from({ length: 5 }, () => deliver(t.url, { event: "pull_request", secret: repo.secret, payload, deliveryId })),
      );
      expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
      const statuses = results.map((r) => r.body.status).sort();
      expect(statuses).toEqual(["created", "duplicate", "duplicate", "duplicate", "duplicate"]);
      expect(await items(repo.workspaceId)).toHaveLength(1);
    });
  });

  describe("malformed requests", () => {
    it("refuses malformed JSON (400) even with a valid signature, and stores nothing", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const before = { deliveries: await deliveryCount(), todos: await todoCount() };
      for (const rawBody of ['{"action": "opened", "repository": ', "[1, 2, 3]", "null", ""]) {
        const res = await deliver(t.url, { event: "issues", payload: null, rawBody, signature: sign(repo.secret, rawBody) });
        expect(res.status, rawBody).toBe(400);
        expect(res.body.status).toBe("bad_request");
      }
      expect({ deliveries: await deliveryCount(), todos: await todoCount() }).toEqual(before);
    });

    it("refuses an opened issue or pull request that lacks its fields (400), and stores nothing", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const noNumber = issuePayload(name);
      delete (noNumber.issue as Record<string, unknown>).number;
      const badUrl = issuePayload(name);
      (badUrl.issue as Record<string, unknown>).html_url = "javascript:alert(1)";
      const noHead = pullRequestPayload(name);
      delete (noHead.pull_request as Record<string, unknown>).head;
      const before = { deliveries: await deliveryCount(), todos: await todoCount() };
      for (const [event, payload, field] of [
        ["issues", noNumber, "issue.number"],
        ["issues", badUrl, "issue.html_url"],
        ["pull_request", noHead, "pull_request.head"],
      ] as const) {
        const res = await deliver(t.url, { event, secret: repo.secret, payload });
        expect(res.status).toBe(400);
        expect(res.body.message).toContain(field);
      }
      expect({ deliveries: await deliveryCount(), todos: await todoCount() }).toEqual(before);
    });

    it("refuses a body over FOREMAN_MAX_MESSAGE_BYTES (413), declared or streamed", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const payload = { ...issuePayload(name), padding: "x".repeat(MAX_BYTES) };
      const before = { deliveries: await deliveryCount(), todos: await todoCount() };
      const declared = await deliver(t.url, { event: "issues", secret: repo.secret, payload });
      expect(declared.status).toBe(413);
      expect(declared.body.status).toBe("payload too large");

      // Chunked, without a Content-Length: refused once the bytes read pass the limit.
      const body = JSON.stringify(payload);
      const chunks = [body.slice(0, 40_000), body.slice(40_000)];
      const streamed = await fetch(`${t.url}/webhooks/github`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-github-event": "issues",
          "x-github-delivery": randomUUID(),
          "x-hub-signature-256": sign(repo.secret, body),
        },
        body: new ReadableStream({
          start(controller) {
            for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
            controller.close();
          },
        }),
        duplex: "half",
      } as RequestInit);
      expect(streamed.status).toBe(413);
      await streamed.text();
      expect({ deliveries: await deliveryCount(), todos: await todoCount() }).toEqual(before);

      // Just under the limit is accepted.
      const fits = { ...issuePayload(name) };
      const room = MAX_BYTES - Buffer.byteLength(JSON.stringify({ ...fits, padding: "" }));
      const exact = await deliver(t.url, { event: "issues", secret: repo.secret, payload: { ...fits, padding: "x".repeat(room) } });
      expect(exact.status).toBe(200);
    });

    it("refuses another content type (415) and another method (405)", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const payload = issuePayload(name);
      for (const contentType of ["application/x-www-form-urlencoded", "text/plain"]) {
        const res = await deliver(t.url, { event: "issues", secret: repo.secret, payload, contentType });
        expect(res.status).toBe(415);
      }
      const noType = await fetch(`${t.url}/webhooks/github`, { method: "POST", body: new Uint8Array([123, 125]) });
      expect(noType.status).toBe(415);
      await noType.text();
      for (const method of ["GET", "PUT", "DELETE"]) {
        const res = await deliver(t.url, { event: "issues", secret: repo.secret, payload, method });
        expect(res.status).toBe(405);
        expect(res.headers.get("allow")).toBe("POST");
      }
      expect(await items(repo.workspaceId)).toEqual([]);
    });

    it("refuses a delivery without an event or delivery id (400)", async () => {
      const name = freshName();
      const repo = await local.githubRepository({ fullName: name });
      const payload = issuePayload(name);
      for (const omit of ["x-github-event", "x-github-delivery"]) {
        const res = await deliver(t.url, { event: "issues", secret: repo.secret, payload, omit: [omit] });
        expect(res.status).toBe(400);
      }
      const badId = await deliver(t.url, { event: "issues", secret: repo.secret, payload, deliveryId: "a b" });
      expect(badId.status).toBe(400);
      expect(await items(repo.workspaceId)).toEqual([]);
    });

    it("still serves Connect and /healthz beside the webhook", async () => {
      const health = await fetch(`${t.url}/healthz`);
      expect(health.status).toBe(200);
      await health.text();
      const res = await fetch(`${t.url}/webhooks/github?source=github`, { method: "GET" });
      expect(res.status).toBe(405);
      await res.text();
      const other = await fetch(`${t.url}/webhooks/gitlab`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      expect(other.status).toBe(404);
      await other.text();
    });
  });
});

describe.each(DIALECTS)("webhook logs on %s", (dialect) => {
  let server: TestServer;
  const lines: string[] = [];

  beforeAll(async () => {
    server = await startTestServer(dialect, {}, undefined, { logLines: lines });
  });

  afterAll(async () => {
    await server?.close();
  });

  it("logs each delivery's event, id, repositories and outcome, never the secret or signature", async () => {
    const name = `acme/logged-${randomUUID().slice(0, 8)}`;
    const secret = `logged-secret-${randomUUID()}`;
    const { repository } = await caller(server).githubRepository({ fullName: name, secret });
    const payload = issuePayload(name);
    const good = await deliver(server.url, { event: "issues", secret, payload });
    const bad = await deliver(server.url, { event: "issues", secret: "wrong-secret-value", payload });
    expect([good.status, bad.status]).toEqual([200, 401]);

    const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((e) => e.msg === "webhook delivery");
    const byId = (id: string) => entries.find((e) => e.delivery_id === id);
    expect(byId(good.deliveryId)).toMatchObject({
      level: 30,
      event: "issues",
      outcome: "created",
      http_status: 200,
      repository_ids: [repository.id],
    });
    expect(byId(bad.deliveryId)).toMatchObject({ level: 30, event: "issues", outcome: "unauthorized", http_status: 401 });
    const text = lines.join("");
    const body = JSON.stringify(payload);
    for (const hidden of [secret, sign(secret, body).slice(7), sign("wrong-secret-value", body).slice(7)]) {
      expect(text).not.toContain(hidden);
    }
  });

  it("logs X-GitHub-Event and X-GitHub-Delivery only when they have GitHub's form, never as sent", async () => {
    const marker = `hostile-${randomUUID()}`;
    const event = `${marker} "},{"level":60,"msg":"forged ${"x".repeat(5000)}`;
    const deliveryId = `${marker}-id ../../etc/passwd \u00e9\u0085`;
    const before = lines.length;
    const first = await deliver(server.url, { event, payload: {}, secret: "any-secret-value" });
    const second = await deliver(server.url, { event: "issues", deliveryId, payload: {}, secret: "any-secret-value" });
    const third = await deliver(server.url, { event: "x".repeat(101), deliveryId: "d".repeat(201), payload: {}, secret: "any-secret-value" });
    expect([first.status, second.status, third.status]).toEqual([400, 400, 400]);

    const logged = lines.slice(before);
    const entries = logged.map((line) => JSON.parse(line) as Record<string, unknown>).filter((e) => e.msg === "webhook delivery");
    expect(entries).toHaveLength(3);
    expect(entries[0]).toMatchObject({ event: "(invalid)", delivery_id: first.deliveryId, outcome: "bad_request" });
    expect(entries[1]).toMatchObject({ event: "issues", delivery_id: "(invalid)", outcome: "bad_request" });
    expect(entries[2]).toMatchObject({ event: "(invalid)", delivery_id: "(invalid)" });
    const text = logged.join("");
    expect(text).not.toContain(marker);
    expect(text).not.toContain("x".repeat(101));
    expect(text).not.toContain("d".repeat(201));
    for (const line of logged) expect(line.length).toBeLessThan(1000);
  });
});
