// Checks once, before any test file runs, that the PostgreSQL the tests need is reachable, so
// a missing server fails with one clear message instead of in every file.
import pg from "pg";
import { adminUrl } from "./helpers/databases.js";

export default async function setup(): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl(), connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await client.query("select 1");
  } catch (error) {
    throw new Error(
      `The tests need PostgreSQL at ${adminUrl()} (set FOREMAN_TEST_DATABASE_URL to change it); ` +
        `.ci/run starts or installs it. Connecting failed: ${String(error)}`,
    );
  } finally {
    await client.end().catch(() => {});
  }
}
