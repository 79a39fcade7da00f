// A session's log lines, as core and the store keep them. A leaf module like tasks.ts: it
// imports nothing.

/** Where a line came from: the agent's stdout or stderr, or the worker or server (system). */
export const LOG_STREAMS = ["unspecified", "stdout", "stderr", "system"] as const;
export type LogStreamName = (typeof LOG_STREAMS)[number];

/**
 * What a line is. "text" is a plain line of output; the others are an agent's structured events
 * (Claude Code's `--output-format stream-json`, Codex's `exec --json`), whose JSON is the line's
 * payload and whose text is a one-line summary for a plain terminal.
 */
export const LOG_LINE_KINDS = [
  "text",
  "assistant_message",
  "thinking",
  "tool_call",
  "tool_result",
  "usage",
  "result",
  "error",
  "session_event",
] as const;
export type LogLineKind = (typeof LOG_LINE_KINDS)[number];

export interface LogLine {
  stream: LogStreamName;
  kind: LogLineKind;
  text: string;
  /** When the worker read the line; null when it did not say. */
  time: Date | null;
  /** The structured event as JSON text (an object), or null for a plain line. */
  payload: string | null;
}
