#!/usr/bin/env node
// The foreman command: `serve` runs the server, `migrate` brings the database up to date,
// `login`/`logout`/`whoami` handle the user's login, `worker-token` manages worker
// registration tokens through the API. Each verb's grammar and help live here, so that
// `--help` and a usage mistake load nothing else; each verb loads only its own module when it
// runs: a client verb starts without the server, kysely or the database drivers.
import { readArgs, type Grammar, type Parsed } from "./args.js";
import { ClientError } from "../client/errors.js";
import { BadConfiguration, UsageError } from "./errors.js";

const USAGE = `Usage: foreman <command> [options]

Commands:
  serve          Run the server
  migrate        Apply database migrations and exit
  login          Log in to a multi-user server through the browser
  logout         End the stored login
  whoami         Show who the server takes you for
  worker-token   Create, list and revoke worker registration tokens
  help           Show this help

foreman <command> --help shows a command's help.
`;

const SERVE_USAGE = `Usage: foreman serve
It takes no options: environment variables configure it (FOREMAN_PORT, FOREMAN_DATA_DIR, ...).

Runs the server until SIGTERM or SIGINT (Ctrl-C; a second one stops it at once), after
applying any pending database migrations. By default it serves 127.0.0.1:54871 in
single-user mode (no login), with its SQLite database in ./data.

The settings: FOREMAN_PORT, FOREMAN_HOST, FOREMAN_DATA_DIR, DATABASE_URL (PostgreSQL instead
of SQLite), FOREMAN_SINGLE_USER_MODE, FOREMAN_LOG_LEVEL, the FOREMAN_OIDC_* login settings
and more; README.md, section "Configuration", lists them all with their defaults. For example:

  FOREMAN_PORT=8080 FOREMAN_DATA_DIR=/tmp/foreman foreman serve
`;

const MIGRATE_USAGE = `Usage: foreman migrate
It takes no options: environment variables configure it (DATABASE_URL, FOREMAN_DATA_DIR, ...).

Applies any pending database migrations and exits (serve applies them too when it starts).
DATABASE_URL picks a PostgreSQL database; without it, the SQLite database in
FOREMAN_DATA_DIR (default ./data), created if missing. FOREMAN_LOG_LEVEL sets the logging.
README.md, section "Configuration", has them all.
`;

const SERVER_ENV = `Environment: FOREMAN_URL, the server (default http://127.0.0.1:54871).`;

const CREDENTIALS_ENV = `FOREMAN_CREDENTIALS, the file the login is kept in (default
$XDG_CONFIG_HOME/foreman/credentials.json, else ~/.config/foreman/credentials.json).`;

const CLIENT_ENV = `${SERVER_ENV} In multi-user mode
it uses the login foreman login stored, or FOREMAN_ACCESS_TOKEN when set.`;

const LOGIN_USAGE = `Usage: foreman login [--port PORT]

Logs in to a multi-user server through its OpenID provider: prints an address to open in a
browser, waits for the browser to come back to http://127.0.0.1:PORT/callback, and keeps the
login for the other commands (refreshing it when due). The server's FOREMAN_OIDC_REDIRECT_URIS
must include that address.

Options:
  --port PORT   The local port the browser comes back to (default 54872)
  -h, --help    Show this help

${SERVER_ENV}
${CREDENTIALS_ENV}
`;

const LOGOUT_USAGE = `Usage: foreman logout

Ends the stored login to the server, on the server and here. Without one, it says so.

${SERVER_ENV}
${CREDENTIALS_ENV}
`;

const WHOAMI_USAGE = `Usage: foreman whoami

Shows who the server takes you for: your user, or the local user of a single-user server.

${CLIENT_ENV}
`;

const WORKER_TOKEN_USAGE = `Usage: foreman worker-token create --name NAME [--ttl SECONDS]
       foreman worker-token list
       foreman worker-token revoke ID

A worker registration token lets worker daemons register with the server; the workers
registered with one you create serve only you.

Commands:
  create   Create a token and print its secret, once
  list     List your tokens
  revoke   Stop a token registering new workers

foreman worker-token <command> --help shows a command's help.
${CLIENT_ENV}
`;

const CREATE_USAGE = `Usage: foreman worker-token create --name NAME [--ttl SECONDS]

Creates a worker registration token and prints its id and secret. The secret is shown only
this once: give it to the worker as its registration token.

Options:
  --name NAME     What the token is for, e.g. "build box"
  --ttl SECONDS   How long it can register workers (0 or none: until revoked)
  -h, --help      Show this help

${CLIENT_ENV}
`;

