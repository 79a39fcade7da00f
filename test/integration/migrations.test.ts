// The migrator on real databases: several servers starting at once on one PostgreSQL migrate
// exactly once between them, a second run is a no-op, and the schema has every table.
import { spawn } from "node:child_process";
import path from "node:path";
import { Migrator, NO_MIGRATIONS, sql, type Migration } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { openDatabase, type Db } from "../../src/db/database.js";
import type { DialectName } from "../../src/db/dialect.js";
import { migrateToLatest } from "../../src/db/migrator.js";
import { migrations } from "../../migrations/index.js";
import { createTestDatabase, DIALECTS, type TestDatabase } from "../helpers/databases.js";

/** Every migration's name, in the order they run. */
const ALL = Object.keys(migrations("sqlite"));

const EXPECTED_TABLES = [
  "users",
  "workspaces",
  "repositories",
  "repository_groups",
  "repository_group_members",
  "agent_tasks",
  "agent_sessions",
  "unit_tasks",
  "composite_tasks",
  "composite_task_nodes",
  "composite_task_node_dependencies",
  "unit_task_auto_fix_tasks",
  "todo_items",
  "tty_input_requests",
  "auth_states",
  "refresh_tokens",
  "workers",
  "worker_registration_tokens",
  "log_batches",
  "worker_commands",
  "task_events",
  "webhook_deliveries",
  "agent_task_base_remotes",
  "secret_holders",
  "task_branches",
].sort();

/** The migrator's own bookkeeping tables. */
const MIGRATOR_TABLES = ["kysely_migration", "kysely_migration_lock"];

function open(database: TestDatabase, poolSize = 2): Db {
  return openDatabase({
    databaseUrl: database.databaseUrl,
    sqlitePath: path.join(database.dataDir, "foreman.db"),
    poolSize,
  });
}

async function tables(db: Db): Promise<string[]> {
  const rows =
    db.dialect === "postgres"
      ? (
          await sql<{ name: string }>`
            select table_name as name from information_schema.tables
            where table_schema = 'public' and table_type = 'BASE TABLE'`.execute(db.kysely)
        ).rows
      : (
          await sql<{ name: string }>`
            select name from sqlite_master where type = 'table' and name not like 'sqlite_%'`.execute(db.kysely)
        ).rows;
  return rows.map((r) => r.name).sort();
}

async function applied(db: Db): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(db.kysely);
  return rows.map((r) => r.name);
}

