// The "codex" agent: OpenAI's Codex CLI (checked with @openai/codex 0.171), run as
//   codex exec --json --skip-git-repo-check --cd <workspace> --sandbox workspace-write
//     -c approval_policy="never"
//     -c sandbox_workspace_write.network_access=true
//     -c shell_environment_policy.inherit="all"
//     -c shell_environment_policy.ignore_default_excludes=true
//     [-c model_provider="foreman" -c model_providers.foreman={name=…,base_url=…,wire_api="responses"[,env_key="OPENAI_API_KEY"]}]
//     [--model <model>] [<extraArgs>…] -
// in the workspace folder. Why each:
//   - exec --json: one turn, no terminal, its events as JSON lines on stdout (mapped below).
//   - --skip-git-repo-check: a workspace need not be a git repository.
//   - workspace-write with approval "never": it edits the workspace and runs commands without
//     asking anyone (exec has no one to ask); a command the sandbox refuses simply fails.
//     config.sandbox picks another mode (danger-full-access where the sandbox cannot work).
//   - network_access: workspace-write blocks the network of the commands it runs by default,
//     and then `curl "$FOREMAN_ASK_URL"` (127.0.0.1) fails too.
//   - shell_environment_policy: the commands it runs get its whole environment (the task's
//     secrets, FOREMAN_*), whatever its defaults filter (some versions drop names holding KEY,
//     SECRET or TOKEN). Every key above passes codex's --strict-config check.
//   - providerBaseUrl: a self-hosted or test model server speaking the Responses API
//     (OPENAI_BASE_URL is ignored by codex); its key is OPENAI_API_KEY when the environment has one.
//   - "-": the prompt comes on stdin. As an argument it would show in `ps`, hit the kernel's
//     bound on one argument (128 KiB), and a prompt starting with "-" would read as an option.
// Its environment is the command agent's (base env, the task's secrets but no FOREMAN_* ones,
// the FOREMAN_* context), without FOREMAN_PROMPT (stdin has it), with CODEX_HOME set: a private
// folder per session, removed when it ends, so sessions share no state (threads, sqlite
// files, config), unless config.codexHome names one (say, with a `codex login`'s auth.json).
// Its API key otherwise comes from CODEX_API_KEY or OPENAI_API_KEY in the environment. (Under
// the temp folder codex warns on stderr that it makes no PATH helper aliases; nothing needs them.)
//
// Questions: `codex exec` offers the model no way to ask its user (its request_user_input tool
// works in Plan mode only). The agent asks through its shell, like the command agent:
//   answer=$(curl -s --data 'Deploy to staging?' "$FOREMAN_ASK_URL")
// the worker answers that URL once a user has answered (agent.ts). Telling the model so is the
// prompt's business (or an AGENTS.md in the repository).
//
// The end: exit 0 after turn.completed is success; a turn.failed or error event fails it with
// that message; otherwise a non-zero exit (or no completed turn) fails it with the stderr tail.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { lineSplitter, startAgentProcess } from "../agent-process.js";
import type { AgentAdapter, AgentEvent, AgentEventKind, AgentOutcome, AgentStartInput, RunningAgent } from "./agent.js";
import { commandEnvironment } from "./command.js";

export interface CodexAgentConfig {
  /** The codex executable; "codex" looked up on the base environment's PATH by default. */
  executable?: string;
  /** Between SIGTERM and SIGKILL on a stop. */
  graceMs?: number;
  /** codex's --sandbox: read-only, workspace-write (the default) or danger-full-access. */
  sandbox?: string;
  /** A Responses API server (".../v1") to use instead of OpenAI's. */
  providerBaseUrl?: string;
  /** A CODEX_HOME shared by every session, kept afterwards; by default each gets a fresh one. */
  codexHome?: string;
  /** Added after the adapter's own arguments (so a -c here overrides one of them). */
  extraArgs?: string[];
}