const LIST_USAGE = `Usage: foreman worker-token list

Lists your worker registration tokens, one a line, tab-separated: id, name, and when each
was created, expires, was revoked and last used. Secrets are never shown again.

${CLIENT_ENV}
`;

const REVOKE_USAGE = `Usage: foreman worker-token revoke ID

Stops the token ID (as list shows it) registering new workers; the workers it registered
keep working.

${CLIENT_ENV}
`;

const print = (line: string) => process.stdout.write(`${line}\n`);

/** A verb that runs, or one made of subcommands (worker-token). */
type Verb =
  | (Grammar & {
      /** Printed for `--help`, and after a usage mistake. */
      usage: string;
      /** Runs the verb; resolves to the exit code, or -1 for a verb that keeps running (serve). */
      run(args: Parsed): Promise<number>;
    })
  | { usage: string; commands: Record<string, Verb> };

const VERBS: Record<string, Verb> = {
  serve: {
    usage: SERVE_USAGE,
    run: async () => {
      const { serve } = await import("./serve.js");
      return serve().then(() => -1);
    },
  },
  migrate: {
    usage: MIGRATE_USAGE,
    run: async () => {
      const { migrate } = await import("./serve.js");
      return migrate().then(() => 0);
    },
  },
  login: {
    usage: LOGIN_USAGE,
    options: ["port"],
    run: async ({ values }) => {
      const { login } = await import("./login.js");
      return login(values.port, process.env, print).then(() => 0);
    },
  },
  logout: {
    usage: LOGOUT_USAGE,
    run: async () => {
      const { logout } = await import("./login.js");
      return logout(process.env, print).then(() => 0);
    },
  },
  whoami: {
    usage: WHOAMI_USAGE,
    run: async () => {
      const { whoami } = await import("./login.js");
      return whoami(process.env, print).then(() => 0);
    },
  },
  "worker-token": {
    usage: WORKER_TOKEN_USAGE,
    commands: {
      create: {
        usage: CREATE_USAGE,
        options: ["name", "ttl"],
        run: async ({ values }) => {
          const { createToken } = await import("./worker-token.js");
          return createToken(values, process.env, print).then(() => 0);
        },
      },
      list: {
        usage: LIST_USAGE,
        run: async () => {
          const { listTokens } = await import("./worker-token.js");
          return listTokens(process.env, print).then(() => 0);
        },
      },
      revoke: {
        usage: REVOKE_USAGE,
        positionals: ["ID"],
        run: async ({ positionals }) => {
          const { revokeToken } = await import("./worker-token.js");
          return revokeToken(positionals[0]!, process.env, print).then(() => 0);
        },
      },
    },
  },
};

const HELP = ["help", "--help", "-h"];

/** Runs `name` (e.g. "foreman worker-token create") with its arguments; resolves to the exit code. */
async function runVerb(name: string, verb: Verb, args: string[]): Promise<number> {
  try {
    if ("commands" in verb) {
      const [command, ...rest] = args;
      const sub = command !== undefined && Object.hasOwn(verb.commands, command) ? verb.commands[command] : undefined;
      if (sub !== undefined) return await runVerb(`${name} ${command}`, sub, rest);
      if (args.some((a) => HELP.includes(a))) {
        process.stdout.write(verb.usage);
        return 0;
      }
      if (command === undefined) throw new UsageError("a command is required");
      throw new UsageError(command.startsWith("-") ? `unknown option '${command}'` : `unknown command '${command}'`);
    }
    const parsed = readArgs(args, verb);
    if (parsed === "help") {
      process.stdout.write(verb.usage);
      return 0;
    }
    return await verb.run(parsed);
  } catch (error) {
    if (error instanceof UsageError) {
      // The synopsis, not the whole help: the mistake stays in view.
      process.stderr.write(`${name}: ${error.message}\n\n${verb.usage.split("\n\n")[0]}\n\n${name} --help shows more.\n`);
      return 2;
    }
    if (error instanceof ClientError) {
      process.stderr.write(`${name}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

async function main(argv: string[]): Promise<number> {
  const [command = "help", ...args] = argv;
  if (HELP.includes(command)) {
    process.stdout.write(USAGE);
    return 0;
  }
  const verb = Object.hasOwn(VERBS, command) ? VERBS[command] : undefined;
  if (verb === undefined) {
    process.stderr.write(`foreman: unknown command '${command}'\n\n${USAGE}`);
    return 2;
  }
  try {
    return await runVerb(`foreman ${command}`, verb, args);
  } catch (error) {
    if (error instanceof BadConfiguration) {
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
