// A worker's commands (stop a session; a user's answer to its agent's question), and the three ways
// they reach it. A command is queued in the transaction that makes it (store/worker-commands.ts)
// and stays until the worker acknowledges it by id:
//  - ReceiveCommands, a stream: the way a worker should take them. A command reaches it the
//    moment it commits (the in-process notifier here, NOTIFY from another replica), so a stop
//    reaches the agent within a second; the stream also looks itself every
//    FOREMAN_STREAM_POLL_SECONDS, in case a notification was lost.
//  - Heartbeat and GetTask responses carry the same pending commands, for a worker whose stream
//    is down (a proxy that cuts streams, a reconnect in progress): a command never waits for a
//    channel that is not there. A new command also ends a waiting GetTask at once, empty.
// Delivery is at least once: a worker acts on a command id once and acknowledges it after.
import type { Logger } from "../logger.js";
import * as commandsStore from "../store/worker-commands.js";
import type { Core } from "./context.js";
import { Violations } from "./validation.js";
import { waitForWake } from "./wait.js";

export type { WorkerCommand } from "../store/worker-commands.js";

/** Most commands one response carries; the rest come in the next (a worker holds few sessions). */
export const COMMANDS_PER_RESPONSE = 100;
const COMMAND_ID_MAX = 128;

/** After a transaction that queued commands for these workers commits: wakes their streams and polls here. */
export function commandsQueued(core: Core, workerIds: Iterable<string | null>): void {
  for (const id of new Set(workerIds)) if (id !== null) core.commands.notify(id);
}

export function pendingCommands(core: Core, workerId: string): Promise<commandsStore.WorkerCommand[]> {
  return commandsStore.pendingCommands(core.db, workerId, COMMANDS_PER_RESPONSE);
}

/** AcknowledgeCommands: the worker's commands with these ids are done; unknown ids (and another worker's) change nothing. */
export async function acknowledgeCommands(core: Core, log: Logger, workerId: string, ids: string[]): Promise<void> {
  const v = new Violations();
  ids.forEach((id, i) => {
    if (id === "") v.add(`command_ids[${i}]`, "is empty: send the id of a command this worker received");
    else v.text(`command_ids[${i}]`, id, { max: COMMAND_ID_MAX, singleLine: true });
  });
  v.throwIfAny();
  const removed = await commandsStore.acknowledgeCommands(core.db, workerId, [...new Set(ids)]);
  if (removed > 0) log.debug({ worker_id: workerId, acknowledged: removed }, "commands acknowledged");
}

export type CommandStreamItem = { command: commandsStore.WorkerCommand } | { keepAlive: true };

/**
 * ReceiveCommands: a keep-alive at once (the worker knows the stream is live), then every
 * pending command of the worker, then each new one as it is queued, with keep-alives between.
 * A command is sent once per stream; one not acknowledged comes again on the next stream.
 * Ends when `signal` aborts (the worker left, or the server shuts down).
 */
export async function* receiveCommands(core: Core, workerId: string, signal: AbortSignal): AsyncGenerator<CommandStreamItem> {
  let wake: (() => void) | undefined;
  let pending = true;
  // Subscribed before the first read, so a command queued meanwhile is not missed.
  const leave = core.commands.subscribe(workerId, () => {
    pending = true;
    wake?.();
  });
  const sent = new Set<string>();
  try {
    yield { keepAlive: true };
    // Paced by real timers, so timed by the monotonic clock, not core.now().
    let lastSent = performance.now();
    let lastRead = performance.now();
    while (!signal.aborted) {
      if (pending || performance.now() - lastRead >= core.streams.pollMs) {
        pending = false;
        lastRead = performance.now();
        const commands = await commandsStore.pendingCommands(core.db, workerId, COMMANDS_PER_RESPONSE);
        // What was acknowledged is gone from the table: forget it, so the set stays small.
        const current = new Set(commands.map((c) => c.id));
        for (const id of sent) if (!current.has(id)) sent.delete(id);
        for (const command of commands) {
          if (sent.has(command.id)) continue;
          sent.add(command.id);
          yield { command };
          lastSent = performance.now();
        }
        continue;
      }
      const keepAliveIn = core.streams.keepAliveMs - (performance.now() - lastSent);
      if (keepAliveIn <= 0) {
        yield { keepAlive: true };
        lastSent = performance.now();
        continue;
      }
      const readIn = core.streams.pollMs - (performance.now() - lastRead);
      await waitForWake(signal, Math.max(0, Math.min(keepAliveIn, readIn)), (w) => (wake = w));
    }
  } finally {
    leave();
  }
}
