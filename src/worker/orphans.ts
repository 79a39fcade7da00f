// Agents that a killed worker left running. Each agent runs in a process group of its own
// (agent-process.ts), so a SIGKILL of the worker does not reach it: it would go on working in a
// workspace whose run the server requeues to another worker. So while an agent runs, its group
// is recorded in the state folder (agents/<session id>.pid: the leader's pid and start time), and
// a worker started again ends the groups its predecessor left before it claims anything: SIGTERM,
// then SIGKILL after the grace period. The start time guards against a pid that another process
// has been given since; where it cannot be read (no /proc: not Linux), a group is left alone and
// the start says so.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";

const POLL_MS = 50;

/** The process's start time, in clock ticks since boot (/proc/<pid>/stat, field 22); undefined when unknown or gone. */
export function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may hold spaces and ")".
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/** Where an agent's group is recorded: a folder of the worker's state, and the session it runs. */
export interface GroupRecord {
  dir: string;
  sessionId: string;
}

/**
 * Records a started agent's group, at once (a kill right after the start must find it); returns
 * what removes the record, for when the agent has ended. A record that cannot be written costs
 * only the clean-up after a kill, so it is not an error.
 */
export function recordAgentGroup(record: GroupRecord, pid: number): () => void {
  const file = path.join(record.dir, `${record.sessionId}.pid`);
  try {
    mkdirSync(record.dir, { recursive: true });
    writeFileSync(file, `${pid} ${startTimeOf(pid) ?? ""}\n`);
  } catch {
    return () => {};
  }
  return () => rmSync(file, { force: true });
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Signals the process group led by `pid`, if it still exists. */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group has ended.
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Ends every group recorded in `dir` that is still the one recorded; returns how many it ended. */
export async function endOrphanAgents(dir: string, log: Logger, graceMs: number): Promise<number> {
  let files: string[];
  try {
    files = (await readdir(dir)).filter((f) => f.endsWith(".pid"));
  } catch {
    return 0; // No folder: no agent ever ran here.
  }
  let ended = 0;
  await Promise.all(
    files.map(async (file) => {
      const sessionId = file.slice(0, -".pid".length);
      const [pidText, started] = (await readFile(path.join(dir, file), "utf8").catch(() => "")).trim().split(" ");
      const pid = Number(pidText);
      if (Number.isInteger(pid) && pid > 1 && groupAlive(pid)) {
        const now = startTimeOf(pid);
        if (now === undefined || started === undefined || started === "") {
          // Nothing to tell it by (its leader gone, or no /proc): leave it, but say so.
          log.warn({ session_id: sessionId, pid }, "an agent the previous worker process started may still be running; end its process group by hand");
        } else if (now === started) {
          log.warn({ session_id: sessionId, pid }, "ending an agent the previous worker process left running");
          signalGroup(pid, "SIGTERM");
          const deadline = performance.now() + graceMs;
          while (groupAlive(pid) && performance.now() < deadline) await sleep(POLL_MS);
          signalGroup(pid, "SIGKILL");
          ended++;
        }
        // Else its pid was given to another process since: not ours.
      }
      await rm(path.join(dir, file), { force: true });
    }),
  );
  return ended;
}
