// How the shared client fails in a way its user can act on (the CLI prints the message and
// exits 1; the worker daemon logs it and retries or stops).

/** A failure with a message the user can act on: no stack needed. */
export class ClientError extends Error {}

/** The server refused or could not be reached. */
export class ServerRefused extends ClientError {}

/** The stored login can no longer be refreshed: the user must log in again. */
export class LoginEnded extends ServerRefused {}
