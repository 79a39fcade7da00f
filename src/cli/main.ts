#!/usr/bin/env node
// The foreman command: `serve` runs the server, `migrate` brings the database up to date,
// `login`/`logout`/`whoami` handle the user's login, `worker-token` manages worker
// registration tokens through the API.
import { ConfigError, loadConfig, loadDatabaseConfig } from "../config.js";
import { openDatabase } from "../db/database.js";
import { migrateToLatest } from "../db/migrator.js";
import { createLogger } from "../logger.js";
import { sqlitePath, startServer } from "../server/server.js";
import { CommandFailed, UsageError } from "./errors.js";
import { LOGIN_USAGE, login, logout, whoami } from "./login.js";
import { WORKER_TOKEN_USAGE, workerToken } from "./worker-token.js";

const USAGE = `Usage: foreman <command>

Commands:
  serve     Run the server (configured by FOREMAN_* environment variables; see README)
  migrate   Apply database migrations and exit
  login     Log in to a multi-user server (foreman login --help)
  logout    End the stored login
  whoami    Show who the server takes you for
  worker-token create|list|revoke
            Manage worker registration tokens (foreman worker-token help)
  help      Show this help
`;

async function serve(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const server = await startServer(config, logger);
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting at once");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "signal received");
    server.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

async function migrate(): Promise<void> {
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

const print = (line: string) => process.stdout.write(`${line}\n`);

async function main(argv: string[]): Promise<number> {
  const command = argv[0] ?? "help";
  try {
    switch (command) {
      case "serve":
        await serve();
        return -1; // keeps running until a signal
      case "migrate":
        await migrate();
        return 0;
      case "login":
        if (["help", "--help", "-h"].includes(argv[1] ?? "")) {
          process.stdout.write(LOGIN_USAGE);
          return 0;
        }
        await login(argv.slice(1), process.env, print);
        return 0;
      case "logout":
        await logout(process.env, print);
        return 0;
      case "whoami":
        await whoami(process.env, print);
        return 0;
      case "worker-token":
        if (["help", "--help", "-h"].includes(argv[1] ?? "")) {
          process.stdout.write(WORKER_TOKEN_USAGE);
          return 0;
        }
        await workerToken(argv.slice(1), process.env, print);
        return 0;
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(USAGE);
        return 0;
      default:
        process.stderr.write(`foreman: unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`foreman ${command}: ${error.message}\n\n${command === "worker-token" ? WORKER_TOKEN_USAGE : LOGIN_USAGE}`);
      return 2;
    }
    if (error instanceof CommandFailed) {
      process.stderr.write(`foreman ${command}: ${error.message}\n`);
      return 1;
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`foreman: configuration error: ${error.message}\n`);
      return 2;
    }
    const code = (error as NodeJS.ErrnoException | null)?.code;
    if (code === "EADDRINUSE" || code === "EACCES" || code === "EADDRNOTAVAIL") {
      // A listen failure is the operator's to fix; a stack trace would only hide the message.
      process.stderr.write(`foreman: cannot listen: ${(error as Error).message} (set FOREMAN_PORT or FOREMAN_HOST)\n`);
      return 1;
    }
    process.stderr.write(`foreman: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
if (code >= 0) process.exitCode = code;
