// The "claude-code" agent: Anthropic's Claude Code CLI in print mode, run in the workspace folder:
//
//   claude -p --output-format stream-json --verbose --permission-mode <mode>
//          [--allowedTools <tools,...>] [--model <model>] [--append-system-prompt <how to ask>]
//          [extraArgs...]            (the prompt on stdin)
//
// - The prompt goes on stdin, not in argv: an argument is bounded (128 KiB on Linux) and a
//   prompt starting with "-" would read as an option. FOREMAN_PROMPT is left out of the
//   environment for the same bound, and so the prompt does not sit in every Bash command's env.
// - Permissions: print mode cannot ask for permission, so a tool not allowed is refused. The
//   defaults let it work in a throwaway workspace: acceptEdits (Write/Edit/Read in the folder)
//   and Bash allowed. Not bypassPermissions: the CLI refuses that as root (workers in containers
//   often are) unless IS_SANDBOX=1, which is the operator's choice (config.permissionMode and
//   the base environment), not this adapter's.
// - Environment: the command agent's (commandEnvironment): the base env, the task's secrets
//   (FOREMAN_* names dropped), FOREMAN_TASK_ID/SESSION_ID/WORKSPACE/MODEL and FOREMAN_ASK_URL.
//   ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL) come from the base env or the task's secrets.
// - Output: each stream-json line becomes one event per content block: system init →
//   session_event; assistant text → assistant_message (an API error the CLI reports as a
//   synthetic message → error); thinking → thinking; tool_use → tool_call; a user message's
//   tool_result → tool_result; a message's usage (once per message id; the CLI prints the usage
//   of the stream's start, the result has the totals) → usage; result → result. Any other JSON
//   object line is a session_event; a line that is not JSON is a plain line. The payload is the
//   block (or the usage, or the whole line) as the CLI printed it.
// - Bounds: the server refuses a line whose text and payload_json pass 64 KiB together
//   (core/session-logs.ts MAX_LINE_BYTES), so each event stays within that: a text is cut at
//   32 KiB, and a payload that does not fit has its long strings cut (marked "… [cut: N more
//   characters]", with "foreman_truncated": true), or is replaced by a small marker object.
//   The CLI's own lines may be several MB (an Edit's tool_use_result holds the whole file), so
//   the process reads lines of up to 16 MiB; longer ones, and plain lines, are cut in pieces.
// - The end: exit 0 with a result that is not an error → succeeded; a result with is_error or
//   an error subtype → failed with the result's text; no result → failed with the exit and the
//   stderr tail; stop() → cancelled.
// - Leftovers: the CLI runs each Bash command in a session of its own (setsid), so what a
//   command leaves running (`npm run dev &`) is outside the process group startAgentProcess
//   ends. Such processes still carry the task's environment, so once claude has ended, every
//   process whose /proc/<pid>/environ holds this FOREMAN_TASK_ID and FOREMAN_SESSION_ID is
//   killed (Linux; elsewhere nothing is swept).
// - Known CLI limit: when claude exits right after writing a line larger than its stdout pipe
//   holds, it sometimes drops the end of it (a result line of 300 KB: 2 runs in 10 here). A
//   result line cut off so still says how the run ended in its first fields (type, subtype,
//   is_error), and those decide the outcome.
// - Questions: this CLI (2.1.197) offers no AskUserQuestion tool in print mode (not even with
//   --input-format stream-json), and answering one would need stdin kept open for its control
//   protocol. So a session asks through its Bash tool, `curl -s --data-binary '<question>'
//   "$FOREMAN_ASK_URL"`, which prints the answer once the user gives it (the worker serves that
//   URL); with an ask URL the system prompt is told so. input.ask is not used.
import { readdir, readFile } from "node:fs/promises";
import { lineSplitter, startAgentProcess } from "../agent-process.js";
import type { AgentAdapter, AgentEvent, AgentEventKind, AgentOutcome, AgentStartInput, RunningAgent } from "./agent.js";
import { commandEnvironment } from "./command.js";

