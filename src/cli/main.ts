#!/usr/bin/env node
// The foreman command: `serve` runs the server, `migrate` brings the database up to date,
// `login`/`logout`/`whoami` handle the user's login, `worker-token` manages worker
// registration tokens through the API. Each verb's grammar and help live here, so that
// `--help` and a usage mistake load nothing else; each verb loads only its own module when it
// runs: a client verb starts without the server, kysely or the database drivers.
import { readArgs, type Grammar, type Parsed } from "./args.js";
import type { VerbArgs, VerbGrammar } from "./verb-args.js";
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
  worker         Run a worker daemon: claim tasks, run their agents, report
  workspace      Create and list workspaces
  repository     Add and list a workspace's repositories
  task           Create, list and show tasks
  logs           Print or follow a task's or session's log
  answer         Answer a question an agent asked
  diff           Show a task's changes
  approve        Approve a task in review (delivers its branch)
  reject         Reject a task in review
  request-changes  Send a task in review back to its agent with feedback
  retry          Run a failed or cancelled task again
  cancel         Cancel a task
  workers        List the workers that serve you
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

const WORKER_USAGE = `Usage: foreman worker [--server URL] [--token TOKEN | --token-file FILE] [options]

Runs a worker daemon until SIGTERM or SIGINT: registers with the server, claims queued tasks
(up to --concurrency at once), fetches each task's workspace from the server, runs its agent
there with the task's secrets in its environment, streams the agent's output to the task's
log, relays its questions, pushes its commits back and reports how it ended. The first
SIGTERM or SIGINT drains (nothing more is claimed; running sessions finish); a second stops
the agents now and unregisters, so the server hands their runs to another worker.

Options:
  --server URL            The server (default FOREMAN_URL, else http://127.0.0.1:54871)
  --token TOKEN           A worker registration token (default FOREMAN_WORKER_TOKEN)
  --token-file FILE       Read the token from FILE (default FOREMAN_WORKER_TOKEN_FILE)
  --state-dir DIR         Its identity, log outbox and workspaces (default FOREMAN_WORKER_STATE_DIR,
                          else $XDG_STATE_HOME/foreman/worker, else ~/.local/state/foreman/worker);
                          a restart with the same folder gets its worker id back
  --name NAME             How the worker is listed (default "<hostname> worker")
  --concurrency N         Sessions at once (default 1, at most 64)
  --agents LIST           The agents it offers, comma-separated: command, claude-code, codex
                          (default: command, and each other one whose CLI is on PATH)
  --command COMMAND       The command agent's command line, run with sh -c in the workspace,
                          the prompt on stdin and in FOREMAN_PROMPT (default: sh -s, which runs
                          the prompt itself as a shell script)
  --labels K=V,...        Labels stored with the worker
  --connect-timeout SECS  How long to keep trying to reach the server at startup (default 30)
  -h, --help              Show this help

An agent gets PATH, HOME, the locale, ANTHROPIC_*, CLAUDE_*, OPENAI_* and CODEX_* from the
worker's environment (never FOREMAN_*), the task's secrets, and the task's context in
FOREMAN_TASK_ID, FOREMAN_SESSION_ID, FOREMAN_WORKSPACE, FOREMAN_MODEL and FOREMAN_ASK_URL (POST a
question there; the answer is the response: curl -sf --data 'Go on?' "$FOREMAN_ASK_URL").
Claude Code runs as claude -p --output-format stream-json (ANTHROPIC_API_KEY or
ANTHROPIC_BASE_URL as it reads them); Codex as codex exec --json, and OPENAI_BASE_URL, which
codex itself ignores, points it at another Responses API server. FOREMAN_LOG_LEVEL sets the
worker's logging (JSON lines on stderr).
`;

// The daily verbs' help (workspace, repository, task, logs, answer, diff and the review verbs):
// each lists every option it takes, and verb-args.ts refuses any other.
const SERVER_OPTION = `  --server URL   The server (default FOREMAN_URL, else http://127.0.0.1:54871)`;
const JSON_OPTION = `  --json         Print JSON for scripts instead of text`;
const HELP_OPTION = `  -h, --help     Show this help`;
const WORKSPACE_OPTION = `  --workspace W  The workspace, by id or name (default: your only workspace, if you have one)`;