// The server's bound on one log line, text and payload_json together (core's MAX_LINE_BYTES,
// which worker/ may not import), less room for masking a short secret as "***".
const MAX_EVENT_BYTES = 64 * 1024 - 1024;
// A JSON line is parsed whole, so the splitter's bound is far above the log's: codex prints
// a command's output in one event (about 1 MB at most, seen). Past this it becomes plain pieces.
const MAX_READ_LINE_BYTES = 16 * 1024 * 1024;
const SUMMARY_CHARS = 200;
const MESSAGE_BYTES = 16 * 1024;
const ERROR_CHARS = 2_000;
const STDERR_TAIL_LINES = 5;
const TOOL_ITEMS = new Set(["command_execution", "file_change", "mcp_tool_call", "web_search"]);

export function codexAgent(config: CodexAgentConfig = {}): AgentAdapter {
  return {
    name: "codex",
    start: (input) => startCodex(config, input),
  };
}

/** The argv of one run (the prompt is not in it: it goes on stdin). */
export function codexArgv(config: CodexAgentConfig, input: AgentStartInput, env: Readonly<Record<string, string>>): string[] {
  const argv = [config.executable ?? "codex", "exec", "--json", "--skip-git-repo-check", "--cd", input.workspace];
  argv.push("--sandbox", config.sandbox ?? "workspace-write");
  argv.push("-c", 'approval_policy="never"');
  argv.push("-c", "sandbox_workspace_write.network_access=true");
  argv.push("-c", 'shell_environment_policy.inherit="all"');
  argv.push("-c", "shell_environment_policy.ignore_default_excludes=true");
  if (config.providerBaseUrl !== undefined) {
    // JSON string syntax is valid TOML basic string syntax for a URL.
    const fields = [`name="foreman"`, `base_url=${JSON.stringify(config.providerBaseUrl)}`, `wire_api="responses"`];
    if (env.OPENAI_API_KEY !== undefined) fields.push(`env_key="OPENAI_API_KEY"`);
    argv.push("-c", 'model_provider="foreman"', "-c", `model_providers.foreman={${fields.join(",")}}`);
  }
  if (input.model !== "") argv.push("--model", input.model);
  argv.push(...(config.extraArgs ?? []), "-");
  return argv;
}

function startCodex(config: CodexAgentConfig, input: AgentStartInput): RunningAgent {
  let privateHome: string | undefined;
  if (config.codexHome === undefined) {
    try {
      privateHome = mkdtempSync(path.join(tmpdir(), "foreman-codex-home-"));
    } catch (error) {
      const outcome: AgentOutcome = { state: "failed", error: `could not make a CODEX_HOME: ${(error as Error).message}` };
      return { stop: () => {}, done: Promise.resolve(outcome) };
    }
  }
  const env = commandEnvironment(input);
  delete env.FOREMAN_PROMPT;
  env.CODEX_HOME = config.codexHome ?? (privateHome as string);

  const stderrTail: string[] = [];
  let failure: string | undefined;
  let turnFailed = false;
  let turnCompleted = false;
  let stopReason = "";

  // Plain lines (stderr, stdout that is not an event) are cut to the log's bound.
  const emitPlain = (stream: "stdout" | "stderr", text: string) => {
    const cut = lineSplitter(stream, MAX_EVENT_BYTES, (piece) => input.onEvent({ stream, text: noNul(piece.text) }));
    cut.push(Buffer.from(text));
    cut.flush();
  };

  const onStdout = (line: string) => {
    const event = parseObject(line);
    if (event === undefined) return emitPlain("stdout", line);
    const mapped = mapEvent(event);
    if (event.type === "turn.completed") turnCompleted = true;
    if (event.type === "turn.failed") {
      turnFailed = true;
      failure = mapped.text;
    } else if (event.type === "error" && !turnFailed) {
      failure = mapped.text;
    }
    input.onEvent(boundEvent(mapped, event, line));
  };

  const child = startAgentProcess({
    argv: codexArgv(config, input, env),
    cwd: input.workspace,
    groupRecord: input.groupRecord,
    env,
    stdin: input.prompt,
    graceMs: config.graceMs,
    maxLineBytes: MAX_READ_LINE_BYTES,
    onLine: ({ stream, text }) => {
      if (stream === "stdout") return onStdout(text);
      stderrTail.push(text.slice(0, ERROR_CHARS));
      if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
      emitPlain("stderr", text);
    },
  });

  const done = child.done.then((outcome): AgentOutcome => {
    if (privateHome !== undefined) removeQuietly(privateHome);
    if (outcome.error !== undefined) return { state: "failed", error: outcome.error };
    if (outcome.stopped) return { state: "cancelled", reason: stopReason };
    if (failure !== undefined) return { state: "failed", error: cutChars(failure, ERROR_CHARS) };
    if (outcome.exitCode === 0 && turnCompleted) return { state: "succeeded" };
    const how =
      outcome.exitCode === 0 ? "codex exited without completing its turn"
      : outcome.exitCode !== null ? `codex exited with code ${outcome.exitCode}`
      : `codex was killed by ${outcome.signal ?? "a signal"}`;
    let tail = stderrTail.join("\n");
    // Keep the end: the last lines say most about why.
    if (tail.length > ERROR_CHARS) tail = "…" + tail.slice(tail.length - ERROR_CHARS);
    return { state: "failed", error: tail === "" ? how : `${how}: ${tail}` };
  });

  return {
    done,
    stop(reason) {
      if (stopReason === "") stopReason = reason;
      child.stop(reason);
    },
  };
}

