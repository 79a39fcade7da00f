// The "command" agent: any executable (an argv array from the worker's configuration), run in
// the workspace folder. What it is given:
//   - the prompt on stdin (then stdin is closed), and the same prompt in FOREMAN_PROMPT;
//   - the task context in FOREMAN_TASK_ID, FOREMAN_SESSION_ID, FOREMAN_WORKSPACE (the workspace
//     folder, also its working directory) and FOREMAN_MODEL (empty when the task names none);
//   - FOREMAN_ASK_URL, where it asks its user a question: POST the question, read the answer
//     (`answer=$(curl -s --data 'Go on?' "$FOREMAN_ASK_URL")`; agent.ts says the format);
//   - the task's secrets as environment variables, over the base environment. FOREMAN_ names
//     are the worker's: a secret by such a name is left out, so none can change the context.
// No arguments are added to the configured argv. Its stdout and stderr are logged line by line.
// Exit 0 is success; any other exit fails the session with the code and the tail of stderr.
import { startAgentProcess } from "../agent-process.js";
import type { AgentAdapter, AgentOutcome, AgentStartInput, RunningAgent } from "./agent.js";

export interface CommandAgentConfig {
  argv: readonly string[];
  /** Between SIGTERM and SIGKILL on a stop. */
  graceMs?: number;
  maxLineBytes?: number;
}

// Enough of stderr to see why it failed, bounded so a failure message stays a message.
const STDERR_TAIL_LINES = 5;
const STDERR_TAIL_CHARS = 2_000;

export function commandAgent(config: CommandAgentConfig): AgentAdapter {
  return {
    name: "command",
    start: (input) => startCommand(config, input),
  };
}

/** The agent's whole environment: base, then secrets, then the context, which nothing overrides. */
export function commandEnvironment(input: AgentStartInput): Record<string, string> {
  const env: Record<string, string> = { ...input.env };
  for (const [name, value] of Object.entries(input.secrets)) {
    if (!name.startsWith("FOREMAN_")) env[name] = value;
  }
  env.FOREMAN_PROMPT = input.prompt;
  env.FOREMAN_TASK_ID = input.taskId;
  env.FOREMAN_SESSION_ID = input.sessionId;
  env.FOREMAN_WORKSPACE = input.workspace;
  env.FOREMAN_MODEL = input.model;
  if (input.askUrl !== "") env.FOREMAN_ASK_URL = input.askUrl;
  return env;
}

function startCommand(config: CommandAgentConfig, input: AgentStartInput): RunningAgent {
  const stderrTail: string[] = [];
  let stopReason = "";
  const child = startAgentProcess({
    argv: config.argv,
    cwd: input.workspace,
    groupRecord: input.groupRecord,
    env: commandEnvironment(input),
    stdin: input.prompt,
    graceMs: config.graceMs,
    maxLineBytes: config.maxLineBytes,
    onLine: ({ stream, text }) => {
      if (stream === "stderr") {
        stderrTail.push(text);
        if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
      }
      input.onEvent({ stream, text });
    },
  });

  const done = child.done.then((outcome): AgentOutcome => {
    if (outcome.error !== undefined) return { state: "failed", error: outcome.error };
    if (outcome.stopped) return { state: "cancelled", reason: stopReason };
    if (outcome.exitCode === 0) return { state: "succeeded" };
    const how = outcome.exitCode !== null ? `exited with code ${outcome.exitCode}` : `killed by ${outcome.signal ?? "a signal"}`;
    return { state: "failed", error: failureMessage(how, stderrTail) };
  });

  return {
    done,
    stop(reason) {
      if (stopReason === "") stopReason = reason;
      child.stop(reason);
    },
  };
}

function failureMessage(how: string, stderrTail: readonly string[]): string {
  if (stderrTail.length === 0) return how;
  let tail = stderrTail.join("\n");
  // Keep the end: the last lines say most about why.
  if (tail.length > STDERR_TAIL_CHARS) tail = "…" + tail.slice(tail.length - STDERR_TAIL_CHARS);
  return `${how}: ${tail}`;
}
