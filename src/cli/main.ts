#!/usr/bin/env node
// The foreman command: `serve` runs the server, `migrate` brings the database up to date,
// `login`/`logout`/`whoami` handle the user's login, `worker-token` manages worker
// registration tokens through the API. Each verb loads only its own module when it runs: a
// client verb starts without the server, kysely or the database drivers.
import { ConfigError } from "../config.js";
import { CommandFailed, UsageError } from "./errors.js";

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

const print = (line: string) => process.stdout.write(`${line}\n`);

interface Verb {
  /** Runs the verb; resolves to the exit code, or -1 for a verb that keeps running (serve). */
  run(args: string[]): Promise<number>;
  /** Printed after a usage mistake and for `foreman <verb> --help`. */
  usage?: string;
}

const HELP = ["help", "--help", "-h"];

const VERBS: Record<string, () => Promise<Verb>> = {
  serve: async () => {
    const { serve } = await import("./serve.js");
    return { run: () => serve().then(() => -1) };
  },
  migrate: async () => {
    const { migrate } = await import("./serve.js");
    return { run: () => migrate().then(() => 0) };
  },
  login: async () => {
    const { LOGIN_USAGE, login } = await import("./login.js");
    return { usage: LOGIN_USAGE, run: (args) => login(args, process.env, print).then(() => 0) };
  },
  logout: async () => {
    const { LOGIN_USAGE, logout } = await import("./login.js");
    return { usage: LOGIN_USAGE, run: () => logout(process.env, print).then(() => 0) };
  },
  whoami: async () => {
    const { LOGIN_USAGE, whoami } = await import("./login.js");
    return { usage: LOGIN_USAGE, run: () => whoami(process.env, print).then(() => 0) };
  },
  "worker-token": async () => {
    const { WORKER_TOKEN_USAGE, workerToken } = await import("./worker-token.js");
    return { usage: WORKER_TOKEN_USAGE, run: (args) => workerToken(args, process.env, print).then(() => 0) };
  },
};

async function main(argv: string[]): Promise<number> {
  const command = argv[0] ?? "help";
  if (HELP.includes(command)) {
    process.stdout.write(USAGE);
    return 0;
  }
  const load = Object.hasOwn(VERBS, command) ? VERBS[command] : undefined;
  if (load === undefined) {
    process.stderr.write(`foreman: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }
  let verb: Verb | undefined;
  try {
    verb = await load();
    // login and worker-token show their own usage; the other verbs take no arguments yet.
    if ((command === "login" || command === "worker-token") && HELP.includes(argv[1] ?? "")) {
      process.stdout.write(verb.usage ?? USAGE);
      return 0;
    }
    return await verb.run(argv.slice(1));
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`foreman ${command}: ${error.message}\n\n${verb?.usage ?? USAGE}`);
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
