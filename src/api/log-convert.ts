// Log lines and batches between the contract and core: LogStream and LogLineKind as core's
// names, and a stored batch as a LogBatch (GetLog, and StreamLog's batches).
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LogBatchSchema, LogLineKind, LogLineSchema, LogStream, type LogBatch, type LogLine } from "../../gen/foreman/v1/session_pb.js";
import type * as logs from "../model/logs.js";
import { EnumNames } from "./enums.js";

export const LOG_STREAMS = new EnumNames<Exclude<logs.LogStreamName, "unspecified">, LogStream>({
  stdout: LogStream.STDOUT,
  stderr: LogStream.STDERR,
  system: LogStream.SYSTEM,
});

export const LOG_LINE_KINDS = new EnumNames<Exclude<logs.LogLineKind, "text">, LogLineKind>({
  assistant_message: LogLineKind.ASSISTANT_MESSAGE,
  thinking: LogLineKind.THINKING,
  tool_call: LogLineKind.TOOL_CALL,
  tool_result: LogLineKind.TOOL_RESULT,
  usage: LogLineKind.USAGE,
  result: LogLineKind.RESULT,
  error: LogLineKind.ERROR,
  session_event: LogLineKind.SESSION_EVENT,
});

/** A request's line as core reads it: UNSPECIFIED stream as "unspecified", UNSPECIFIED and TEXT kind as "text". */
export function logLineFromProto(l: LogLine): { stream: string; kind: string; text: string; time: Date | null; payload: string } {
  return {
    stream: LOG_STREAMS.read(l.stream) ?? "unspecified",
    kind: l.kind === LogLineKind.TEXT ? "text" : (LOG_LINE_KINDS.read(l.kind) ?? "text"),
    text: l.text,
    time: l.time === undefined ? null : timestampDate(l.time),
    payload: l.payloadJson,
  };
}

function logLineToProto(l: logs.LogLine): LogLine {
  return create(LogLineSchema, {
    stream: LOG_STREAMS.value(l.stream),
    text: l.text,
    ...(l.time !== null ? { time: timestampFromDate(l.time) } : {}),
    kind: l.kind === "text" ? LogLineKind.UNSPECIFIED : LOG_LINE_KINDS.value(l.kind),
    payloadJson: l.payload ?? "",
  });
}

/** A stored batch (store/log-batches.ts StoredBatch, as core hands it on). */
export function logBatchToProto(b: { sequence: number; lines: readonly logs.LogLine[] }): LogBatch {
  return create(LogBatchSchema, { sequence: b.sequence, lines: b.lines.map(logLineToProto) });
}
