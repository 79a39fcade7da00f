// The worker protocol: registration, the long poll that claims work (GetTask), reports,
// heartbeats, unregistration and the worker's commands (a stream, and their acknowledgement).
// TTY questions are raised here (CreateTtyInputRequest), and log batches appended (AppendLogs).
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  AssignmentSchema,
  LeaseSchema,
  ReceiveCommandsResponseSchema,
  WorkerCommandSchema,
  WorkerService,
  type Lease,
  type ReceiveCommandsResponse,
  type WorkerCommand,
} from "../../gen/foreman/v1/worker_pb.js";
import { callLogger, untilClosed, whileOpen } from "./context-keys.js";
import { presentedWorkerCredential, requireWorker } from "./principal.js";
import type { Core } from "../core/context.js";
import * as commands from "../core/commands.js";
import * as dispatch from "../core/dispatch.js";
import * as secretVault from "../core/secret-vault.js";
import * as sessionLogs from "../core/session-logs.js";
import * as ttyRequests from "../core/tty-requests.js";
import { unauthenticated } from "../core/errors.js";
import * as workers from "../core/workers.js";
import { AGENT_TYPES, SESSION_STATES, WORKER_STATUSES } from "./enums.js";
import { logLineFromProto } from "./log-convert.js";
import { TTY_INPUT_TYPES, ttyRequestToProto } from "./tty-convert.js";

export function workerService(core: Core): ServiceImpl<typeof WorkerService> {
  // Core logs a call's work on the call's logger, which carries its request id.
  const log = (ctx: HandlerContext) => callLogger(ctx, core.logger);
  /** The calling worker, with the credential it sent (lease tokens are derived from it). */
  const caller = (ctx: HandlerContext): dispatch.WorkerCaller => {
    const credential = presentedWorkerCredential(ctx);
    if (credential === undefined) throw unauthenticated("this call needs the worker credential that RegisterWorker returned");
    return { ...requireWorker(ctx), credential };
  };
  return {
    async registerWorker(req, ctx) {
      const { worker, credential } = await workers.registerWorker(core, log(ctx), {
        ...req,
        agentTypes: AGENT_TYPES.readAll(req.agentTypes),
        previousCredential: presentedWorkerCredential(ctx),
      });
      return {
        workerId: worker.id,
        workerToken: credential,
        heartbeatIntervalSeconds: core.dispatch.heartbeatSeconds,
        maxPollSeconds: core.dispatch.settings.maxPollSeconds,
      };
    },
    async getTask(req, ctx) {
      const who = caller(ctx);
      const { assignment, commands } = await whileOpen(ctx, (signal) => dispatch.getTask(core, log(ctx), who, req, signal));
      return { ...(assignment ? { assignment: assignmentToProto(assignment) } : {}), commands: commands.map(commandToProto) };
    },
    async reportStatus(req, ctx) {
      const result = await dispatch.reportStatus(core, log(ctx), caller(ctx), {
        ...req,
        state: SESSION_STATES.read(req.state),
      });
      return { state: SESSION_STATES.value(result.state), stopRequested: result.stopRequested };
    },
    async createTtyInputRequest(req, ctx) {
      const request = await ttyRequests.createTtyRequest(core, log(ctx), requireWorker(ctx), { ...req, inputType: TTY_INPUT_TYPES.read(req.inputType) });
      return { request: ttyRequestToProto(request) };
    },
    async appendLogs(req, ctx) {
      const batches = req.batches.map((b) => ({ sequence: b.sequence, lines: b.lines.map(logLineFromProto) }));
      return await sessionLogs.appendLogs(core, log(ctx), requireWorker(ctx), { sessionId: req.sessionId, leaseToken: req.leaseToken, batches });
    },
    async getSecrets(req, ctx) {
      return { secrets: await secretVault.getSecrets(core, log(ctx), requireWorker(ctx), req) };
    },
    async heartbeat(req, ctx) {
      const status = WORKER_STATUSES.readKnown(req.status, "status", "worker status");
      const { renewed, lost, commands } = await dispatch.heartbeat(core, log(ctx), caller(ctx), status, req.leases);
      return {
        leases: renewed.map(leaseToProto),
        lostSessionIds: lost,
        commands: commands.map(commandToProto),
        heartbeatIntervalSeconds: core.dispatch.heartbeatSeconds,
      };
    },
    async unregisterWorker(_req, ctx) {
      await workers.unregisterWorker(core, log(ctx), requireWorker(ctx).workerId);
      return {};
    },
    async *receiveCommands(_req, ctx): AsyncGenerator<ReceiveCommandsResponse> {
      const { workerId } = requireWorker(ctx);
      for await (const item of untilClosed(ctx, (signal) => commands.receiveCommands(core, workerId, signal))) {
        yield "keepAlive" in item ? KEEP_ALIVE : create(ReceiveCommandsResponseSchema, { event: { case: "command", value: commandToProto(item.command) } });
      }
    },
    async acknowledgeCommands(req, ctx) {
      await commands.acknowledgeCommands(core, log(ctx), requireWorker(ctx).workerId, req.commandIds);
      return {};
    },
  };
}

const KEEP_ALIVE = create(ReceiveCommandsResponseSchema, { event: { case: "keepAlive", value: {} } });

function commandToProto(c: commands.WorkerCommand): WorkerCommand {
  switch (c.kind) {
    case "stop_session":
      return create(WorkerCommandSchema, { id: c.id, command: { case: "stopSession", value: { sessionId: c.sessionId, reason: c.reason } } });
    case "tty_input_answer":
      return create(WorkerCommandSchema, {
        id: c.id,
        command: { case: "ttyInputAnswer", value: { requestId: c.requestId, sessionId: c.sessionId, response: c.response } },
      });
  }
}

function leaseToProto(l: dispatch.Lease): Lease {
  return create(LeaseSchema, { sessionId: l.sessionId, attempt: l.attempt, leaseToken: l.token, expireTime: timestampFromDate(l.expiresAt) });
}

function assignmentToProto(a: dispatch.Assignment) {
  return create(AssignmentSchema, {
    lease: leaseToProto(a.lease),
    taskId: a.taskId,
    agentTaskId: a.agentTaskId,
    prompt: a.prompt,
    agentType: AGENT_TYPES.value(a.agentType),
    agentModel: a.agentModel,
    repositories: a.repositories,
    hasSecrets: a.hasSecrets,
  });
}
