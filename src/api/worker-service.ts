// The worker protocol. Registration and unregistration are here; claiming, heartbeats, logs and
// commands answer Unimplemented until the dispatcher serves them.
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { callLogger } from "./context-keys.js";
import { requireWorker } from "./principal.js";
import type { Core } from "../core/context.js";
import * as workers from "../core/workers.js";
import { AGENT_TYPES } from "./enums.js";
import { unimplementedMethods } from "./unimplemented.js";

export function workerService(core: Core): ServiceImpl<typeof WorkerService> {
  // Core logs a call's work on the call's logger, which carries its request id.
  const log = (ctx: HandlerContext) => callLogger(ctx, core.logger);
  return {
    ...(unimplementedMethods(WorkerService, "the worker protocol") as unknown as ServiceImpl<typeof WorkerService>),
    async registerWorker(req, ctx) {
      const { worker, credential } = await workers.registerWorker(core, log(ctx), {
        ...req,
        agentTypes: AGENT_TYPES.readAll(req.agentTypes),
      });
      return {
        workerId: worker.id,
        workerToken: credential,
        heartbeatIntervalSeconds: workers.HEARTBEAT_INTERVAL_SECONDS,
        maxPollSeconds: workers.MAX_POLL_SECONDS,
      };
    },
    async unregisterWorker(_req, ctx) {
      await workers.unregisterWorker(core, log(ctx), requireWorker(ctx).workerId);
      return {};
    },
  };
}
