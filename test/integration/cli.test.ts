// The foreman command as a real process: `serve` starts, answers, and shuts down cleanly on
// SIGTERM and SIGINT; a bad configuration stops it with exit code 2 naming the variable;
// `migrate` prepares SQLite and PostgreSQL; an unknown command prints the usage; every verb's
// --help prints its help and does nothing else, and an unknown option or a stray argument is
// exit 2 naming it.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import http from "node:http";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import { migrations } from "../../migrations/index.js";
import { servingSentence } from "../../src/cli/serve.js";
import { AuthService } from "../../gen/foreman/v1/auth_pb.js";
import { createTestDatabase, runsOn, type TestDatabase } from "../helpers/databases.js";
import { REDIRECT_URI, authorize, clientWith, startMultiUserServer, startOidcProvider } from "../helpers/oidc.js";
import { expectCode } from "../helpers/rpc-errors.js";

const ALL_MIGRATIONS = Object.keys(migrations("sqlite"));

const ROOT = path.resolve(import.meta.dirname, "../..");
const CLI = ["--import", "tsx", "src/cli/main.ts"];
/** Generous: tsx compiles on start, and the machine may be busy. */
const PROCESS_TIMEOUT_MS = 60_000;

interface LogLine {
  msg?: string;
  level?: number;
  [key: string]: unknown;
}

interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout's JSON log lines. */
  logs: LogLine[];
}

const children = new Set<ChildProcess>();
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  children.clear();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The environment without any foreman setting of the machine running the tests, plus env. */
function cliEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith("FOREMAN_") && key !== "DATABASE_URL"),
  );
  return { ...base, ...env };
}

async function dataDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "foreman-cli-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function testDatabase(dialect: "sqlite" | "postgres"): Promise<TestDatabase> {
  const database = await createTestDatabase(dialect);
  cleanups.push(() => database.drop());
  return database;
}

function parseLogs(stdout: string): LogLine[] {
  return stdout
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as LogLine);
}

interface Running {
  child: ChildProcess;
  exited: Promise<Exited>;
  stdout(): string;
}

/** nodeArgs: flags for node itself, before the CLI's script. */
function start(args: string[], env: Record<string, string>, nodeArgs: string[] = []): Running {
  const child = spawn(process.execPath, [...nodeArgs, ...CLI, ...args], {
    cwd: ROOT,
    env: cliEnv(env),
    stdio: ["ignore", "pipe", "pipe"],
    timeout: PROCESS_TIMEOUT_MS,
  });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exited = new Promise<Exited>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr, logs: parseLogs(stdout) }));
  });
  return { child, exited, stdout: () => stdout };
}

function run(args: string[], env: Record<string, string>): Promise<Exited> {
  return start(args, env).exited;
}

interface Served extends Running {
  url: string;
}

/** Starts `foreman serve` and waits for its "foreman serving" line. */
async function serve(env: Record<string, string>): Promise<Served> {
  const running = start(["serve"], { FOREMAN_PORT: "0", ...env });
  const url = await new Promise<string>((resolve, reject) => {
    const look = () => {
      const out = running.stdout();
      const complete = out.slice(0, out.lastIndexOf("\n") + 1);
      const line = parseLogs(complete).find((l) => l.msg === "foreman serving");
      if (line !== undefined) {
        running.child.stdout!.off("data", look);
        resolve(String(line.url));
      }
    };
    running.child.stdout!.on("data", look);
    void running.exited.then((e) =>
      reject(new Error(`foreman serve exited (${e.code ?? e.signal}) before serving:\n${e.stdout}\n${e.stderr}`)),
    );
  });
  return { ...running, url };
}

