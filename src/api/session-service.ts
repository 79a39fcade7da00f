// SessionService: a session's log (GetLog pages through it, StreamLog replays and follows it),
// StopSession, and TTY input (ListTtyInputRequests, SubmitTtyInput).
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { SessionEndedSchema, SessionService, StreamLogResponseSchema, type StreamLogResponse } from "../../gen/foreman/v1/session_pb.js";
import type { Core } from "../core/context.js";
import * as sessions from "../core/sessions.js";
import * as sessionLogs from "../core/session-logs.js";
import * as ttyRequests from "../core/tty-requests.js";
import * as logStream from "../core/log-stream.js";
import { callLogger, untilClosed } from "./context-keys.js";
import { SESSION_STATES } from "./enums.js";
import { logBatchToProto } from "./log-convert.js";
import { requireUser } from "./principal.js";
import { sessionToProto } from "./task-convert.js";
import { TTY_INPUT_STATUSES, ttyRequestToProto } from "./tty-convert.js";

export function sessionService(core: Core): ServiceImpl<typeof SessionService> {
  const log = (ctx: HandlerContext) => callLogger(ctx, core.logger);
  return {
    async getLog(req, ctx) {
      const page = await sessionLogs.getLog(core, requireUser(ctx), req);
      return { batches: page.batches.map(logBatchToProto), lastSequence: page.lastSequence, sessionEnded: page.sessionEnded };
    },
    async stopSession(req, ctx) {
      const session = await sessions.stopSession(core, log(ctx), requireUser(ctx), req);
      return { session: sessionToProto(session) };
    },
    async submitTtyInput(req, ctx) {
      return { request: ttyRequestToProto(await ttyRequests.submitTtyInput(core, log(ctx), requireUser(ctx), req)) };
    },
    async *streamLog(req, ctx): AsyncGenerator<StreamLogResponse> {
      const ownerId = requireUser(ctx);
      for await (const item of untilClosed(ctx, (signal) => logStream.streamLog(core, ownerId, req, signal))) {
        if ("batch" in item) yield batchMessage(item.batch);
        else if ("tty" in item) yield create(StreamLogResponseSchema, { event: { case: "ttyInputRequest", value: ttyRequestToProto(item.tty) } });
        else if ("end" in item) yield create(StreamLogResponseSchema, { event: { case: "ended", value: endedToProto(item.end) } });
        else yield KEEP_ALIVE;
      }
    },
    async listTtyInputRequests(req, ctx) {
      const page = await ttyRequests.listTtyRequests(core, requireUser(ctx), { ...req, status: TTY_INPUT_STATUSES.read(req.status) });
      return { requests: page.items.map(ttyRequestToProto), nextPageToken: page.nextPageToken };
    },
  };
}

const KEEP_ALIVE = create(StreamLogResponseSchema, { event: { case: "keepAlive", value: {} } });

/**
 * Every reader of a session gets the same batch object from the shared feed: its message is
 * made once, not once per reader (as WatchTasks does with its changes).
 */
const batchMessages = new WeakMap<object, StreamLogResponse>();

function batchMessage(item: logStream.LogFeedItem): StreamLogResponse {
  let message = batchMessages.get(item);
  if (message === undefined) {
    message = create(StreamLogResponseSchema, { event: { case: "batch", value: logBatchToProto(item.batch!) } });
    batchMessages.set(item, message);
  }
  return message;
}

function endedToProto(end: logStream.SessionEnd) {
  return create(SessionEndedSchema, {
    state: SESSION_STATES.value(end.state),
    ...(end.exitCode !== null ? { exitCode: end.exitCode } : {}),
    errorMessage: end.errorMessage,
    lastSequence: end.lastSequence,
  });
}
