// A separate process for migration races: opens the database named by its arguments, prints
// "ready", waits for a line on stdin, migrates, and prints {"ran": [...]} or {"error": "..."}.
// Usage: node --import tsx test/helpers/migrate-process.ts <sqlite-file | postgres-url>
import { createInterface } from "node:readline";
import { openDatabase } from "../../src/db/database.js";
import { migrateToLatest } from "../../src/db/migrator.js";

const target = process.argv[2];
if (target === undefined) throw new Error("usage: migrate-process.ts <sqlite-file | postgres-url>");
const db = openDatabase(/^postgres(ql)?:/.test(target) ? { databaseUrl: target, poolSize: 2 } : { sqlitePath: target });
const lines = createInterface({ input: process.stdin });
const go = new Promise<void>((resolve) => lines.once("line", () => resolve()));
process.stdout.write("ready\n");
await go;
lines.close();
try {
  process.stdout.write(`${JSON.stringify({ ran: await migrateToLatest(db) })}\n`);
} catch (error) {
  process.stdout.write(`${JSON.stringify({ error: String(error) })}\n`);
  process.exitCode = 1;
} finally {
  await db.close();
}