async function healthz(url: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${url}/healthz`);
  return { status: res.status, body: await res.json() };
}

describe("foreman serve", () => {
  it.each(["SIGTERM", "SIGINT"] as const)("serves, then on %s logs 'shut down' and exits 0", async (signal) => {
    const dir = await dataDir();
    const server = await serve({ FOREMAN_DATA_DIR: dir });
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await healthz(server.url)).toEqual({ status: 200, body: { status: "ok" } });

    server.child.kill(signal);
    const exited = await server.exited;
    expect(exited.signal).toBeNull();
    expect(exited.code).toBe(0);
    const messages = exited.logs.map((l) => l.msg);
    expect(messages).toContain("shut down");
    expect(exited.logs.find((l) => l.msg === "signal received")?.signal).toBe(signal);
    expect(messages.indexOf("shut down")).toBe(messages.length - 1);
    // Not on a terminal: JSON lines only, no sentence for a person.
    expect(exited.stdout.trimEnd().split("\n").filter((line) => !line.startsWith("{"))).toEqual([]);
    expect(exited.stderr).toBe("");
    // The listener is gone with the process.
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
  });

  // script(1) runs the server on a pseudo-terminal, as a person's shell would.
  it.runIf(existsSync("/usr/bin/script"))("on a terminal, also says in a sentence where it serves, in which mode, and what to try", async () => {
    const dir = await dataDir();
    const command = `exec '${process.execPath}' ${CLI.join(" ")} serve`;
    const child = spawn("script", ["-qec", command, "/dev/null"], {
      cwd: ROOT,
      env: cliEnv({ FOREMAN_DATA_DIR: dir, FOREMAN_PORT: "0" }),
      stdio: ["ignore", "pipe", "pipe"],
      timeout: PROCESS_TIMEOUT_MS,
    });
    children.add(child);
    let output = "";
    const sentence = await new Promise<string>((resolve, reject) => {
      child.stdout!.setEncoding("utf8").on("data", (d: string) => {
        output += d;
        const line = output.split("\r\n").find((l) => l.startsWith("Foreman is serving") && l.includes("list-services http"));
        if (line !== undefined && /\d$/.test(line)) resolve(line);
      });
      child.once("close", () => reject(new Error(`script exited before the sentence:\n${output}`)));
    });
    const url = /^Foreman is serving (http:\/\/127\.0\.0\.1:\d+) /.exec(sentence)![1]!;
    expect(sentence).toBe(
      `Foreman is serving ${url} in single-user mode (no login), with its SQLite database in ${dir} and 2 local workers; Ctrl-C stops it. ` +
        `Try: npx buf curl --http2-prior-knowledge --list-services ${url}`,
    );
    // The JSON lines stay, before it.
    const lines = output.split("\r\n");
    expect(lines.findIndex((l) => l.includes('"msg":"foreman serving"'))).toBeLessThan(lines.indexOf(sentence));
    expect((await healthz(url)).status).toBe(200);
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("close", resolve));
    // script(1) ended the server with itself.
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });

  it("words the sentence for each mode, without DATABASE_URL's password", () => {
    const single = { host: "127.0.0.1", singleUserMode: true, databaseUrl: undefined, dataDir: "/srv/foreman", localWorkers: 2 };
    expect(servingSentence("http://127.0.0.1:54871", single)).toBe(
      "Foreman is serving http://127.0.0.1:54871 in single-user mode (no login), with its SQLite database in /srv/foreman and 2 local workers; " +
        "Ctrl-C stops it. Try: npx buf curl --http2-prior-knowledge --list-services http://127.0.0.1:54871",
    );
    expect(servingSentence("http://127.0.0.1:54871", { ...single, localWorkers: 1 })).toContain("and 1 local worker;");
    expect(servingSentence("http://127.0.0.1:54871", { ...single, localWorkers: 0 })).toContain("in /srv/foreman; Ctrl-C");
    const multi = { host: "0.0.0.0", singleUserMode: false, databaseUrl: "postgres://foreman:hunter2@db/foreman", dataDir: "/data", localWorkers: 0 };
    expect(servingSentence("http://127.0.0.1:8080", multi)).toBe(
      "Foreman is serving http://127.0.0.1:8080 (listening on every address) in multi-user mode (OpenID Connect login), " +
        "with PostgreSQL (DATABASE_URL); Ctrl-C stops it. Most calls need a login (foreman login); this one does not: " +
        "npx buf curl --http2-prior-knowledge --list-services http://127.0.0.1:8080",
    );
  });

  it("keeps what it stored across a restart on the same data folder", async () => {
    const dir = await dataDir();
    const first = await serve({ FOREMAN_DATA_DIR: dir });
    const client = (url: string) => createClient(WorkspaceService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
    const { workspace } = await client(first.url).createWorkspace({ name: "survives restarts" });
    first.child.kill("SIGTERM");
    expect((await first.exited).code).toBe(0);
    expect(existsSync(path.join(dir, "foreman.db"))).toBe(true);

    const second = await serve({ FOREMAN_DATA_DIR: dir });
    const listed = await client(second.url).listWorkspaces({});
    expect(listed.workspaces.map((w) => w.id)).toEqual([workspace!.id]);
    // Already migrated: the second start has nothing to migrate.
    second.child.kill("SIGTERM");
    const exited = await second.exited;
    expect(exited.code).toBe(0);
    expect(exited.logs.some((l) => l.msg === "database migrated")).toBe(false);
  });

  it.runIf(runsOn("postgres"))("serves PostgreSQL when DATABASE_URL is set", async () => {
    const database = await testDatabase("postgres");
    const server = await serve({
      FOREMAN_DATA_DIR: database.dataDir,
      DATABASE_URL: database.databaseUrl!,
      FOREMAN_SINGLE_USER_MODE: "true",
    });
    const serving = parseLogs(server.stdout()).find((l) => l.msg === "foreman serving");
    expect(serving?.database).toBe("postgres");
    expect(await healthz(server.url)).toEqual({ status: 200, body: { status: "ok" } });
    server.child.kill("SIGTERM");
    expect((await server.exited).code).toBe(0);
  });

  it("exits 1 naming the address when the port is taken", async () => {
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => busy.close(() => resolve())));
    const port = (busy.address() as net.AddressInfo).port;
    const exited = await run(["serve"], { FOREMAN_DATA_DIR: await dataDir(), FOREMAN_PORT: String(port) });
    expect(exited.code).toBe(1);
    expect(exited.stderr).toContain("EADDRINUSE");
    expect(exited.stderr).toContain(String(port));
    expect(exited.stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe("foreman worker-token", () => {
  it("creates, lists and revokes a token on a running single-user server", async () => {
    const server = await serve({ FOREMAN_DATA_DIR: await dataDir() });
    const env = { FOREMAN_URL: server.url };
    const created = await run(["worker-token", "create", "--name", "build box", "--ttl", "3600"], env);
    expect(created.stderr).toBe("");
    expect(created.code).toBe(0);
    const id = /^id\s+(\S+)$/m.exec(created.stdout)?.[1];
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.stdout).toMatch(/^secret\s+fwr_\S{43}$/m);

    const listed = await run(["worker-token", "list"], env);
    expect(listed.code).toBe(0);
    const row = listed.stdout.split("\n").find((line) => line.startsWith(id!));
    expect(row?.split("\t")[1]).toBe("build box");
    expect(listed.stdout).not.toContain("fwr_");

    expect((await run(["worker-token", "revoke", id!], env)).code).toBe(0);
    const again = await run(["worker-token", "list"], env);
    const revokedAt = again.stdout.split("\n").find((line) => line.startsWith(id!))?.split("\t")[4];
    expect(revokedAt).toMatch(/^\d{4}-\d\d-\d\dT/);

    const unknown = await run(["worker-token", "revoke", "01a21f1e-3439-776e-b248-5c047d7266bf"], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim()).toBe("foreman worker-token revoke: NotFound: worker registration token 01a21f1e-3439-776e-b248-5c047d7266bf not found");
    server.child.kill("SIGTERM");
    await server.exited;
  });

  it("says what is wrong with its arguments and exits 2", async () => {
    for (const args of [["create"], ["create", "--name", "x", "--ttl", "soon"], ["revoke"], ["frobnicate"], ["create", "--bogus"]]) {
      const exited = await run(["worker-token", ...args], { FOREMAN_URL: "http://127.0.0.1:9" });
      expect(exited.code).toBe(2);
      expect(exited.stderr).toContain("Usage: foreman worker-token");
    }
  });

  it("exits 1 with one line when the server cannot be reached", async () => {
    const exited = await run(["worker-token", "list"], { FOREMAN_URL: "http://127.0.0.1:9" });
    expect(exited.code).toBe(1);
    expect(exited.stderr.trim().split("\n")).toHaveLength(1);
    expect(exited.stderr).toContain("Unavailable");
  });
});

describe("foreman login, whoami and logout against a multi-user server", () => {
  /** A port free now, for the CLI's loopback redirect. */
  async function freePort(): Promise<number> {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    return port;
  }

  it("logs in through the browser redirect, keeps and refreshes the login, and logs out", async () => {
    const provider = await startOidcProvider();
    cleanups.push(() => provider.close());
    const port = await freePort();
    const server = await startMultiUserServer("sqlite", provider, {
      FOREMAN_OIDC_REDIRECT_URIS: `${REDIRECT_URI},http://127.0.0.1:${port}/callback`,
    });
    cleanups.push(() => server.close());
    const credentials = path.join(await dataDir(), "nested", "credentials.json");
    const env = { FOREMAN_URL: server.url, FOREMAN_CREDENTIALS: credentials };
    provider.identity = { sub: "cli-user", email: "cli@example.com", name: "CLI User" };

    const loggingIn = start(["login", "--port", String(port)], env);
    // The CLI prints the provider's address; a browser would open it and follow the redirect back.
    const loginUrl = await new Promise<string>((resolve, reject) => {
      const look = () => {
        const line = loggingIn.stdout().split("\n").find((l) => l.startsWith("http") && l.includes("code_challenge="));
        if (line !== undefined) resolve(line.trim());
      };
      loggingIn.child.stdout!.on("data", look);
      void loggingIn.exited.then((e) => reject(new Error(`foreman login exited early: ${e.stdout}${e.stderr}`)));
    });
    // The address is printed only once the CLI listens for the redirect: a fast browser is not refused.
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.destroy();
        resolve();
      });
      socket.once("error", reject);
    });
    const { redirectedTo } = await authorize(loginUrl);
    expect(redirectedTo.origin).toBe(`http://127.0.0.1:${port}`);
    const page = await fetch(redirectedTo);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("Logged in to Foreman as cli@example.com");
    const loggedIn = await loggingIn.exited;
    expect(loggedIn.stderr).toBe("");
    expect(loggedIn.code).toBe(0);
    expect(loggedIn.stdout).toContain("Logged in as cli@example.com");

    // Kept for this server only, readable by the user alone.
    expect((await stat(credentials)).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(await readFile(credentials, "utf8")) as Record<string, { refreshToken: string; accessTokenExpireTime: string }>;
    expect(Object.keys(stored)).toEqual([server.url]);

    const who = await run(["whoami"], env);
    expect(who.code).toBe(0);
    expect(who.stdout).toMatch(/^cli@example\.com \([0-9a-f-]{36}\) via http/);
    const created = await run(["worker-token", "create", "--name", "from the cli"], env);
    expect(created.code).toBe(0);
    expect(created.stdout).toMatch(/^secret\s+fwr_/m);

    // An access token about to expire is refreshed first, and the new tokens are kept.
    stored[server.url]!.accessTokenExpireTime = new Date(Date.now() - 1000).toISOString();
    await writeFile(credentials, JSON.stringify(stored));
    expect((await run(["whoami"], env)).code).toBe(0);
    const refreshed = JSON.parse(await readFile(credentials, "utf8")) as typeof stored;
    expect(refreshed[server.url]!.refreshToken).not.toBe(stored[server.url]!.refreshToken);
    expect(Date.parse(refreshed[server.url]!.accessTokenExpireTime)).toBeGreaterThan(Date.now());

    const out = await run(["logout"], env);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain(`Logged out of ${server.url}`);
    expect(JSON.parse(await readFile(credentials, "utf8"))).toEqual({});
    // The server ended the login: its refresh token no longer works.
    await expectCode(clientWith(server, AuthService, undefined).refreshToken({ refreshToken: refreshed[server.url]!.refreshToken }), Code.Unauthenticated);
    const after = await run(["whoami"], env);
    expect(after.code).toBe(1);
    expect(after.stderr.trim()).toMatch(/^foreman whoami: Unauthenticated: authentication required/);
  });

  it("says so when the port for the redirect is taken, and prints no address to open", async () => {
    const provider = await startOidcProvider();
    cleanups.push(() => provider.close());
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => busy.close(() => resolve())));
    const port = (busy.address() as net.AddressInfo).port;
    const server = await startMultiUserServer("sqlite", provider, { FOREMAN_OIDC_REDIRECT_URIS: `${REDIRECT_URI},http://127.0.0.1:${port}/callback` });
    cleanups.push(() => server.close());
    const exited = await run(["login", "--port", String(port)], { FOREMAN_URL: server.url, FOREMAN_CREDENTIALS: path.join(await dataDir(), "c.json") });
    expect(exited.code).toBe(2);
    expect(exited.stderr).toContain(`port ${port} is taken; choose another with --port`);
    expect(exited.stdout).not.toContain("code_challenge=");
  });

  it("says which port to allow when the server does not accept the redirect", async () => {
    const provider = await startOidcProvider();
    cleanups.push(() => provider.close());
    const server = await startMultiUserServer("sqlite", provider);
    cleanups.push(() => server.close());
    const exited = await run(["login", "--port", "54999"], { FOREMAN_URL: server.url, FOREMAN_CREDENTIALS: path.join(await dataDir(), "c.json") });
    expect(exited.code).toBe(1);
    expect(exited.stderr).toContain("InvalidArgument: redirect_uri: is not one of the server's allowed redirect URIs");
  });
});

