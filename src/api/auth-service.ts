import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { AuthService } from "../../gen/foreman/v1/auth_pb.js";
import { callLogger } from "./context-keys.js";
import { requireUser } from "./principal.js";
import type { Core } from "../core/context.js";
import * as logins from "../core/logins.js";
import * as workers from "../core/workers.js";
import { registrationTokenToProto, tokenSetToProto, userToProto, workerToProto } from "./convert.js";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";

export function authService(core: Core): ServiceImpl<typeof AuthService> {
  // Core logs a call's work on the call's logger, which carries its request id.
  const log = (ctx: HandlerContext) => callLogger(ctx, core.logger);
  return {
    async getLoginUrl(req, ctx) {
      const login = await logins.startLogin(core, log(ctx), req.redirectUri);
      return { url: login.url, state: login.state, expireTime: timestampFromDate(login.expiresAt) };
    },
    async handleCallback(req, ctx) {
      const { tokens, user } = await logins.finishLogin(core, log(ctx), req);
      return { tokens: tokenSetToProto(tokens), user: userToProto(user) };
    },
    async refreshToken(req, ctx) {
      return { tokens: tokenSetToProto(await logins.refresh(core, log(ctx), req.refreshToken)) };
    },
    async getCurrentUser(_req, ctx) {
      return { user: userToProto(await logins.currentUser(core, requireUser(ctx))) };
    },
    async logout(req, ctx) {
      await logins.logout(core, requireUser(ctx), req.refreshToken);
      return {};
    },
    async createWorkerRegistrationToken(req, ctx) {
      const { token, secret } = await workers.createRegistrationToken(core, requireUser(ctx), req);
      return { token: registrationTokenToProto(token), secret };
    },
    async listWorkerRegistrationTokens(req, ctx) {
      const page = await workers.listRegistrationTokens(core, requireUser(ctx), req);
      return { tokens: page.items.map(registrationTokenToProto), nextPageToken: page.nextPageToken };
    },
    async revokeWorkerRegistrationToken(req, ctx) {
      await workers.revokeRegistrationToken(core, requireUser(ctx), req.id);
      return {};
    },
    async listWorkers(req, ctx) {
      const page = await workers.listWorkers(core, requireUser(ctx), req);
      return { workers: page.items.map(workerToProto), nextPageToken: page.nextPageToken };
    },
  };
}
