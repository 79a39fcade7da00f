// A user's calls about one session (SessionService). StopSession ends an active session at
// once: it is cancelled and its lease revoked in one write, so its worker's reports are
// LEASE_LOST from then on, and its worker is sent a stop_session command carrying the reason
// (core/commands.ts), on its command stream at once and with its next heartbeat and poll. The task stays in its work status
// with nothing running, as after a worker's CANCELLED report (RUN_END), for the user to move on.
import type { Logger } from "../logger.js";
import { RUN_END, SESSION_REPORT, type AgentSession } from "../model/tasks.js";
import * as sessions from "../store/agent-sessions.js";
import * as taskEvents from "../store/task-events.js";
import * as tasksStore from "../store/tasks.js";
import { commandsQueued } from "./commands.js";
import type { Core } from "./context.js";
import { notFound } from "./errors.js";
import { Violations } from "./validation.js";

const REASON_MAX = 1000;

/** Stops the owner's session if it is active; an ended one comes back as it is. */
export async function stopSession(core: Core, log: Logger, ownerId: string, input: { sessionId: string; reason: string }): Promise<AgentSession> {
  const v = new Violations();
  const sessionId = v.id("session_id", input.sessionId);
  const reason = input.reason.trim();
  v.text("reason", reason, { max: REASON_MAX, singleLine: true });
  v.throwIfAny();
  const found = await sessions.getSession(core.db, sessionId);
  if (found === undefined || found.ownerId !== ownerId) throw notFound("session", sessionId);
  const now = core.now();
  const why = reason === "" ? "stopped by its user" : `stopped by its user: ${reason}`;
  const done = await core.adapter.transaction(core.db, async (trx) => {
    // The session first, then its task: the order claims, reports and task moves lock them in.
    const stopped = await sessions.stopSession(trx, core.adapter, sessionId, why, now);
    if (stopped === undefined) return undefined;
    const { task } = await sessions.workOf(trx, stopped);
    const place = await tasksStore.getTaskPlace(trx, task);
    if (place === undefined) throw new Error(`session ${sessionId} has no task`);
    // As a worker's CANCELLED report leaves it: its work status, nothing running.
    const to = RUN_END[place.kind].cancelled ?? place.status;
    if (!(await tasksStore.moveTask(trx, place, place.status, { status: to, executionState: SESSION_REPORT.cancelled.executionState, reason: null }, now))) {
      throw new Error(`task ${place.id} moved while session ${sessionId} was active`);
    }
    await taskEvents.insertTaskEvent(trx, core.adapter, { ownerId: place.ownerId, workspaceId: place.workspaceId, taskId: place.id, type: "updated" }, now);
    return { stopped, place };
  });
  if (done === undefined) return found;
  core.taskChanges.notify(done.place.workspaceId);
  core.logs.notify(sessionId);
  if (done.stopped.workerId !== null) {
    commandsQueued(core, [done.stopped.workerId]);
    core.dispatch.freed(done.stopped.workerId);
  }
  log.info({ session_id: sessionId, task_id: done.place.id, worker_id: done.stopped.workerId }, "session stopped");
  return done.stopped;
}
