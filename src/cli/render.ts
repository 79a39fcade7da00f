// How the daily verbs print: aligned tables, colour only on a terminal (never with NO_COLOR),
// enum values by their lower-case names, times, JSON for scripts, and a log line as a person
// reads it (structured lines marked by kind, the system's lines marked as such).
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { AgentType, ExecutionState, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { LogLineKind, LogStream, TtyInputStatus, TtyInputType, type LogLine, type TtyInputRequest } from "../../gen/foreman/v1/session_pb.js";

export type Out = (line: string) => void;

/** Colour for a stream: on a terminal, unless NO_COLOR is set (to anything but empty). */
export function colourFor(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && !env.NO_COLOR && env.TERM !== "dumb";
}

export interface Paint {
  dim(s: string): string;
  bold(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  cyan(s: string): string;
}

const sgr = (on: boolean, code: string) => (s: string) => (on && s !== "" ? `\x1b[${code}m${s}\x1b[0m` : s);

export function paint(on: boolean): Paint {
  return { dim: sgr(on, "2"), bold: sgr(on, "1"), red: sgr(on, "31"), green: sgr(on, "32"), yellow: sgr(on, "33"), cyan: sgr(on, "36") };
}

/** The visible width of s (colour codes count for nothing). */
const SGR = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");
const width = (s: string) => [...s.replace(SGR, "")].length;

/** Rows under a header, each column as wide as its widest cell, two spaces apart. */
export function table(header: string[], rows: string[][], p: Paint): string[] {
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ""))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + " ".repeat(widths[i]! - width(c))))
      .join("  ")
      .trimEnd();
  return [p.bold(line(header)), ...rows.map(line)];
}

/** An enum value by its proto name without the prefix, lower-case: TASK_STATUS_IN_REVIEW → in_review. */
export function enumName(e: Record<number, string>, value: number, prefix: string): string {
  const name = e[value];
  if (name === undefined || name === "UNSPECIFIED") return "-";
  return name.toLowerCase().replace(prefix, "");
}

export const statusName = (s: TaskStatus) => enumName(TaskStatus, s, "");
export const executionName = (s: ExecutionState) => enumName(ExecutionState, s, "");
export const sessionStateName = (s: SessionState) => enumName(SessionState, s, "");
/** claude-code, codex, command, ... as --agent takes them. */
export const agentName = (a: AgentType) => enumName(AgentType, a, "").replace(/_/g, "-");

/** A status name (in_review, in-review, IN_REVIEW) as TaskStatus; undefined if there is none. */
export function parseStatus(name: string): TaskStatus | undefined {
  const key = name.trim().toUpperCase().replace(/-/g, "_") as keyof typeof TaskStatus;
  const value = TaskStatus[key] as TaskStatus | undefined;
  return typeof value === "number" && value !== TaskStatus.UNSPECIFIED ? value : undefined;
}

export function statusColour(s: TaskStatus, p: Paint): (text: string) => string {
  if (s === TaskStatus.FAILED || s === TaskStatus.REJECTED) return p.red;
  if (s === TaskStatus.IN_REVIEW || s === TaskStatus.PENDING_APPROVAL) return p.yellow;
  if (s === TaskStatus.DONE || s === TaskStatus.APPROVED) return p.green;
  if (s === TaskStatus.CANCELLED) return p.dim;
  return p.cyan;
}

export const time = (t: Timestamp | undefined) => (t === undefined ? "-" : timestampDate(t).toISOString().replace(/\.\d+Z$/, "Z"));

/** A message as one JSON object (proto JSON: camelCase names, enums by name), on one line. */
export function json<D extends DescMessage>(schema: D, message: MessageShape<D>): unknown {
  return toJson(schema, message, { alwaysEmitImplicit: false });
}

export const jsonLine = (value: unknown) => JSON.stringify(value);

/** A log line as a person reads it: marked by its kind, and the system's lines as such. */
export function renderLine(line: LogLine, p: Paint): string {
  const text = line.text;
  if (line.stream === LogStream.SYSTEM) return p.yellow(`[system] ${text}`);
  switch (line.kind) {
    case LogLineKind.TOOL_CALL:
      return `${p.cyan("→")} ${text}`;
    case LogLineKind.TOOL_RESULT:
      return p.dim(`← ${text}`);
    case LogLineKind.THINKING:
    case LogLineKind.USAGE:
    case LogLineKind.RESULT:
    case LogLineKind.SESSION_EVENT:
      return p.dim(text);
    case LogLineKind.ERROR:
      return p.red(text);
    default:
      return line.stream === LogStream.STDERR ? p.red(text) : text;
  }
}

/** A question the agent asked, with the command that answers it; or what became of it. */
export function renderQuestion(q: TtyInputRequest, p: Paint): string[] {
  if (q.status === TtyInputStatus.ANSWERED) return [p.dim(`? ${q.prompt} — answered: ${q.response}`)];
  if (q.status === TtyInputStatus.CANCELLED) return [p.dim(`? ${q.prompt} — not answered: the session ended`)];
  const choices =
    q.inputType === TtyInputType.CONFIRM ? " [yes/no]" : q.inputType === TtyInputType.CHOICE ? ` [${q.options.join(" | ")}]` : "";
  const example = q.inputType === TtyInputType.CONFIRM ? "yes" : q.inputType === TtyInputType.CHOICE ? shellWord(q.options[0] ?? "") : "'your answer'";
  return [p.bold(p.yellow(`? ${q.prompt}${choices}`)), `  answer it: foreman answer ${q.id} ${example}`];
}

/** s as one word for a POSIX shell. */
export function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