describe.each(DIALECTS)("migrations on %s", (dialect: DialectName) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function fresh(): Promise<TestDatabase> {
    const database = await createTestDatabase(dialect);
    cleanups.push(() => database.drop());
    return database;
  }

  function opened(database: TestDatabase, poolSize?: number): Db {
    const db = open(database, poolSize);
    cleanups.push(() => db.close());
    return db;
  }

  it("undoes every migration, newest first, and applies them all again", async () => {
    const database = await fresh();
    const db = opened(database);
    await migrateToLatest(db);
    const migrator = new Migrator({ db: db.kysely, provider: { getMigrations: async () => migrations(dialect) } });
    const down = await migrator.migrateTo(NO_MIGRATIONS);
    expect(down.error).toBeUndefined();
    expect(down.results?.map((r) => [r.migrationName, r.direction, r.status])).toEqual(
      [...ALL].reverse().map((name) => [name, "Down", "Success"]),
    );
    expect(await tables(db)).toEqual([...MIGRATOR_TABLES].sort());
    expect(await migrateToLatest(db)).toEqual(ALL);
    expect(await tables(db)).toEqual([...EXPECTED_TABLES, ...MIGRATOR_TABLES].sort());
  });

  it("creates every table on a fresh database, then a second run does nothing", async () => {
    const database = await fresh();
    const db = opened(database);
    expect(await migrateToLatest(db)).toEqual(ALL);
    expect(await tables(db)).toEqual([...EXPECTED_TABLES, ...MIGRATOR_TABLES].sort());
    expect(await applied(db)).toEqual(ALL);

    expect(await migrateToLatest(db)).toEqual([]);
    expect(await applied(db)).toEqual(ALL);
  });

  it("is a no-op from a new connection after the database was migrated and closed", async () => {
    const database = await fresh();
    const first = open(database);
    expect(await migrateToLatest(first)).toEqual(ALL);
    await first.close();

    const second = opened(database);
    expect(await migrateToLatest(second)).toEqual([]);
    expect(await tables(second)).toEqual(expect.arrayContaining(EXPECTED_TABLES));
    expect(await applied(second)).toEqual(ALL);
  });

  if (dialect === "postgres") {
    it("migrates exactly once when several pools migrate at the same time", async () => {
      const database = await fresh();
      const pools = Array.from({ length: 4 }, () => opened(database, 2));
      // Connect every pool first so that the migrations start as close together as they can.
      await Promise.all(pools.map((db) => sql`select 1`.execute(db.kysely)));

      const results = await Promise.all(pools.map((db) => migrateToLatest(db)));

      expect(results.filter((ran) => ran.length > 0)).toEqual([ALL]);
      expect(results.filter((ran) => ran.length === 0)).toHaveLength(pools.length - 1);
      for (const db of pools) {
        expect(await tables(db)).toEqual([...EXPECTED_TABLES, ...MIGRATOR_TABLES].sort());
        expect(await applied(db)).toEqual(ALL);
      }

      // And again, all at once: nothing left to do for anyone.
      expect(await Promise.all(pools.map((db) => migrateToLatest(db)))).toEqual(pools.map(() => []));
      expect(await applied(pools[0]!)).toEqual(ALL);
    });
  }

  it("migrates exactly once when several processes migrate one fresh database at the same time", async () => {
    const database = await fresh();
    const target = database.databaseUrl ?? path.join(database.dataDir, "foreman.db");
    const outcomes = await migrateInProcesses(target, 4);

    expect(outcomes.filter((o) => "error" in o)).toEqual([]);
    expect(outcomes.filter((o) => o.ran?.length)).toEqual([{ ran: ALL }]);
    expect(outcomes.filter((o) => o.ran?.length === 0)).toHaveLength(3);
    const db = opened(database);
    expect(await tables(db)).toEqual([...EXPECTED_TABLES, ...MIGRATOR_TABLES].sort());
    expect(await applied(db)).toEqual(ALL);
  }, 120_000);

  it("rolls a failing migration back whole, so that a later start can run it again", async () => {
    const database = await fresh();
    const db = opened(database);
    const steps = (fail: boolean): Record<string, Migration> => ({
      "0001_two_tables": {
        async up(k) {
          await k.schema.createTable("first_table").addColumn("id", "integer", (c) => c.primaryKey()).execute();
          await k.schema.createTable("second_table").addColumn("id", "integer", (c) => c.primaryKey()).execute();
          if (fail) throw new Error("disk full, say");
        },
      },
    });
    const migrate = (fail: boolean) =>
      new Migrator({ db: db.kysely, provider: { getMigrations: async () => steps(fail) } }).migrateToLatest();

    const failed = await migrate(true);
    expect(String(failed.error)).toContain("disk full, say");
    expect(failed.results).toEqual([{ migrationName: "0001_two_tables", direction: "Up", status: "Error" }]);
    expect(await tables(db)).toEqual(MIGRATOR_TABLES);

    const retried = await migrate(false);
    expect(retried.error).toBeUndefined();
    expect(retried.results?.map((r) => r.status)).toEqual(["Success"]);
    expect(await tables(db)).toEqual([...MIGRATOR_TABLES, "first_table", "second_table"].sort());
  });
});

type Outcome = { ran?: string[]; error?: string };

/**
 * Starts n processes that each open the database, waits until all of them are ready, then
 * lets them migrate at once, and returns what each reported.
 */
async function migrateInProcesses(target: string, n: number): Promise<Outcome[]> {
  const children = Array.from({ length: n }, () =>
    spawn(process.execPath, ["--import", "tsx", "test/helpers/migrate-process.ts", target], {
      cwd: process.cwd(),
      stdio: ["pipe", "pipe", "pipe"],
    }),
  );
  try {
    const runs = children.map((child) => {
      let stdout = "";
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      const ready = new Promise<void>((resolve, reject) => {
        child.stdout.setEncoding("utf8").on("data", (d: string) => {
          stdout += d;
          if (stdout.startsWith("ready\n")) resolve();
        });
        child.once("exit", (code) => reject(new Error(`migrate process exited ${code} before ready: ${stderr}`)));
      });
      const exited = new Promise<Outcome>((resolve, reject) => {
        child.once("error", reject);
        child.once("close", (code) => {
          const last = stdout.trim().split("\n").at(-1) ?? "";
          try {
            const outcome = JSON.parse(last) as Outcome;
            if ((code === 0) !== !("error" in outcome)) throw new Error(`exit code ${code} with ${last}`);
            resolve(outcome);
          } catch (error) {
            reject(new Error(`migrate process: ${String(error)}; stdout ${stdout}; stderr ${stderr}`));
          }
        });
      });
      return { ready, exited };
    });
    await Promise.all(runs.map((r) => r.ready));
    for (const child of children) child.stdin.end("go\n");
    return await Promise.all(runs.map((r) => r.exited));
  } finally {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}
