// Real databases for tests: a fresh SQLite file, or a fresh PostgreSQL database created for
// the test and dropped after it.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import type { DialectName } from "../../src/db/dialect.js";

const ALL_DIALECTS: DialectName[] = ["sqlite", "postgres"];

/**
 * The dialects tests run on: both, unless FOREMAN_TEST_DIALECTS names some (comma-separated)
 * for quick local work. CI unsets it and runs both.
 */
export const DIALECTS: DialectName[] = selectedDialects(process.env.FOREMAN_TEST_DIALECTS);

function selectedDialects(value: string | undefined): DialectName[] {
  if (value === undefined || value.trim() === "") return ALL_DIALECTS;
  const names = value.split(",").map((name) => name.trim());
  for (const name of names) {
    if (!ALL_DIALECTS.includes(name as DialectName)) throw new Error(`FOREMAN_TEST_DIALECTS: unknown dialect "${name}" (use sqlite, postgres or both)`);
  }
  return ALL_DIALECTS.filter((d) => names.includes(d));
}

/** Whether tests that need this dialect alone (PostgreSQL replicas, say) run. */
export function runsOn(dialect: DialectName): boolean {
  return DIALECTS.includes(dialect);
}

/** A PostgreSQL URL with rights to create databases. */
export function adminUrl(): string {
  return process.env.FOREMAN_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
}

export interface TestDatabase {
  dialect: DialectName;
  /** Set for PostgreSQL. */
  databaseUrl: string | undefined;
  /** A fresh folder; holds the SQLite file. */
  dataDir: string;
  drop(): Promise<void>;
}

async function admin<T>(run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end();
  }
}

export async function createTestDatabase(dialect: DialectName): Promise<TestDatabase> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "foreman-test-"));
  if (dialect === "sqlite") {
    return { dialect, databaseUrl: undefined, dataDir, drop: () => rm(dataDir, { recursive: true, force: true }) };
  }
  const name = `foreman_test_${randomBytes(6).toString("hex")}`;
  await admin((c) => c.query(`create database ${name}`));
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  return {
    dialect,
    databaseUrl: url.toString(),
    dataDir,
    async drop() {
      await admin((c) => c.query(`drop database if exists ${name} with (force)`));
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

const execFileAsync = promisify(execFile);

/** A PostgreSQL database's rows as a pg_dump's INSERT statements. */
export async function pgDump(databaseUrl: string): Promise<string> {
  const bin = existsSync("/usr/bin/pg_dump") ? "/usr/bin/pg_dump" : "pg_dump";
  return (await execFileAsync(bin, ["--data-only", "--inserts", databaseUrl], { maxBuffer: 256 * 1024 * 1024 })).stdout;
}

/** The database's bytes as text, to look for what must never be stored: the SQLite file and its WAL, or a pg_dump. */
export async function databaseText(database: TestDatabase): Promise<string> {
  if (database.databaseUrl !== undefined) return pgDump(database.databaseUrl);
  const file = path.join(database.dataDir, "foreman.db");
  return [file, `${file}-wal`]
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f).toString("latin1"))
    .join("\n");
}