export interface ClaudeCodeAgentConfig {
  /** The CLI; looked up on the base env's PATH. Default "claude". */
  executable?: string;
  /** Between SIGTERM and SIGKILL on a stop. */
  graceMs?: number;
  /** Default "acceptEdits". */
  permissionMode?: string;
  /** Tools allowed without asking; default ["Bash"]. Empty for none beyond the mode's. */
  allowedTools?: string[];
  /** Added after the adapter's own arguments. */
  extraArgs?: string[];
  /** The longest stream-json line read whole; default 16 MiB. */
  maxLineBytes?: number;
}

/** A log line's text and payload_json together (the server's MAX_LINE_BYTES). */
export const MAX_EVENT_BYTES = 64 * 1024;
const MAX_TEXT_BYTES = 32 * 1024;
const SUMMARY_CHARS = 200;
const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;
const STDERR_TAIL_LINES = 5;
const ERROR_CHARS = 2_000;

export const ASK_PROMPT =
  "When you need an answer from the user before you can go on, ask with the Bash tool: " +
  "`curl -s --data-binary 'your question' \"$FOREMAN_ASK_URL\"` prints their answer once they give it " +
  '(give the Bash call a timeout of 600000). For a yes/no question send JSON: {"prompt": "your question", "type": "confirm"}.';

export function claudeCodeAgent(config: ClaudeCodeAgentConfig = {}): AgentAdapter {
  return {
    name: "claude-code",
    start: (input) => startClaudeCode(config, input),
  };
}

/** The argv the adapter runs for a task (the prompt goes on stdin). */
export function claudeCodeArgv(config: ClaudeCodeAgentConfig, input: Pick<AgentStartInput, "model" | "askUrl">): string[] {
  const argv = [config.executable ?? "claude", "-p", "--output-format", "stream-json", "--verbose"];
  argv.push("--permission-mode", config.permissionMode ?? "acceptEdits");
  const tools = config.allowedTools ?? ["Bash"];
  if (tools.length > 0) argv.push("--allowedTools", tools.join(","));
  if (input.model !== "") argv.push("--model", input.model);
  if (input.askUrl !== "") argv.push("--append-system-prompt", ASK_PROMPT);
  argv.push(...(config.extraArgs ?? []));
  return argv;
}

interface ResultSeen {
  failed: boolean;
  error: string;
}

function startClaudeCode(config: ClaudeCodeAgentConfig, input: AgentStartInput): RunningAgent {
  const env = commandEnvironment(input);
  delete env.FOREMAN_PROMPT;
  const stderrTail: string[] = [];
  let stopReason = "";
  let result: ResultSeen | undefined;
  let cutResult: ResultSeen | undefined;
  const translator = streamJsonTranslator(input.workspace);

  // Plain lines go out in pieces the server takes.
  const emitPlain = (stream: "stdout" | "stderr", text: string) => {
    if (Buffer.byteLength(text, "utf8") <= MAX_EVENT_BYTES) {
      input.onEvent({ stream, text });
      return;
    }
    const pieces = lineSplitter(stream, MAX_EVENT_BYTES, (line) => input.onEvent(line));
    pieces.push(Buffer.from(text, "utf8"));
    pieces.flush();
  };

  const child = startAgentProcess({
    argv: claudeCodeArgv(config, input),
    cwd: input.workspace,
    groupRecord: input.groupRecord,
    env,
    stdin: input.prompt,
    graceMs: config.graceMs,
    maxLineBytes: config.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
    onLine: ({ stream, text }) => {
      if (stream === "stderr") {
        stderrTail.push(text.slice(0, ERROR_CHARS));
        if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
        emitPlain(stream, text);
        return;
      }
      const translated = translator(text);
      if (translated === undefined) {
        cutResult ??= cutOffResult(text);
        emitPlain(stream, text);
        return;
      }
      if (translated.result) result = translated.result;
      for (const event of translated.events) input.onEvent(event);
    },
  });

  const done = child.done.then(async (outcome): Promise<AgentOutcome> => {
    await killLeftovers(input.taskId, input.sessionId).catch(() => {});
    if (outcome.error !== undefined) return { state: "failed", error: outcome.error };
    if (outcome.stopped) return { state: "cancelled", reason: stopReason };
    result ??= cutResult;
    if (result?.failed) return { state: "failed", error: result.error };
    if (result && outcome.exitCode === 0) return { state: "succeeded" };
    const how = outcome.exitCode !== null ? `claude exited with code ${outcome.exitCode}` : `claude was killed by ${outcome.signal ?? "a signal"}`;
    const detail = result ? "" : " without a result";
    return { state: "failed", error: failureMessage(how + detail, stderrTail) };
  });

  return {
    done,
    stop(reason) {
      if (stopReason === "") stopReason = reason;
      child.stop(reason);
    },
  };
}