describe("configuration errors", () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ["FOREMAN_PORT", { FOREMAN_PORT: "abc" }, /whole number/],
    ["FOREMAN_LOG_LEVEL", { FOREMAN_LOG_LEVEL: "loud" }, /must be one of/],
    ["FOREMAN_HOST", { FOREMAN_HOST: "0.0.0.0" }, /single-user mode checks no login.*loopback.*FOREMAN_SINGLE_USER_ALLOW_REMOTE/s],
    ["DATABASE_URL", { DATABASE_URL: "mysql://x" }, /postgres/],
    ["FOREMAN_OIDC_ISSUER", { DATABASE_URL: "postgres://postgres@127.0.0.1/x" }, /multi-user mode/],
    [
      "FOREMAN_SECRET_KEY",
      {
        DATABASE_URL: "postgres://postgres@127.0.0.1/x",
        FOREMAN_OIDC_ISSUER: "https://login.example.com",
        FOREMAN_OIDC_CLIENT_ID: "foreman",
        FOREMAN_OIDC_REDIRECT_URIS: "https://foreman.example.com/auth/callback",
        FOREMAN_JWT_SECRET: "s".repeat(32),
      },
      /FOREMAN_SECRET_KEY: is required in multi-user mode.*openssl rand -base64 32/,
    ],
    ["FOREMAN_SECRET_KEY", { FOREMAN_SECRET_KEY: "not-a-key" }, /32 random bytes/],
  ];

  it.each(cases)("%s: serve exits 2 and says what is wrong", async (variable, env, why) => {
    const exited = await run(["serve"], { FOREMAN_DATA_DIR: await dataDir(), ...env });
    expect(exited.code).toBe(2);
    expect(exited.stderr).toContain("configuration error");
    expect(exited.stderr).toContain(variable);
    expect(exited.stderr).toMatch(why);
    // One line, not a stack trace.
    expect(exited.stderr.trim().split("\n")).toHaveLength(1);
    expect(exited.logs.map((l) => l.msg)).not.toContain("foreman serving");
  });

  it("stops migrate the same way, on the settings migrate reads", async () => {
    const exited = await run(["migrate"], { FOREMAN_DATA_DIR: await dataDir(), FOREMAN_LOG_LEVEL: "loud" });
    expect(exited.code).toBe(2);
    expect(exited.stderr).toContain("FOREMAN_LOG_LEVEL");
  });

  it("lets single-user mode bind 0.0.0.0 when FOREMAN_SINGLE_USER_ALLOW_REMOTE says so", async () => {
    const server = await serve({
      FOREMAN_DATA_DIR: await dataDir(),
      FOREMAN_HOST: "0.0.0.0",
      FOREMAN_SINGLE_USER_ALLOW_REMOTE: "true",
    });
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await healthz(server.url)).status).toBe(200);
    server.child.kill("SIGTERM");
    expect((await server.exited).code).toBe(0);
  });
});

