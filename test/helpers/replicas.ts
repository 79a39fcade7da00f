// Two servers on one fresh PostgreSQL database, as replicas behind a load balancer: what one
// does, the other sees through the database and NOTIFY only.
import { createTestDatabase, type TestDatabase } from "./databases.js";
import { startTestServer, type TestServer } from "./server.js";

export interface Replicas {
  a: TestServer;
  b: TestServer;
  database: TestDatabase;
  /** Shuts both down, then drops their database. */
  close(): Promise<void>;
}

/** Starts both at once (migrations are locked, so they run once), with the same settings. */
export async function startReplicas(env: Record<string, string>, options: Parameters<typeof startTestServer>[3] = {}): Promise<Replicas> {
  const database = await createTestDatabase("postgres");
  const [a, b] = await Promise.all([startTestServer("postgres", env, database, options), startTestServer("postgres", env, database, options)]);
  return {
    a,
    b,
    database,
    async close() {
      await a.close();
      await b.close();
      await database.drop();
    },
  };
}
