// Kysely's PostgreSQL driver sends every query unnamed, so PostgreSQL parses and plans it afresh
// on each call. The app's queries come in a few hundred shapes; naming each shape makes it a
// prepared statement on every connection that runs it, parsed and planned once there. Measured
// with one worker claiming and completing runs one after another (GetTask, ReportStatus RUNNING
// and SUCCEEDED, about 20 statements): 54–61 runs/s unnamed, 73–79 named, and 15% less of the
// server's CPU per run.
//
// A prepared statement's result columns are fixed when it is prepared: should another replica's
// migration change a table a kept `SELECT *` reads, PostgreSQL refuses it ("cached plan must
// not change result type"), and a pooler that discards the session forgets it ("prepared
// statement does not exist"). Either error ends that connection, so the pool opens a fresh one
// that prepares again; the call that met it fails once. Behind a pooler in transaction mode,
// prepared statements need its support (PgBouncer 1.21+: max_prepared_statements).
import type pg from "pg";

/** Enough for every query shape, with room for IN lists of many lengths; shapes past it run unnamed. */
export const NAMED_STATEMENTS_MAX = 500;

const STALE_STATEMENT = new Set(["0A000", "26000"]);

export function useNamedStatements(pool: pg.Pool, max = NAMED_STATEMENTS_MAX): void {
  // One name per SQL text for the whole pool: each connection prepares it on first use.
  const names = new Map<string, string>();
  const nameOf = (text: string): string | undefined => {
    let name = names.get(text);
    if (name === undefined && names.size < max) {
      name = `foreman_${names.size}`;
      names.set(text, name);
    }
    return name;
  };
  pool.on("connect", (client) => {
    const query = client.query.bind(client) as (config: unknown, values?: unknown) => Promise<pg.QueryResult>;
    // Kysely calls query(text, values) and awaits the promise; any other form passes through.
    (client as { query: unknown }).query = (config: unknown, values?: unknown) => {
      const name = typeof config === "string" && Array.isArray(values) && values.length > 0 ? nameOf(config) : undefined;
      if (name === undefined) return query(config, values);
      return query({ name, text: config, values }).catch((error: unknown) => {
        if (STALE_STATEMENT.has((error as { code?: string }).code ?? "")) void client.end().catch(() => undefined);
        throw error;
      });
    };
  });
}