function removeQuietly(folder: string): void {
  try {
    rmSync(folder, { recursive: true, force: true });
  } catch {
    // Left in the temp folder; the session's outcome matters more.
  }
}

type Json = Record<string, unknown>;

function parseObject(line: string): Json | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Json) : undefined;
  } catch {
    return undefined;
  }
}

const str = (value: unknown): string => (typeof value === "string" ? value : value === undefined || value === null ? "" : String(value));
const obj = (value: unknown): Json => (typeof value === "object" && value !== null ? (value as Json) : {});

/** One codex event's kind and text (session.proto's LogLineKind says what each kind is). */
export function mapEvent(event: Json): { kind: AgentEventKind; text: string } {
  const type = str(event.type);
  switch (type) {
    case "thread.started":
      return { kind: "session_event", text: oneLine(`thread started ${str(event.thread_id)}`) };
    case "turn.started":
      return { kind: "session_event", text: "turn started" };
    case "turn.completed":
      return { kind: "usage", text: usageText(obj(event.usage)) };
    case "turn.failed":
      return { kind: "error", text: message(str(obj(event.error).message) || "the turn failed") };
    case "error":
      return { kind: "error", text: message(str(event.message) || "error") };
    case "item.started":
    case "item.updated":
    case "item.completed":
      return mapItem(type, obj(event.item));
    default:
      return { kind: "session_event", text: oneLine(type || "event") };
  }
}

function mapItem(phase: string, item: Json): { kind: AgentEventKind; text: string } {
  const type = str(item.type);
  if (TOOL_ITEMS.has(type) && phase === "item.started") return { kind: "tool_call", text: oneLine(toolCall(type, item)) };
  if (TOOL_ITEMS.has(type) && phase === "item.completed") return { kind: "tool_result", text: oneLine(toolResult(type, item)) };
  if (type === "agent_message" && phase === "item.completed") return { kind: "assistant_message", text: message(str(item.text)) };
  if (type === "reasoning" && phase === "item.completed") return { kind: "thinking", text: message(str(item.text)) };
  // A warning codex goes on after (an unknown model's metadata, say): not a failure of the run.
  if (type === "error") return { kind: "error", text: message(str(item.message) || "error") };
  return { kind: "session_event", text: oneLine(`${phase} ${type}`) };
}

function toolCall(type: string, item: Json): string {
  switch (type) {
    case "command_execution":
      return `$ ${shellCommand(str(item.command))}`;
    case "file_change":
      return changes(item);
    case "mcp_tool_call":
      return `${str(item.server)}.${str(item.tool)}`;
    default:
      return `search ${str(item.query)}`;
  }
}

function toolResult(type: string, item: Json): string {
  const status = str(item.status);
  switch (type) {
    case "command_execution": {
      const how = typeof item.exit_code === "number" ? `exit ${item.exit_code}` : status || "done";
      const first = str(item.aggregated_output).split("\n").find((l) => l.trim() !== "");
      return first === undefined ? how : `${how}: ${first}`;
    }
    case "file_change":
      return `${status || "done"}: ${changes(item)}`;
    case "mcp_tool_call": {
      const error = str(obj(item.error).message);
      return `${str(item.server)}.${str(item.tool)}: ${status || "done"}${error === "" ? "" : `: ${error}`}`;
    }
    default:
      return `searched ${str(item.query)}`;
  }
}

