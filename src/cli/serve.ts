// The server's own verbs: `serve` runs it, `migrate` brings its database up to date. Only these
// load the server, the database drivers and the migrations; the client verbs never do.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { destination, type Logger } from "pino";
import { ConfigError, loadConfig, loadDatabaseConfig, type Config } from "../config.js";
import { openDatabase } from "../db/database.js";
import { migrateToLatest } from "../db/migrator.js";
import { createLogger } from "../logger.js";
import { startLocalPool, type LocalPool } from "../providers/local.js";
import { sqlitePath, startServer } from "../server/server.js";
import { BadConfiguration } from "./errors.js";

/** Runs the server until SIGTERM or SIGINT, then shuts down gracefully (a second signal: at once). */
export const serve = () => reportingConfigErrors(runServer());

export const migrate = () => reportingConfigErrors(runMigrations());

/** A ConfigError as the CLI's own error, so that main.ts, which every verb loads, need not load config.ts. */
async function reportingConfigErrors(work: Promise<void>): Promise<void> {
  try {
    await work;
  } catch (error) {
    throw error instanceof ConfigError ? new BadConfiguration(error.message, { cause: error }) : error;
  }
}

async function runServer(): Promise<void> {
  let config = loadConfig();
  // The local pool registers with the configured worker token, or one made for this start.
  const poolToken = config.localWorkers > 0 ? (config.auth.workerRegistrationToken ?? randomBytes(32).toString("base64url")) : undefined;
  if (poolToken !== undefined) config = { ...config, auth: { ...config.auth, workerRegistrationToken: poolToken } };
  // A person at a terminal also gets a sentence, after the log lines: there pino writes
  // synchronously, so that the sentence comes last. Pipes get the JSON lines alone, as before.
  const tty = process.stdout.isTTY === true;
  const logger = createLogger(config.logLevel, tty ? destination({ dest: 1, sync: true }) : undefined);
  const server = await startServer(config, logger);
  // Started after the signal handlers below, so a signal meanwhile stops it too.
  let pool: Promise<LocalPool | undefined> = Promise.resolve(undefined);
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting at once");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "signal received");
    // The workers first: stopping, they hand their runs back to a server that still answers.
    pool
      .then((started) => started?.stop())
      .then(() => server.close())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, "shutdown failed");
          process.exit(1);
        },
      );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  if (poolToken !== undefined) {
    pool = startPool(config, server.url, poolToken, logger).catch((error: unknown) => {
      logger.error({ err: error }, "the local workers could not start");
      return undefined;
    });
    await pool;
  }
  if (tty) process.stdout.write(`${servingSentence(server.url, config)}\n`);
}

/** Starts config.localWorkers `foreman worker` children of this process, reaching the server on loopback. */
async function startPool(config: Config, url: string, token: string, logger: Logger): Promise<LocalPool> {
  const root = path.join(config.dataDir, "local-workers");
  await mkdir(root, { recursive: true, mode: 0o700 });
  const tokenFile = path.join(root, "token");
  await writeFile(tokenFile, token, { mode: 0o600 });
  const server = new URL(url);
  if (["0.0.0.0", "[::]"].includes(server.hostname)) server.hostname = "127.0.0.1";
  const { FOREMAN_LOG_LEVEL: _level, ...env } = process.env;
  return startLocalPool({
    count: config.localWorkers,
    server: server.origin,
    tokenFile,
    stateRoot: root,
    // This same foreman, however it was started (node dist/…/main.js, or tsx src/cli/main.ts).
    foreman: [process.execPath, ...process.execArgv, process.argv[1]!],
    env: { ...env, FOREMAN_LOG_LEVEL: config.logLevel },
    log: logger,
  });
}

/** Where the server listens, in which mode, and what to try first (last, so that it copies whole). */
export function servingSentence(url: string, config: Pick<Config, "host" | "singleUserMode" | "databaseUrl" | "dataDir" | "localWorkers">): string {
  const where = ["0.0.0.0", "::"].includes(config.host) ? `${url} (listening on every address)` : url;
  const mode = config.singleUserMode ? "single-user mode (no login)" : "multi-user mode (OpenID Connect login)";
  // Not DATABASE_URL itself: it may hold a password.
  const database = config.databaseUrl === undefined ? `its SQLite database in ${config.dataDir}` : "PostgreSQL (DATABASE_URL)";
  const workers = config.localWorkers === 0 ? "" : ` and ${config.localWorkers} local worker${config.localWorkers === 1 ? "" : "s"}`;
  const next = config.singleUserMode ? "Try:" : "Most calls need a login (foreman login); this one does not:";
  return `Foreman is serving ${where} in ${mode}, with ${database}${workers}; Ctrl-C stops it. ${next} npx buf curl --http2-prior-knowledge --list-services ${url}`;
}

async function runMigrations(): Promise<void> {
  const config = loadDatabaseConfig();
  const logger = createLogger(config.logLevel);
  const db = openDatabase({ databaseUrl: config.databaseUrl, sqlitePath: sqlitePath(config), poolSize: 2 });
  try {
    const ran = await migrateToLatest(db);
    logger.info({ migrations: ran, database: db.dialect }, ran.length > 0 ? "database migrated" : "database already up to date");
  } finally {
    await db.close();
  }
}
