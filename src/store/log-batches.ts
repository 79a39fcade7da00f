// A session's log, as the batches its worker appended, each under the session's next sequence.

/**
 * The NOTIFY channel that wakes readers of a session's log on every replica. Its payload is the
 * session id, then a space and what changed (a batch's sequence, `tty`, `end`): never log text.
 */
export const LOGS_CHANNEL = "foreman_logs";
