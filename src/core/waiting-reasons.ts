// Why a queued run waits with no worker to take it ("no worker runs codex"), shown on the task
// (UnitTask/CompositeTask.waiting_reason) instead of leaving it to wait silently. Worked out
// when tasks are read, from the workers registered then, with one query for all the tasks read
// together (a page, a WatchTasks batch) and none when none of them is queued. A worker busy
// with other work is no reason: the run waits its turn.
import type { Task } from "../model/tasks.js";
import { workerKindsServing, type WorkerKind } from "../store/workers.js";
import type { Core } from "./context.js";

/** Each queued task's reason, by task id; a task absent from the map has none. */
export async function waitingReasons(core: Pick<Core, "db">, tasks: readonly Task[]): Promise<Map<string, string>> {
  const queued = tasks.filter((t) => t.executionState === "queued" && t.agentTasks.length > 0);
  const reasons = new Map<string, string>();
  if (queued.length === 0) return reasons;
  const kinds = await workerKindsServing(core.db, [...new Set(queued.map((t) => t.ownerId))]);
  for (const task of queued) {
    // The queued run is the latest agent task's, with its agent.
    const agentType = task.agentTasks[task.agentTasks.length - 1]!.agentType;
    const reason = waitingReason(kinds, task.ownerId, agentType);
    if (reason !== undefined) reasons.set(task.id, reason);
  }
  return reasons;
}

/** Why a run of the owner's with this agent has no worker, given the workers registered; undefined when one may take it. */
export function waitingReason(kinds: readonly WorkerKind[], ownerId: string, agentType: string): string | undefined {
  // The claim's own rule (store/agent-sessions.ts claimSession): the owner's workers or the
  // configured token's, running this agent or every agent.
  const serving = kinds.filter((k) => k.ownerId === null || k.ownerId === ownerId);
  if (serving.length === 0) return "no worker is registered";
  const runs = serving.filter((k) => k.agentTypes.length === 0 || k.agentTypes.includes(agentType));
  if (runs.length === 0) return `no worker runs ${agentType}`;
  if (runs.some((k) => k.status === "active")) return undefined;
  const draining = runs.some((k) => k.status === "draining");
  const unhealthy = runs.some((k) => k.status === "unhealthy");
  return `every worker that runs ${agentType} is ${draining && unhealthy ? "draining or unhealthy" : draining ? "draining" : "unhealthy"}`;
}