function changes(item: Json): string {
  const list = Array.isArray(item.changes) ? item.changes.map(obj) : [];
  if (list.length === 0) return "edit";
  return list.map((c) => `${c.kind === "add" ? "add" : c.kind === "delete" ? "delete" : "edit"} ${str(c.path)}`).join(", ");
}

/** `npm test` for codex's `/bin/bash -lc 'npm test'` (its command is quoted as one shell word). */
function shellCommand(command: string): string {
  const wrapped = /^\S*\/(?:ba|z)?sh -lc (.+)$/s.exec(command);
  return (wrapped && unquoteWord(wrapped[1]!)) ?? command;
}

/** One POSIX shell word without its quoting, or undefined when it is not exactly one word. */
function unquoteWord(word: string): string | undefined {
  let out = "";
  for (let i = 0; i < word.length; i++) {
    const c = word[i]!;
    if (c === "'") {
      const end = word.indexOf("'", i + 1);
      if (end === -1) return undefined;
      out += word.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      for (i++; i < word.length && word[i] !== '"'; i++) {
        // Inside double quotes a backslash escapes only these.
        if (word[i] === "\\" && '$`"\\\n'.includes(word[i + 1] ?? "")) i++;
        out += word[i];
      }
      if (i >= word.length) return undefined;
    } else if (c === "\\") {
      out += word[++i] ?? "";
    } else if (/\s/.test(c)) {
      return undefined;
    } else {
      out += c;
    }
  }
  return out;
}

function usageText(usage: Json): string {
  const n = (v: unknown) => (typeof v === "number" ? v : 0);
  const cached = n(usage.cached_input_tokens);
  return `tokens: ${n(usage.input_tokens)} in${cached > 0 ? ` (${cached} cached)` : ""}, ${n(usage.output_tokens)} out`;
}

/** The event as an AgentEvent, its text and payload within the log's bound together. */
function boundEvent(mapped: { kind: AgentEventKind; text: string }, event: Json, line: string): AgentEvent {
  const budget = MAX_EVENT_BYTES - Buffer.byteLength(mapped.text);
  return { stream: "stdout", kind: mapped.kind, text: mapped.text, payloadJson: boundPayload(event, line, budget) };
}

/**
 * The event's own line when it fits; otherwise its JSON with every long string cut (with a
 * marker saying how much), shorter until it fits; at worst only its type and a marker.
 */
export function boundPayload(event: Json, line: string, maxBytes: number): string {
  if (Buffer.byteLength(line) <= maxBytes) return line;
  for (let keep = 16 * 1024; keep >= 64; keep = Math.floor(keep / 2)) {
    const text = JSON.stringify(cutStrings(event, keep));
    if (Buffer.byteLength(text) <= maxBytes) return text;
  }
  return JSON.stringify({ type: cutChars(str(event.type), 100), foreman_cut: `an event of ${Buffer.byteLength(line)} bytes, too big for a log line` });
}

function cutStrings(value: unknown, keep: number): unknown {
  if (typeof value === "string") return value.length <= keep ? value : `${value.slice(0, keep)}…[cut ${value.length - keep} chars]`;
  if (Array.isArray(value)) return value.map((v) => cutStrings(v, keep));
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, cutStrings(v, keep)]));
  }
  return value;
}

/** A summary: one line, control characters as spaces, at most SUMMARY_CHARS. */
function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex
  return cutChars(text.replace(/[\s\x00-\x1f\x7f]+/g, " ").trim(), SUMMARY_CHARS);
}

/** A message's text as it is (lines and all), within MESSAGE_BYTES. */
function message(text: string): string {
  text = noNul(text);
  if (Buffer.byteLength(text) <= MESSAGE_BYTES) return text;
  const bytes = Buffer.from(text);
  let cut = MESSAGE_BYTES;
  while (cut > 0 && ((bytes[cut] ?? 0) & 0xc0) === 0x80) cut--;
  return `${bytes.subarray(0, cut).toString("utf8")}…[cut ${bytes.length - cut} bytes]`;
}

function cutChars(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/** The log refuses a NUL character in a line. */
function noNul(text: string): string {
  return text.includes("\0") ? text.replaceAll("\0", "\uFFFD") : text;
}
