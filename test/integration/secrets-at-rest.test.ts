// Webhook secrets at rest, on the real server in process and both databases: the row holds a
// sealed value (read from the table directly), deliveries still verify, single-user mode makes
// and keeps its key in the data folder, a key the server lacks is a clear error at use (not a
// crash), a rotation opens old ciphertexts and seals with the new key, and a database from
// before sealing (a clear secret) keeps its webhook working after the upgrade.
import { randomBytes, randomUUID } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { Migrator } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { migrations } from "../../migrations/index.js";
import { keyId } from "../../src/auth/secret-box.js";
import { openDatabase } from "../../src/db/database.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";
import { caller } from "../helpers/fixtures.js";
import { deliver, issuePayload } from "../helpers/github.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const SEALED = /^v1:([0-9a-f]{12}):[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]{22,}$/;

describe.each(DIALECTS)("webhook secrets at rest on %s", (dialect) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function database(): Promise<TestDatabase> {
    const made = await createTestDatabase(dialect);
    cleanups.push(() => made.drop());
    return made;
  }

  /** A server on the database (which outlives it), with FOREMAN_SECRET_KEY and the previous keys if given. */
  async function serve(on: TestDatabase, keys: { key?: Buffer; previous?: Buffer[] } = {}, logLines?: string[]): Promise<TestServer> {
    const env: Record<string, string> = {};
    if (keys.key !== undefined) env.FOREMAN_SECRET_KEY = keys.key.toString("base64");
    if (keys.previous !== undefined) env.FOREMAN_SECRET_KEYS_PREVIOUS = keys.previous.map((k) => k.toString("hex")).join(",");
    const t = await startTestServer(dialect, env, on, logLines === undefined ? {} : { logLines });
    // On a shared database close() stops the server only; a second close() does nothing.
    cleanups.push(() => t.close());
    return t;
  }

  async function storedSecret(t: TestServer, repositoryId: string): Promise<string | null> {
    const row = await t.server.db.kysely.selectFrom("repositories").select("webhook_secret").where("id", "=", repositoryId).executeTakeFirstOrThrow();
    return row.webhook_secret;
  }

  /** An opened-issue delivery for the repository, signed with the secret. */
  function issueOpened(t: TestServer, fullName: string, secret: string) {
    return deliver(t.url, { event: "issues", secret, payload: issuePayload(fullName, { number: 1, title: "t", author: "a", labels: [] }) });
  }

  it("stores a sealed secret, never the secret, and the webhook still verifies with it", async () => {
    const key = randomBytes(32);
    const t = await serve(await database(), { key });
    const repo = await caller(t).githubRepository();
    const stored = await storedSecret(t, repo.id);
    expect(stored).toMatch(SEALED);
    expect(SEALED.exec(stored!)![1]).toBe(keyId(key));
    expect(stored).not.toContain(repo.secret);
    expect(stored).not.toContain(Buffer.from(repo.secret).toString("base64"));
    expect(stored).not.toContain(Buffer.from(repo.secret).toString("base64url"));
    expect(repo.repository.hasWebhookSecret).toBe(true);

    expect((await issueOpened(t, repo.fullName, repo.secret)).body).toEqual({ status: "created", todo_items: 1 });
    expect((await issueOpened(t, repo.fullName, "another secret")).status).toBe(401);
  });

  it("refuses a sealed secret moved to another repository's row (it is bound to its own)", async () => {
    const t = await serve(await database(), { key: randomBytes(32) });
    const first = await caller(t).githubRepository();
    const second = await caller(t).githubRepository();
    await t.server.db.kysely.updateTable("repositories").set({ webhook_secret: await storedSecret(t, first.id) }).where("id", "=", second.id).execute();
    const res = await issueOpened(t, second.fullName, first.secret);
    expect(res.status).toBe(500);
    expect(res.body.message).toContain(`repository ${second.id}`);
    expect(res.body.message).toContain("altered or belongs to another record");
    // The first repository's own webhook is untouched.
    expect((await issueOpened(t, first.fullName, first.secret)).status).toBe(200);
  });

  it("in single-user mode without FOREMAN_SECRET_KEY makes a key file (mode 0600) in the data folder and keeps using it", async () => {
    const db = await database();
    const lines: string[] = [];
    const first = await serve(db, {}, lines);
    const file = path.join(db.dataDir, "secret.key");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const key = Buffer.from((await readFile(file, "utf8")).trim(), "base64");
    expect(key).toHaveLength(32);
    const made = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg?.toString().startsWith("made a secret key"));
    expect(made).toMatchObject({ key_file: file, key_id: keyId(key) });
    expect(lines.join("")).not.toContain(key.toString("base64"));

    const repo = await caller(first).githubRepository();
    expect(SEALED.exec((await storedSecret(first, repo.id))!)![1]).toBe(keyId(key));
    await first.close();

    const second = await serve(db);
    expect(Buffer.from((await readFile(file, "utf8")).trim(), "base64")).toEqual(key);
    expect((await issueOpened(second, repo.fullName, repo.secret)).status).toBe(200);
  });

  it("answers a delivery whose secret no configured key opens with a clear 500, and keeps serving", async () => {
    const db = await database();
    const right = randomBytes(32);
    const first = await serve(db, { key: right });
    const repo = await caller(first).githubRepository();
    await first.close();

    const lines: string[] = [];
    const wrong = randomBytes(32);
    const t = await serve(db, { key: wrong }, lines);
    const res = await issueOpened(t, repo.fullName, repo.secret);
    expect(res.status).toBe(500);
    expect(res.body.status).toBe("secret_unreadable");
    expect(res.body.message).toContain(`cannot decrypt the webhook secret of repository ${repo.id}`);
    expect(res.body.message).toContain(`sealed with key ${keyId(right)}`);
    expect(res.body.message).toContain(`FOREMAN_SECRET_KEY (key ${keyId(wrong)})`);
    // Served on: the API answers, the row is as it was, and the start-up said what was wrong.
    expect((await t.workspaces.listWorkspaces({})).workspaces.length).toBeGreaterThan(0);
    expect(SEALED.exec((await storedSecret(t, repo.id))!)![1]).toBe(keyId(right));
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logged.find((l) => String(l.msg).startsWith("stored webhook secrets that no configured key opens"))).toMatchObject({ level: 50, unreadable: 1 });
    expect(logged.find((l) => l.msg === "webhook delivery" && l.http_status === 500)).toMatchObject({ level: 50, outcome: "secret_unreadable" });
    const text = lines.join("");
    for (const secret of [repo.secret, right.toString("base64"), wrong.toString("base64"), right.toString("hex")]) expect(text).not.toContain(secret);
  });

  it("rotates: with the old key among the previous ones a start re-seals under the new key, which then serves alone", async () => {
    const db = await database();
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const before = await serve(db, { key: oldKey });
    const repos = await Promise.all([caller(before).githubRepository(), caller(before).githubRepository()]);
    await before.close();

    const lines: string[] = [];
    const rotating = await serve(db, { key: newKey, previous: [oldKey] }, lines);
    for (const repo of repos) {
      expect(SEALED.exec((await storedSecret(rotating, repo.id))!)![1]).toBe(keyId(newKey));
      expect((await issueOpened(rotating, repo.fullName, repo.secret)).status).toBe(200);
    }
    const resealed = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l.msg).startsWith("stored webhook secrets sealed"));
    expect(resealed).toMatchObject({ resealed: 2, key_id: keyId(newKey) });
    // A new secret is sealed with the new key.
    const added = await caller(rotating).githubRepository();
    expect(SEALED.exec((await storedSecret(rotating, added.id))!)![1]).toBe(keyId(newKey));
    await rotating.close();

    const after = await serve(db, { key: newKey });
    for (const repo of [...repos, added]) expect((await issueOpened(after, repo.fullName, repo.secret)).status).toBe(200);
  });

  it("keeps the webhook of a database from before sealing working: its clear secret is marked, then sealed at start", async () => {
    const db = await database();
    // The schema as the version before this one left it, with a repository whose secret is in clear.
    const fullName = `acme/old-${randomUUID().slice(0, 8)}`;
    const secret = `clear-${randomUUID()}`;
    const raw = openDatabase({ databaseUrl: db.databaseUrl, sqlitePath: path.join(db.dataDir, "foreman.db"), poolSize: 1 });
    let repositoryId: string;
    try {
      const migrated = await new Migrator({ db: raw.kysely, provider: { getMigrations: async () => migrations(dialect) } }).migrateTo("0003_lookup_indexes");
      expect(migrated.error).toBeUndefined();
      const now = new Date().toISOString();
      const owner = randomUUID();
      await raw.kysely.insertInto("users").values({ id: owner, issuer: "https://old.example", subject: owner, email: null, name: null, created_at: now, updated_at: now }).execute();
      const workspace = randomUUID();
      await raw.kysely.insertInto("workspaces").values({ id: workspace, owner_id: owner, name: "old", description: "", created_at: now, updated_at: now }).execute();
      repositoryId = randomUUID();
      await raw.kysely
        .insertInto("repositories")
        .values({
          id: repositoryId,
          owner_id: owner,
          workspace_id: workspace,
          name: "old",
          remote_url: `https://github.com/${fullName}.git`,
          default_branch: "main",
          vcs_provider_type: "github",
          webhook_secret: secret,
          created_at: now,
          updated_at: now,
        })
        .execute();
    } finally {
      await raw.close();
    }

    const key = randomBytes(32);
    const t = await serve(db, { key });
    const stored = await storedSecret(t, repositoryId);
    expect(stored).toMatch(SEALED);
    expect(SEALED.exec(stored!)![1]).toBe(keyId(key));
    expect(stored).not.toContain(secret);
    expect((await issueOpened(t, fullName, secret)).body).toEqual({ status: "created", todo_items: 1 });

    // A replica still on the old version may write a clear secret after the migration ran: read as it is.
    const late = `late-${randomUUID()}`;
    await t.server.db.kysely.updateTable("repositories").set({ webhook_secret: late }).where("id", "=", repositoryId).execute();
    expect((await issueOpened(t, fullName, late)).status).toBe(200);
  });
});
