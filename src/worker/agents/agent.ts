// What the worker's session loop needs of an agent, whichever it is (command, Claude Code,
// Codex): start it on a prompt in a workspace, hear what it prints, stop it, learn how it ended.

/** Output as the agent printed it; structured kinds (tool calls, questions) come later. */
export interface AgentEvent {
  kind: "stdout" | "stderr";
  text: string;
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
