// SecretsService: a user sends (or clears) a task's secrets for the worker that runs it. The
// values are held in the replica's memory only (core/secret-vault.ts); nothing here logs them.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { SecretsService } from "../../gen/foreman/v1/secrets_pb.js";
import type { Core } from "../core/context.js";
import * as vault from "../core/secret-vault.js";
import { callLogger } from "./context-keys.js";
import { requireUser } from "./principal.js";

export function secretsService(core: Core): ServiceImpl<typeof SecretsService> {
  const log = (ctx: HandlerContext) => callLogger(ctx, core.logger);
  return {
    async sendSecrets(req, ctx) {
      const { names, expiresAt } = await vault.sendSecrets(core, log(ctx), requireUser(ctx), req);
      return { names, expireTime: timestampFromDate(expiresAt) };
    },
    async clearSecrets(req, ctx) {
      await vault.clearSecrets(core, log(ctx), requireUser(ctx), req);
      return {};
    },
  };
}
