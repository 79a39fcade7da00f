// A query built and compiled once, then run with each call's parameters. Kysely builds and
// compiles a query afresh on every call: for GetWorkspace that was about 8 µs of the server's
// ~170 µs per call, plus the garbage, measured with bench/h2load.ts. The cheap reads that every
// call or heartbeat makes are written with `prepared` instead; the rest stay plain kysely.
import type { Compilable, CompiledQuery, Kysely } from "kysely";
import type { Database } from "../db/schema.js";

/** Stands in for an argument while the query is compiled; replaced by it on each run. */
class Slot {
  constructor(readonly index: number) {}
}

/**
 * `build` receives placeholders in place of its arguments and must use each only as a value
 * (a comparison's right side, an inserted value), never to choose the query's shape: the shape
 * is compiled once per dialect. Values must be what the database takes (toDbTime applied).
 */
export function prepared<Args extends unknown[], Row>(
  build: (db: Kysely<Database>, ...args: Args) => Compilable<Row>,
): (db: Kysely<Database>, ...args: Args) => Promise<Row[]> {
  // Keyed by the dialect's adapter, which a transaction shares with its database.
  const compiled = new WeakMap<object, CompiledQuery<Row>>();
  return async (db, ...args) => {
    const dialect = db.getExecutor().adapter;
    let query = compiled.get(dialect);
    if (query === undefined) {
      const slots = args.map((_, i) => new Slot(i));
      query = build(db, ...(slots as Args)).compile();
      const used = new Set(query.parameters.filter((p) => p instanceof Slot).map((p) => (p as Slot).index));
      if (used.size !== args.length) throw new Error(`a prepared query used ${used.size} of its ${args.length} arguments as values`);
      compiled.set(dialect, query);
    }
    const parameters = query.parameters.map((p) => (p instanceof Slot ? args[p.index] : p));
    const result = await db.executeQuery<Row>({ ...query, parameters });
    return result.rows;
  };
}
