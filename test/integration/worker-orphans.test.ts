// The worker's record of its agents' process groups (src/worker/orphans.ts), with real processes:
// a group recorded and still the one recorded is ended, SIGKILL after the grace if SIGTERM does
// not do it; a pid given to another process since is left alone; the records are removed.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { endOrphanAgents, recordAgentGroup, startTimeOf } from "../../src/worker/orphans.js";
import { tempFolder } from "../helpers/worker-processes.js";

const quiet = pino({ level: "silent" });
const started: ChildProcess[] = [];

/** A process group of its own that runs until killed, once it says it is ready; with `stubborn`, it ignores SIGTERM. */
async function group(stubborn = false): Promise<ChildProcess> {
  const script = `${stubborn ? 'process.on("SIGTERM", () => {});' : ""} setInterval(() => {}, 1000); process.stdout.write("ready\\n");`;
  const child = spawn(process.execPath, ["-e", script], { detached: true, stdio: ["ignore", "pipe", "ignore"] });
  started.push(child);
  await new Promise((resolve) => child.stdout!.once("data", resolve));
  return child;
}

const ended = (child: ChildProcess) => new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once("exit", () => resolve())));

afterEach(() => {
  for (const child of started.splice(0)) child.kill("SIGKILL");
});

describe.runIf(process.platform === "linux")("the worker's records of its agents' process groups", () => {
  it("records a group while it runs and removes the record when told", async () => {
    const dir = path.join(tempFolder("foreman-orphans-"), "agents");
    const child = await group();
    const forget = recordAgentGroup({ dir, sessionId: "s1" }, child.pid!);
    expect(readdirSync(dir)).toEqual(["s1.pid"]);
    forget();
    expect(readdirSync(dir)).toEqual([]);
  });

  it("ends the groups a killed worker left, by SIGTERM or after the grace by SIGKILL, and removes their records", async () => {
    const dir = path.join(tempFolder("foreman-orphans-"), "agents");
    const polite = await group();
    const stubborn = await group(true);
    recordAgentGroup({ dir, sessionId: "polite" }, polite.pid!);
    recordAgentGroup({ dir, sessionId: "stubborn" }, stubborn.pid!);
    expect(await endOrphanAgents(dir, quiet, 500)).toBe(2);
    await Promise.all([ended(polite), ended(stubborn)]);
    expect(polite.signalCode).toBe("SIGTERM");
    expect(stubborn.signalCode).toBe("SIGKILL");
    expect(readdirSync(dir)).toEqual([]);
  });

  it("leaves alone a pid that another process has been given since (its start time differs), and drops the record", async () => {
    const dir = path.join(tempFolder("foreman-orphans-"), "agents");
    const other = await group();
    const now = Number(startTimeOf(other.pid!));
    recordAgentGroup({ dir, sessionId: "old" }, other.pid!);
    // As if the recorded agent had started earlier: the same pid, another process.
    writeFileSync(path.join(dir, "old.pid"), `${other.pid} ${now - 1}\n`);
    expect(await endOrphanAgents(dir, quiet, 500)).toBe(0);
    expect(other.exitCode).toBeNull();
    expect(other.signalCode).toBeNull();
    expect(existsSync(path.join(dir, "old.pid"))).toBe(false);
  });

  it("finds nothing to do where no agent ever ran", async () => {
    expect(await endOrphanAgents(path.join(tempFolder("foreman-orphans-"), "agents"), quiet, 500)).toBe(0);
  });
});