describe("foreman migrate", () => {
  it("creates the SQLite file with the tables in a fresh data folder, then has nothing to do", async () => {
    const dir = path.join(await dataDir(), "not", "there", "yet");
    const first = await run(["migrate"], { FOREMAN_DATA_DIR: dir });
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(first.logs.find((l) => l.msg === "database migrated")).toMatchObject({ migrations: ALL_MIGRATIONS, database: "sqlite" });

    const file = path.join(dir, "foreman.db");
    expect(existsSync(file)).toBe(true);
    const sqlite = new SqliteDatabase(file, { readonly: true, fileMustExist: true });
    try {
      const tables = sqlite
        .prepare("select name from sqlite_master where type = 'table'")
        .all()
        .map((r) => (r as { name: string }).name);
      expect(tables).toEqual(expect.arrayContaining(["workspaces", "repositories", "agent_tasks", "users", "kysely_migration"]));
    } finally {
      sqlite.close();
    }

    const second = await run(["migrate"], { FOREMAN_DATA_DIR: dir });
    expect(second.code).toBe(0);
    expect(second.logs.find((l) => l.msg === "database already up to date")).toMatchObject({ migrations: [] });
  });

  it.runIf(runsOn("postgres"))("migrates a fresh PostgreSQL database", async () => {
    const database = await testDatabase("postgres");
    const exited = await run(["migrate"], { FOREMAN_DATA_DIR: database.dataDir, DATABASE_URL: database.databaseUrl! });
    expect(exited.stderr).toBe("");
    expect(exited.code).toBe(0);
    expect(exited.logs.find((l) => l.msg === "database migrated")).toMatchObject({
      migrations: ALL_MIGRATIONS,
      database: "postgres",
    });
    const client = new pg.Client({ connectionString: database.databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ table_name: string }>(
        "select table_name from information_schema.tables where table_schema = 'public'",
      );
      expect(rows.map((r) => r.table_name)).toEqual(expect.arrayContaining(["workspaces", "repositories", "agent_tasks"]));
    } finally {
      await client.end();
    }
    // SQLite was not touched.
    expect(existsSync(path.join(database.dataDir, "foreman.db"))).toBe(false);
  });

  it("exits 1 with the cause when PostgreSQL cannot be reached", async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const exited = await run(["migrate"], {
      FOREMAN_DATA_DIR: await dataDir(),
      DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nowhere`,
    });
    expect(exited.code).toBe(1);
    expect(exited.stderr).toContain("ECONNREFUSED");
  });
});

describe("commands", () => {
  it("answers an unknown command with exit 2 and the usage", async () => {
    const exited = await run(["frobnicate"], {});
    expect(exited.code).toBe(2);
    expect(exited.stderr).toContain("foreman: unknown command 'frobnicate'");
    expect(exited.stderr).toContain("Usage: foreman <command>");
    expect(exited.stderr).toMatch(/serve\s/);
    expect(exited.stderr).toMatch(/migrate\s/);
    expect(exited.stdout).toBe("");
  });

  it.each([
    ["help", ["help"]],
    ["--help", ["--help"]],
    ["no command", []],
  ])("prints the usage for %s and exits 0", async (_label, args: string[]) => {
    const exited = await run(args, {});
    expect(exited.code).toBe(0);
    expect(exited.stdout).toContain("Usage: foreman <command>");
    expect(exited.stderr).toBe("");
  });
});

describe("every verb's arguments", () => {
  const VERBS = [["serve"], ["migrate"], ["login"], ["logout"], ["whoami"], ["worker-token"], ["worker-token", "create"], ["worker-token", "list"], ["worker-token", "revoke"]];

  /**
   * What a verb could act on: a server that answers every call with an empty message and
   * counts the calls, a stored login for it, and a data folder not made yet.
   */
  async function surroundings() {
    const calls: string[] = [];
    const server = http.createServer((req, res) => {
      calls.push(req.url ?? "");
      // An empty message in the caller's encoding, binary (nothing at all) or JSON.
      const type = req.headers["content-type"] ?? "application/proto";
      req.resume().on("end", () => res.writeHead(200, { "content-type": type }).end(type.includes("json") ? "{}" : ""));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())));
    const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const dir = await dataDir();
    const credentials = path.join(dir, "credentials.json");
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const stored = JSON.stringify({
      [url]: { accessToken: "a", accessTokenExpireTime: later, refreshToken: "r", refreshTokenExpireTime: later, userId: "u", email: "u@example.com" },
    });
    await writeFile(credentials, stored, { mode: 0o600 });
    const data = path.join(dir, "data");
    return {
      env: { FOREMAN_URL: url, FOREMAN_CREDENTIALS: credentials, FOREMAN_DATA_DIR: data, FOREMAN_PORT: "0" },
      calls,
      credentials,
      /** Nothing was done: no call, no data folder (so no database and no server), the login kept. */
      async untouched() {
        expect(calls).toEqual([]);
        expect(existsSync(data)).toBe(false);
        expect(await readFile(credentials, "utf8")).toBe(stored);
      },
    };
  }

  it.each(VERBS.map((verb) => [verb.join(" "), verb]))("foreman %s --help prints its usage, exits 0 and does nothing else", async (name, verb) => {
    const around = await surroundings();
    const exited = await run([...verb, "--help"], around.env);
    expect(exited.stderr).toBe("");
    expect(exited.code).toBe(0);
    expect(exited.stdout).toMatch(new RegExp(`^Usage: foreman ${name}\\b`));
    expect(exited.logs).toEqual([]);
    await around.untouched();
  });

  it.each([
    ["serve", "-h"],
    ["migrate", "help"],
    ["logout", "--bogus", "--help"],
    ["whoami", "extra", "-h"],
    ["login", "--port", "--help"],
    ["worker-token", "help"],
    ["worker-token", "create", "--name", "x", "-h"],
    ["worker-token", "revoke", "some-id", "help"],
  ])("%s %s … asks for help wherever the help word is", async (...args: string[]) => {
    const around = await surroundings();
    const exited = await run(args, around.env);
    expect(exited.code).toBe(0);
    expect(exited.stdout).toMatch(/^Usage: foreman /);
    await around.untouched();
  });

  it("logout without --help does end the stored login (so the test above would have seen it)", async () => {
    const around = await surroundings();
    const exited = await run(["logout"], around.env);
    expect(exited.code).toBe(0);
    expect(around.calls).toEqual(["/foreman.v1.AuthService/Logout"]);
    expect(JSON.parse(await readFile(around.credentials, "utf8"))).toEqual({});
  });

  const mistakes: [string[], string][] = [
    ...VERBS.map((verb): [string[], string] => [[...verb, "--bogus"], `foreman ${verb.join(" ")}: unknown option '--bogus'`]),
    [["serve", "extra"], "foreman serve: unexpected argument 'extra'"],
    [["migrate", "extra"], "foreman migrate: unexpected argument 'extra'"],
    [["login", "extra"], "foreman login: unexpected argument 'extra'"],
    [["logout", "extra"], "foreman logout: unexpected argument 'extra'"],
    [["whoami", "extra", "more"], "foreman whoami: unexpected arguments 'extra', 'more'"],
    [["worker-token", "extra"], "foreman worker-token: unknown command 'extra'"],
    [["worker-token", "create", "--name", "x", "extra"], "foreman worker-token create: unexpected argument 'extra'"],
    [["worker-token", "list", "extra"], "foreman worker-token list: unexpected argument 'extra'"],
    [["worker-token", "revoke", "some-id", "extra"], "foreman worker-token revoke: unexpected argument 'extra'"],
    [["serve", "--port", "9999", "--bogus"], "foreman serve: unknown options '--port', '--bogus'"],
    [["login", "--port"], "foreman login: option '--port' needs a value"],
    [["login", "--port", "http"], "foreman login: --port must be a port number (1 to 65535), got 'http'"],
    [["worker-token", "create", "--name", "help", "--ttl", "-5"], "foreman worker-token create: option '--ttl' needs a value (for one that starts with '-', write --ttl=-5)"],
    [["worker-token", "create", "--name", "x", "--ttl=-5"], "foreman worker-token create: --ttl must be a whole number of seconds, got '-5'"],
    [["worker-token", "create"], "foreman worker-token create: --name is required"],
    [["worker-token", "revoke"], "foreman worker-token revoke: missing ID"],
    [["worker-token"], "foreman worker-token: a command is required"],
  ];

  it.each(mistakes)("%j exits 2 naming what is wrong, with the usage", async (args, message) => {
    const around = await surroundings();
    const exited = await run(args, around.env);
    expect(exited.code).toBe(2);
    expect(exited.stderr.split("\n")[0]).toBe(message);
    expect(exited.stderr).toContain(`Usage: ${message.slice(0, message.indexOf(":"))}`);
    expect(exited.stdout).toBe("");
    await around.untouched();
  });
});

describe("what each command loads", () => {
  /** The modules `foreman <args>` resolved, as paths under the repository or node_modules. */
  async function loaded(args: string[], env: Record<string, string> = {}): Promise<{ exited: Exited; modules: string[] }> {
    const file = path.join(await dataDir(), "imports.txt");
    const exited = await start(args, { ...env, FOREMAN_TEST_IMPORTS_FILE: file }, ["--import", "./test/helpers/record-imports.mjs"]).exited;
    const urls = (await readFile(file, "utf8")).split("\n").filter((l) => l.startsWith("file://"));
    return { exited, modules: [...new Set(urls.map((u) => path.relative(ROOT, new URL(u).pathname)))] };
  }

  const SERVER_SIDE = [/^node_modules\/(kysely|pg|better-sqlite3|pino)\//, /^src\/(server|db|store|core|api|auth)\//, /^migrations\//];

  it.each([
    ["whoami", ["whoami"]],
    ["logout", ["logout"]],
    ["worker-token list", ["worker-token", "list"]],
  ])("%s loads no server code and no database driver", async (_label, args: string[]) => {
    // No server listens on this port: the client verbs fail after loading all they need.
    const { exited, modules } = await loaded(args, { FOREMAN_URL: "http://127.0.0.1:9", HOME: await dataDir() });
    expect(modules).toContain("src/cli/main.ts");
    expect(modules.some((m) => m.startsWith("src/cli/") && m !== "src/cli/main.ts" && m !== "src/cli/errors.ts")).toBe(true);
    expect(modules.filter((m) => SERVER_SIDE.some((pattern) => pattern.test(m)))).toEqual([]);
    expect(exited.stderr).not.toContain("Error:");
  });

  it.each([
    ["serve --help", ["serve", "--help"]],
    ["worker-token create --bogus", ["worker-token", "create", "--bogus"]],
  ])("%s loads no verb's module: the grammar and the help are main.ts's", async (_label, args: string[]) => {
    const { modules } = await loaded(args, { FOREMAN_DATA_DIR: await dataDir() });
    const ours = modules.filter((m) => /^(src|gen|migrations)\//.test(m));
    expect(ours.sort()).toEqual(["src/cli/args.ts", "src/cli/errors.ts", "src/cli/main.ts", "src/client/errors.ts"]);
  });

  it("serve's module is what loads the server and the drivers", async () => {
    const { exited, modules } = await loaded(["migrate"], { FOREMAN_DATA_DIR: await dataDir() });
    expect(exited.code).toBe(0);
    for (const needed of ["src/cli/serve.ts", "src/server/server.ts", "src/db/database.ts"]) expect(modules).toContain(needed);
    expect(modules.some((m) => m.startsWith("node_modules/kysely/"))).toBe(true);
  });
});
