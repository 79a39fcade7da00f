// One slot of the worker: long-polls GetTask, runs the session it claims, polls again. The
// daemon runs as many slots as sessions it may hold at once. A poll retried after a lost answer
// keeps its poll id, so it gets back the claim it made instead of leaving it stranded.
import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Assignment, WorkerCommand, WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { backoffMs, isTransient, sleep } from "./retry.js";

export interface PollTarget {
  commands(commands: readonly WorkerCommand[]): void;
  run(assignment: Assignment): Promise<void>;
  /** The server no longer knows this worker's credential. */
  refused(message: string): void;
}

export async function pollSlot(worker: Client<typeof WorkerService>, target: PollTarget, waitSeconds: number, log: Logger, signal: AbortSignal): Promise<void> {
  let pollId = randomUUID();
  for (let attempt = 1; !signal.aborted; ) {
    let assignment: Assignment | undefined;
    try {
      const response = await worker.getTask({ pollId, waitSeconds }, { signal });
      attempt = 1;
      pollId = randomUUID();
      target.commands(response.commands);
      assignment = response.assignment;
    } catch (error) {
      if (signal.aborted) return;
      const e = ConnectError.from(error);
      if (e.code === Code.Unauthenticated) return target.refused(e.rawMessage);
      // Not transient (InvalidArgument for a poll id whose claim ended): start a new poll.
      if (!isTransient(e)) {
        log.warn({ code: Code[e.code], error: e.rawMessage }, "GetTask was refused; polling anew");
        pollId = randomUUID();
      } else if (attempt === 1) log.warn({ code: Code[e.code], error: e.rawMessage }, "GetTask failed; trying again");
      await sleep(backoffMs(attempt++), signal);
      continue;
    }
    if (assignment?.lease !== undefined) await target.run(assignment);
  }
}
