// SessionService: StopSession and TTY input (ListTtyInputRequests, SubmitTtyInput); logs answer
// Unimplemented until their phase serves them.
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { SessionService } from "../../gen/foreman/v1/session_pb.js";
import type { Core } from "../core/context.js";
import * as sessionLogs from "../core/session-logs.js";
import * as sessions from "../core/sessions.js";
import * as ttyRequests from "../core/tty-requests.js";
import { callLogger } from "./context-keys.js";
import { logBatchToProto } from "./log-convert.js";
import { requireUser } from "./principal.js";
import { sessionToProto } from "./task-convert.js";
import { TTY_INPUT_STATUSES, ttyRequestToProto } from "./tty-convert.js";
import { unimplementedMethods } from "./unimplemented.js";

export function sessionService(core: Core): ServiceImpl<typeof SessionService> {
  const log = (ctx: HandlerContext) => callLogger(ctx, core.logger);
  return {
    ...(unimplementedMethods(SessionService, "sessions and logs") as unknown as ServiceImpl<typeof SessionService>),
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
    async listTtyInputRequests(req, ctx) {
      const page = await ttyRequests.listTtyRequests(core, requireUser(ctx), { ...req, status: TTY_INPUT_STATUSES.read(req.status) });
      return { requests: page.items.map(ttyRequestToProto), nextPageToken: page.nextPageToken };
    },
  };
}
