// The heartbeat loop: every interval the server gave, the worker says it is alive and lists the
// leases it holds; the server renews them, names the ones it no longer holds (their sessions
// stop, reporting nothing), and carries pending commands. While the server is away it tries
// again sooner, well within a lease's length (three intervals), so a short outage loses nothing.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { Logger } from "pino";
import { WorkerStatus, type Lease, type WorkerCommand, type WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { sleep } from "./retry.js";

export interface HeartbeatSource {
  leases(): Lease[];
  draining(): boolean;
  lost(sessionIds: readonly string[]): void;
  commands(commands: readonly WorkerCommand[]): void;
  /** The server no longer knows this worker's credential (unregistered elsewhere): stop. */
  refused(message: string): void;
}

/** While the server is away, look again this often (or at the interval, when shorter). */
const RETRY_MS = 1_000;

export async function heartbeats(worker: Client<typeof WorkerService>, source: HeartbeatSource, intervalSeconds: number, log: Logger, signal: AbortSignal): Promise<void> {
  let interval = intervalSeconds * 1000;
  let failing = false;
  while (!signal.aborted) {
    let next = interval;
    try {
      const leases = source.leases();
      const status = source.draining() ? WorkerStatus.DRAINING : leases.length > 0 ? WorkerStatus.BUSY : WorkerStatus.IDLE;
      const response = await worker.heartbeat({ status, leases }, { signal, timeoutMs: interval });
      if (failing) log.info("the server answers again");
      failing = false;
      if (response.heartbeatIntervalSeconds > 0) interval = response.heartbeatIntervalSeconds * 1000;
      next = interval;
      if (response.lostSessionIds.length > 0) source.lost(response.lostSessionIds);
      source.commands(response.commands);
    } catch (error) {
      if (signal.aborted) return;
      const e = ConnectError.from(error);
      if (e.code === Code.Unauthenticated) return source.refused(e.rawMessage);
      if (!failing) log.warn({ code: Code[e.code], error: e.rawMessage }, "heartbeat failed; trying again");
      failing = true;
      next = Math.min(RETRY_MS, interval);
    }
    await sleep(next, signal);
  }
}
