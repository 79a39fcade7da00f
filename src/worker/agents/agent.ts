// What the worker's session loop needs of an agent, whichever it is (command, Claude Code,
// Codex): start it on a prompt in a workspace, hear what it prints, stop it, learn how it ended.
import type { GroupRecord } from "../orphans.js";

/** The structured kinds of LogLine (session.proto's LogLineKind); a plain line has none. */
export type AgentEventKind = "assistant_message" | "thinking" | "tool_call" | "tool_result" | "usage" | "result" | "error" | "session_event";

/** One line of the session's log: plain output as printed, or one of the agent's structured events. */
export interface AgentEvent {
  stream: "stdout" | "stderr";
  /** Absent for a plain line of output. */
  kind?: AgentEventKind;
  /** The line; for a structured event, a one-line summary a reader can follow. */
  text: string;
  /** For a structured event: the JSON text of one object (the agent's own event as it printed it). */
  payloadJson?: string;
}

/** A question the agent asks its user; the answer comes back as the promise's value. */
export interface AgentQuestion {
  prompt: string;
  type: "text" | "confirm" | "choice";
  /** For "choice": the answers offered. */
  choices?: string[];
}

export interface AgentStartInput {
  taskId: string;
  sessionId: string;
  /** The workspace folder the agent works in. */
  workspace: string;
  prompt: string;
  /** Empty for the agent's own default. */
  model: string;
  /** The base environment (PATH, HOME, ...); the agent gets nothing of the worker's beyond it. */
  env: Readonly<Record<string, string>>;
  /** The task's secrets, for the agent's environment only. */
  secrets: Readonly<Record<string, string>>;
  onEvent: (event: AgentEvent) => void;
  /**
   * An address on 127.0.0.1 the agent's process may POST a question to (a JSON AgentQuestion,
   * or plain text for a TEXT question); the answer is the response body, once a user answers.
   * Adapters hand it to the agent as FOREMAN_ASK_URL. Empty when the worker offers none.
   */
  askUrl: string;
  /** Asks the task's user a question (a TTY input request) for an adapter that sees one in the agent's events. */
  ask: (question: AgentQuestion) => Promise<string>;
  /** Where adapters have startAgentProcess record the agent's process group (orphans.ts); absent: nowhere. */
  groupRecord?: GroupRecord;
}

/** How the session ended, as the worker reports it. */
export type AgentOutcome =
  | { state: "succeeded" }
  | { state: "failed"; error: string }
  | { state: "cancelled"; reason: string };

export interface RunningAgent {
  /** Ends the agent (SIGTERM, then SIGKILL after a grace period); done then says cancelled. */
  stop(reason: string): void;
  /** Never rejects. */
  readonly done: Promise<AgentOutcome>;
}

export interface AgentAdapter {
  /** The name a task asks for ("command", "claude-code", "codex"). */
  readonly name: string;
  start(input: AgentStartInput): RunningAgent;
}
