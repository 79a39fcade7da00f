// How a CLI command fails: a usage mistake exits 2 with the usage, anything the user can act on
// exits 1 with one line, no stack.

/** A usage mistake: exit 2 with the message and the usage. */
export class UsageError extends Error {}

import { ClientError } from "../client/errors.js";

export { LoginEnded, ServerRefused } from "../client/errors.js";

/** A command that failed for a reason the user can act on: exit 1 with the message (so is any ClientError). */
export class CommandFailed extends ClientError {}

/** serve or migrate found a bad setting: exit 2 with the message (serve.ts makes it from a ConfigError). */
export class BadConfiguration extends Error {}