/** SIGKILLs the processes (not this one) whose environment marks them as this session's. */
async function killLeftovers(taskId: string, sessionId: string): Promise<void> {
  const marks = [`FOREMAN_TASK_ID=${taskId}`, `FOREMAN_SESSION_ID=${sessionId}`];
  // A few rounds: one may have forked while the last round killed its parent.
  for (let round = 0; round < 3; round++) {
    let pids: string[];
    try {
      pids = (await readdir("/proc")).filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid);
    } catch {
      return;
    }
    let killed = 0;
    for (const pid of pids) {
      // Another user's process is unreadable; a zombie's environ is empty.
      const environ = await readFile(`/proc/${pid}/environ`, "utf8").catch(() => "");
      if (environ === "") continue;
      const vars = environ.split("\0");
      if (!marks.every((mark) => vars.includes(mark))) continue;
      try {
        process.kill(Number(pid), "SIGKILL");
        killed++;
      } catch {
        // Gone already.
      }
    }
    if (killed === 0) return;
  }
}

function failureMessage(how: string, stderrTail: readonly string[]): string {
  if (stderrTail.length === 0) return how;
  let tail = stderrTail.join("\n");
  if (tail.length > ERROR_CHARS) tail = "…" + tail.slice(tail.length - ERROR_CHARS);
  return `${how}: ${tail}`;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

/**
 * Turns one stdout line into events, or undefined when the line is not a JSON object (a plain
 * line). Keeps the message ids it has reported usage for.
 */
export function streamJsonTranslator(workspace: string) {
  const usageSeen = new Set<string>();
  return (line: string): { events: AgentEvent[]; result?: ResultSeen } | undefined => {
    if (!line.startsWith("{")) return undefined;
    let msg: Json;
    try {
      msg = JSON.parse(line);
    } catch {
      return undefined;
    }
    if (msg === null || typeof msg !== "object" || Array.isArray(msg)) return undefined;
    const events: AgentEvent[] = [];
    const add = (kind: AgentEventKind, text: string, payload: Json, raw?: string) => events.push(boundedEvent(kind, text, payload, raw));

    switch (msg.type) {
      case "assistant": {
        const message = msg.message ?? {};
        // The CLI reports an API failure as a synthetic assistant message with `error` set.
        const textKind: AgentEventKind = msg.error ? "error" : "assistant_message";
        for (const block of contentBlocks(message.content)) {
          if (block.type === "text") add(textKind, String(block.text ?? ""), block);
          else if (block.type === "thinking") add("thinking", String(block.thinking ?? ""), block);
          else if (block.type === "redacted_thinking") add("thinking", "(redacted thinking)", block);
          else if (block.type === "tool_use" || block.type === "server_tool_use") add("tool_call", toolCallSummary(block, workspace), block);
          else add("session_event", `assistant ${String(block.type)}`, block);
        }
        const id = typeof message.id === "string" ? message.id : "";
        if (message.usage && typeof message.usage === "object" && message.model !== "<synthetic>" && !usageSeen.has(id)) {
          if (id !== "") usageSeen.add(id);
          add("usage", usageSummary(message.usage), message.usage);
        }
        break;
      }
      case "user": {
        const content = msg.message?.content;
        if (typeof content === "string") {
          add("session_event", `user: ${oneLine(content)}`, msg, line);
          break;
        }
        for (const block of contentBlocks(content)) {
          if (block.type === "tool_result") add("tool_result", toolResultSummary(block), block);
          else if (block.type === "text") add("session_event", `user: ${oneLine(String(block.text ?? ""))}`, block);
          else add("session_event", `user ${String(block.type)}`, block);
        }
        break;
      }
      case "result": {
        const seen = resultSeen(msg);
        add("result", resultSummary(msg, seen), msg, line);
        return { events, result: seen };
      }
      case "system": {
        const text =
          msg.subtype === "init"
            ? `session ${String(msg.session_id ?? "")} started: model ${String(msg.model ?? "")}, permission mode ${String(msg.permissionMode ?? "")}, ${Array.isArray(msg.tools) ? msg.tools.length : 0} tools`
            : `system ${String(msg.subtype ?? "")}`.trim();
        add("session_event", text, msg, line);
        break;
      }
      default:
        add("session_event", [msg.type, msg.subtype].filter((p) => typeof p === "string").join(" ") || "event", msg, line);
    }
    return { events };
  };
}

function contentBlocks(content: Json): Json[] {
  if (!Array.isArray(content)) return [];
  return content.filter((b) => b !== null && typeof b === "object" && !Array.isArray(b));
}

/** `Write src/a.ts`, `Bash: npm test`, `Grep TODO`: the tool and what it is about. */
function toolCallSummary(block: Json, workspace: string): string {
  const name = String(block.name ?? "tool");
  const input = block.input && typeof block.input === "object" ? block.input : {};
  if (typeof input.command === "string") return oneLine(`${name}: ${input.command}`);
  for (const key of ["file_path", "notebook_path", "path"]) {
    if (typeof input[key] === "string") return oneLine(`${name} ${relativeTo(workspace, input[key])}`);
  }
  for (const key of ["pattern", "url", "query", "description", "prompt"]) {
    if (typeof input[key] === "string") return oneLine(`${name} ${input[key]}`);
  }
  return name;
}

function relativeTo(workspace: string, file: string): string {
  const prefix = workspace.endsWith("/") ? workspace : workspace + "/";
  return file.startsWith(prefix) ? file.slice(prefix.length) : file;
}

function toolResultSummary(block: Json): string {
  let text = "";
  if (typeof block.content === "string") text = block.content;
  else {
    const first = contentBlocks(block.content).find((b) => b.type === "text");
    text = first ? String(first.text ?? "") : contentBlocks(block.content).map((b) => String(b.type)).join(", ");
  }
  const firstLine = text.trimStart().split("\n", 1)[0] ?? "";
  const summary = oneLine(firstLine) || "(no output)";
  return block.is_error === true ? `error: ${summary}` : summary;
}

function usageSummary(usage: Json): string {
  const n = (v: unknown) => (typeof v === "number" ? v : 0);
  let text = `usage: ${n(usage.input_tokens)} input, ${n(usage.output_tokens)} output tokens`;
  const cacheRead = n(usage.cache_read_input_tokens);
  const cacheWrite = n(usage.cache_creation_input_tokens);
  if (cacheRead > 0 || cacheWrite > 0) text += ` (cache: ${cacheRead} read, ${cacheWrite} written)`;
  return text;
}

function resultSeen(msg: Json): ResultSeen {
  const failed = msg.is_error === true || (typeof msg.subtype === "string" && msg.subtype !== "success");
  let error = "";
  if (typeof msg.result === "string" && msg.result.trim() !== "") error = msg.result.trim();
  else if (Array.isArray(msg.errors) && msg.errors.length > 0) error = msg.errors.map(String).join("; ");
  else error = `claude ended with ${String(msg.subtype ?? "an error")}`;
  if (error.length > ERROR_CHARS) error = error.slice(0, ERROR_CHARS) + "…";
  return { failed, error };
}

/** The ending a result line says in its first fields, when the rest of it was lost. */
function cutOffResult(line: string): ResultSeen | undefined {
  const head = /^\{"type":"result","subtype":"([a-z_]+)","is_error":(true|false)/.exec(line);
  if (!head) return undefined;
  const failed = head[2] === "true" || head[1] !== "success";
  return { failed, error: `claude ended with ${head[1]}${head[2] === "true" ? " (is_error)" : ""}; the rest of its result line was cut off` };
}

function resultSummary(msg: Json, seen: ResultSeen): string {
  const parts: string[] = [];
  if (typeof msg.num_turns === "number") parts.push(`${msg.num_turns} turns`);
  if (typeof msg.total_cost_usd === "number") parts.push(`$${msg.total_cost_usd.toFixed(4)}`);
  if (typeof msg.duration_ms === "number") parts.push(`${(msg.duration_ms / 1000).toFixed(1)} s`);
  const head = seen.failed ? `error (${String(msg.subtype ?? "")}): ${oneLine(seen.error)}` : "success";
  return parts.length > 0 ? `${head}; ${parts.join(", ")}` : head;
}

/** The first line, without NULs, at most SUMMARY_CHARS. */
function oneLine(text: string): string {
  let line = text.split("\n", 1)[0]!.replaceAll("\0", "");
  if (line.length > SUMMARY_CHARS) line = line.slice(0, SUMMARY_CHARS) + "…";
  return line;
}

/** One event within MAX_EVENT_BYTES: the text cut first, then the payload fitted to what is left. */
function boundedEvent(kind: AgentEventKind, text: string, payload: Json, raw?: string): AgentEvent {
  text = cutText(text.replaceAll("\0", ""), MAX_TEXT_BYTES);
  const payloadJson = fitPayload(payload, raw ?? JSON.stringify(payload), MAX_EVENT_BYTES - Buffer.byteLength(text, "utf8"));
  return { stream: "stdout", kind, text, payloadJson };
}

function cutText(text: string, maxBytes: number): string {
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes <= maxBytes) return text;
  const marker = ` … [cut: ${bytes} bytes in all]`;
  const keep = Buffer.from(text, "utf8").subarray(0, maxBytes - Buffer.byteLength(marker));
  // Decoding drops a character cut in half as U+FFFD; strip it.
  return keep.toString("utf8").replace(/\uFFFD$/, "") + marker;
}

/** The JSON as printed when it fits; else with its long strings cut; else a marker object. */
function fitPayload(payload: Json, json: string, maxBytes: number): string {
  const bytes = Buffer.byteLength(json, "utf8");
  if (bytes <= maxBytes) return json;
  for (const cap of [16_384, 4_096, 1_024, 256, 64]) {
    const cut = JSON.stringify({ ...cutStrings(payload, cap), foreman_truncated: true });
    if (Buffer.byteLength(cut, "utf8") <= maxBytes) return cut;
  }
  return JSON.stringify({ type: typeof payload.type === "string" ? payload.type.slice(0, 64) : "unknown", foreman_truncated: true, bytes });
}

function cutStrings(value: Json, cap: number): Json {
  if (typeof value === "string") return value.length > cap ? `${value.slice(0, cap)}… [cut: ${value.length - cap} more characters]` : value;
  if (Array.isArray(value)) return value.map((v) => cutStrings(v, cap));
  if (value !== null && typeof value === "object") {
    const out: Record<string, Json> = {};
    for (const [k, v] of Object.entries(value)) out[k] = cutStrings(v, cap);
    return out;
  }
  return value;
}
