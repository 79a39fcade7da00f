// How a CLI command fails: a usage mistake exits 2 with the usage, anything the user can act on
// exits 1 with one line, no stack.

/** A usage mistake: exit 2 with the message and the usage. */
export class UsageError extends Error {}

/** A command that failed for a reason the user can act on: exit 1 with the message. */
export class CommandFailed extends Error {}

/** The server refused or could not be reached. */
export class ServerRefused extends CommandFailed {}

/** The stored login can no longer be refreshed: the user must log in again. */
export class LoginEnded extends ServerRefused {}

/** serve or migrate found a bad setting: exit 2 with the message (serve.ts makes it from a ConfigError). */
export class BadConfiguration extends Error {}
