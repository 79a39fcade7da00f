// SessionService: StopSession; logs and TTY requests answer Unimplemented until their phases
// serve them.
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { SessionService } from "../../gen/foreman/v1/session_pb.js";
import type { Core } from "../core/context.js";
import * as sessions from "../core/sessions.js";
import { callLogger } from "./context-keys.js";
import { requireUser } from "./principal.js";
import { sessionToProto } from "./task-convert.js";
import { unimplementedMethods } from "./unimplemented.js";

export function sessionService(core: Core): ServiceImpl<typeof SessionService> {
  const log = (ctx: HandlerContext) => callLogger(ctx, core.logger);
  return {
    ...(unimplementedMethods(SessionService, "sessions and logs") as unknown as ServiceImpl<typeof SessionService>),
    async stopSession(req, ctx) {
      const session = await sessions.stopSession(core, log(ctx), requireUser(ctx), req);
      return { session: sessionToProto(session) };
    },
  };
}