const WORKSPACE_USAGE = `Usage: foreman workspace add NAME [--description TEXT]
       foreman workspace list

A workspace holds your repositories and their tasks.

Commands:
  add    Create a workspace
  list   List your workspaces

foreman workspace <command> --help shows a command's help.
${CLIENT_ENV}
`;

const WORKSPACE_ADD_USAGE = `Usage: foreman workspace add NAME [--description TEXT] [--json]

Creates a workspace named NAME (unique among yours) and prints its id.

Options:
  --description TEXT  What the workspace is for
${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const WORKERS_USAGE = `Usage: foreman workers list [--all] [--json]

Commands:
  list   List the workers that serve you

foreman workers list --help shows more.
${CLIENT_ENV}
`;

const WORKERS_LIST_USAGE = `Usage: foreman workers list [--all] [--json]

Lists the workers that serve you: those registered with your worker registration tokens, and
the server's own (the local pool, or workers of FOREMAN_WORKER_REGISTRATION_TOKEN), which serve
everyone; in single-user mode, every worker. For each: id, name, status (idle, busy, draining,
unhealthy), the agents it runs, sessions held of its most, whom it serves, when it was last
heard from, and its host.

Options:
  --all          Include unregistered workers
${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const WORKSPACE_LIST_USAGE = `Usage: foreman workspace list [--json]

Lists your workspaces, oldest first: id, name, when each was created, description.

Options:
${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const REPOSITORY_USAGE = `Usage: foreman repository add [--workspace W] URL [--name N] [--default-branch B]
       foreman repository list [--workspace W]

A repository is a git remote a workspace's tasks work on.

Commands:
  add    Add a repository to a workspace
  list   List a workspace's repositories

foreman repository <command> --help shows a command's help.
${CLIENT_ENV}
`;

const REPOSITORY_ADD_USAGE = `Usage: foreman repository add [--workspace W] URL [--name N] [--default-branch B] [--json]

Adds the git remote at URL (https://..., or a folder on the server's machine in single-user
mode) to the workspace. The server asks the remote first: it must answer and have a commit.

Options:
${WORKSPACE_OPTION}
  --name N            Its name (default: the URL's last part without .git)
  --default-branch B  The branch tasks start from (default: the remote's HEAD)
${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const REPOSITORY_LIST_USAGE = `Usage: foreman repository list [--workspace W] [--json]

Lists the workspace's repositories, oldest first: id, name, default branch, remote URL.

Options:
${WORKSPACE_OPTION}
${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const TASK_USAGE = `Usage: foreman task create [PROMPT | --prompt-file FILE] [options]
       foreman task list [--workspace W] [--status S]
       foreman task show ID

A task is a prompt an agent works on against a repository, on a branch of its own.

Commands:
  create   File a task (and, with --follow, follow it to its end)
  list     List your tasks, newest first
  show     Show a task, its runs and its questions

foreman task <command> --help shows a command's help.
${CLIENT_ENV}
`;

const TASK_CREATE_USAGE = `Usage: foreman task create [PROMPT | --prompt-file FILE] [options]

Files a task: the prompt is PROMPT, the contents of FILE, or stdin (PROMPT or FILE '-', or
stdin piped with neither given). It runs against --repository (its own group, made when first
needed), or --group; with neither, against the workspace's only repository.

Options:
  --prompt-file FILE  Read the prompt from FILE ('-': stdin)
  --title T           Its title (default: the prompt's first line, shortened)
  --agent A           command, claude-code or codex (default: the server's, claude-code)
  --model M           The agent's model (default: the agent's own)
  --repository R      The repository, by id or name
  --group G           A repository group, by id or name
  --secrets NAMES     Environment variables, comma-separated, whose values the task's runs get
                      as secrets (in the agent's environment, masked in its log, never stored;
                      held for an hour, or until the task ends or a run of it is lost or stopped)
${WORKSPACE_OPTION}
  --follow            Follow its logs until its run ends; exit 0 when the task is in review
                      (or done), 1 when it failed or was cancelled, 130 when interrupted
${JSON_OPTION} (with --follow, then the log as JSON lines)
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const TASK_LIST_USAGE = `Usage: foreman task list [--workspace W] [--status S] [--json]

Lists your tasks, newest first: id, status, where its run is, agent, when created, title.

Options:
  --workspace W  Only this workspace's, by id or name (default: every workspace of yours)
  --status S     Only tasks in these statuses, comma-separated: in_progress, in_review,
                 approved, pr_open, done, rejected, failed, cancelled, planning, pending_approval
${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const TASK_SHOW_USAGE = `Usage: foreman task show ID [--json]

Shows the task: its status and why, where its run is (and what it waits for), its agent,
branch and commits, each run's sessions, the questions waiting for an answer, and what to
do next.

Options:
${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const LOGS_USAGE = `Usage: foreman logs [-f] TASK_OR_SESSION_ID [--json]

Prints a session's log, or each session of a task in turn. The agent's messages show as they
are, a tool call as '→ summary', its result as '← summary', the worker's own lines marked
[system]; a question the agent asked shows with the command that answers it.

With -f it follows the log live: a task's current session, then the next one (a new attempt,
a retry, a request for changes), until the task's run ends; a session's until it ends. A
dropped connection is resumed where it broke, with no line lost or repeated. The exit code is
then 0 when the task is in review (or done) or the session succeeded, 1 when it failed or was
cancelled, 130 when interrupted.

Options:
  -f, --follow   Follow live until the run ends
  --json         Print JSON lines: {sessionId, sequence, line}, {sessionId, question},
                 {sessionId, ended}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const ANSWER_USAGE = `Usage: foreman answer REQUEST_ID [ANSWER]
       foreman answer TASK_ID [ANSWER]

Answers a question an agent asked: the question REQUEST_ID (foreman logs and foreman task
show print them), or the one question of TASK_ID waiting for an answer. Without ANSWER it is
read from the terminal, or from stdin when piped. A yes/no question takes yes or no; a choice,
one of its options exactly.

Options:
${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const DIFF_USAGE = `Usage: foreman diff TASK_ID [--run RUN] [--stat]

Prints the task's changes as a unified diff: the whole task (from its first run's base commit
to its latest run's end), or one run's.

Options:
  --run RUN      One run: its agent task id, or its number (1 is the first, as task show lists)
  --stat         The changed files with their added and deleted line counts instead
${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

/** The help of approve, reject, request-changes, retry and cancel. */
const moveUsage = (synopsis: string, text: string, options = "") => `Usage: foreman ${synopsis}

${text}

Options:
${options}${JSON_OPTION}
${SERVER_OPTION}
${HELP_OPTION}

${CLIENT_ENV}
`;

const APPROVE_USAGE = moveUsage(
  "approve TASK_ID",
  `Approves a task in review: its branch is delivered to its repositories' remotes (and merged
there when a repository's delivery mode says so), then the task is approved.`,
);
const REJECT_USAGE = moveUsage("reject TASK_ID [--message TEXT]", "Rejects a task in review; that is final.", "  --message TEXT  Why, kept as the task's status reason\n");
const REQUEST_CHANGES_USAGE = moveUsage(
  "request-changes TASK_ID --feedback TEXT",
  `Sends a task in review back to its agent: a new run on the same branch, with the feedback
added to the prompt.`,
  "  --feedback TEXT  What to change (required; --message is the same)\n  --message TEXT\n",
);
const RETRY_USAGE = moveUsage("retry TASK_ID", "Runs a failed or cancelled task again: a new attempt of its latest run.");
const CANCEL_USAGE = moveUsage("cancel TASK_ID", "Cancels a task, stopping its run if one is queued or running.");

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

/** A daily verb (task, logs, ...): its arguments are read by verb-args.ts, which knows flags. */
type DailyVerb = VerbGrammar & { usage: string; run(args: VerbArgs): Promise<number> };
const isDaily = (verb: Verb): verb is DailyVerb => "flags" in verb;

/** A daily verb that runs `module`'s function and exits with what it resolves to (0 for nothing). */
const daily = (v: DailyVerb): DailyVerb => v;
const done = (result: number | void) => (typeof result === "number" ? result : 0);

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
  worker: {
    usage: WORKER_USAGE,
    options: ["server", "token", "token-file", "state-dir", "name", "concurrency", "agents", "command", "labels", "connect-timeout"],
    run: async ({ values }) => {
      const { worker } = await import("./worker.js");
      return worker(values, process.env);
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
  workers: {
    usage: WORKERS_USAGE,
    commands: {
      list: daily({
        usage: WORKERS_LIST_USAGE,
        options: ["server"],
        flags: ["json", "all"],
        run: async (args) => done(await (await import("./workers.js")).workersList(args, print)),
      }),
    },
  },
  workspace: {
    usage: WORKSPACE_USAGE,
    commands: {
      add: daily({
        usage: WORKSPACE_ADD_USAGE,
        positionals: ["NAME"],
        options: ["description", "server"],
        flags: ["json"],
        run: async (args) => done(await (await import("./workspaces.js")).addWorkspace(args.positionals[0]!, args, print)),
      }),
      list: daily({
        usage: WORKSPACE_LIST_USAGE,
        options: ["server"],
        flags: ["json"],
        run: async (args) => done(await (await import("./workspaces.js")).workspaceList(args, print)),
      }),
    },
  },
  repository: {
    usage: REPOSITORY_USAGE,
    commands: {
      add: daily({
        usage: REPOSITORY_ADD_USAGE,
        positionals: ["URL"],
        options: ["workspace", "name", "default-branch", "server"],
        flags: ["json"],
        run: async (args) => done(await (await import("./workspaces.js")).addRepository(args.positionals[0]!, args, print)),
      }),
      list: daily({
        usage: REPOSITORY_LIST_USAGE,
        options: ["workspace", "server"],
        flags: ["json"],
        run: async (args) => done(await (await import("./workspaces.js")).repositoryList(args, print)),
      }),
    },
  },
  task: {
    usage: TASK_USAGE,
    commands: {
      create: daily({
        usage: TASK_CREATE_USAGE,
        optional: ["PROMPT"],
        options: ["prompt-file", "title", "agent", "model", "repository", "group", "secrets", "workspace", "server"],
        flags: ["follow", "json"],
        run: async (args) => (await import("./tasks.js")).createTask(args, print),
      }),
      list: daily({
        usage: TASK_LIST_USAGE,
        options: ["workspace", "status", "server"],
        flags: ["json"],
        run: async (args) => done(await (await import("./tasks.js")).listTasks(args, print)),
      }),
      show: daily({
        usage: TASK_SHOW_USAGE,
        positionals: ["ID"],
        options: ["server"],
        flags: ["json"],
        run: async (args) => done(await (await import("./tasks.js")).showTask(args.positionals[0]!, args, print)),
      }),
    },
  },
  logs: daily({
    usage: LOGS_USAGE,
    positionals: ["TASK_OR_SESSION_ID"],
    options: ["server"],
    flags: ["follow", "json"],
    short: { f: "follow" },
    run: async (args) => (await import("./logs.js")).logs(args.positionals[0]!, args, print),
  }),
  answer: daily({
    usage: ANSWER_USAGE,
    positionals: ["ID"],
    optional: ["ANSWER"],
    options: ["server"],
    flags: ["json"],
    run: async (args) => done(await (await import("./review.js")).answer(args, print)),
  }),
  diff: daily({
    usage: DIFF_USAGE,
    positionals: ["TASK_ID"],
    options: ["run", "server"],
    flags: ["stat", "json"],
    run: async (args) => done(await (await import("./review.js")).diff(args.positionals[0]!, args, print)),
  }),
  ...Object.fromEntries(
    (
      [
        ["approve", APPROVE_USAGE, []],
        ["reject", REJECT_USAGE, ["message"]],
        ["request-changes", REQUEST_CHANGES_USAGE, ["feedback", "message"]],
        ["retry", RETRY_USAGE, []],
        ["cancel", CANCEL_USAGE, []],
      ] as const
    ).map(([verb, usage, options]) => [
      verb,
      daily({
        usage,
        positionals: ["TASK_ID"],
        options: [...options, "server"],
        flags: ["json"],
        run: async (args) => done(await (await import("./review.js")).move(verb, args.positionals[0]!, args, print)),
      }),
    ]),
  ),
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
    if (isDaily(verb)) {
      // Loaded only for the daily verbs, so that the others load what they did before.
      const { readVerbArgs } = await import("./verb-args.js");
      const read = readVerbArgs(args, verb);
      if (read === "help") {
        process.stdout.write(verb.usage);
        return 0;
      }
      return await verb.run(read);
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
