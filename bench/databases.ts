// A fresh PostgreSQL database for a benchmark's run, on the server at FOREMAN_BENCH_DATABASE_URL
// (the local one by default), dropped at the end or on Ctrl-C.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { removeOnInterrupt } from "./cleanup.js";

export const ADMIN_URL = process.env.FOREMAN_BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

/** A fresh database, or undefined (and a note naming `benchmark`) when there is no server to make it on. */
export async function createBenchDatabase(benchmark: string): Promise<{ url: string; drop(): Promise<void> } | undefined> {
  const name = `foreman_bench_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  try {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
  } catch (error) {
    process.stderr.write(`${benchmark}: no PostgreSQL at ${ADMIN_URL} (${(error as Error).message}); measuring SQLite only\n`);
    await admin.end().catch(() => undefined);
    return undefined;
  }
  await admin.end();
  process.stderr.write(`  created PostgreSQL database ${name}, dropped at the end\n`);
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  const drop = async () => {
    const c = new pg.Client({ connectionString: ADMIN_URL });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await c.end();
  };
  // Ctrl-C drops it too (bench/cleanup.ts), after the servers using it have stopped.
  return { url: url.href, drop: removeOnInterrupt(drop) };
}
