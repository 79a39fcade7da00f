// A scripted worker for the tests of the CLI's daily verbs: it speaks WorkerService over HTTP as
// a daemon would, one step at a time as the test says: claim a run, append log lines, raise a
// question and hear its answer, commit and push to the task branch (git's smart HTTP on the
// server's port, with the lease token), report the end.
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { AgentType, SessionState } from "../../gen/foreman/v1/common_pb.js";
import { LogStream, TtyInputType, type LogLineSchema, type TtyInputRequest } from "../../gen/foreman/v1/session_pb.js";
import { WorkerService, WorkerStatus, type Assignment, type Lease } from "../../gen/foreman/v1/worker_pb.js";
import { openCommands } from "./dispatch.js";
import { registerWorker, type Caller } from "./fixtures.js";
import { git, writeFiles } from "./git-remote.js";
import { clientWith } from "./oidc.js";

export type LineInit = Omit<MessageInitShape<typeof LogLineSchema>, "$typeName">;

export interface ScriptedRun {
  assignment: Assignment;
  sessionId: string;
  /** Appends one batch of lines (the session's next sequence); plain STDOUT unless said. */
  append(lines: (string | LineInit)[]): Promise<void>;
  /** Raises a question and resolves to it as stored. */
  ask(prompt: string, inputType?: TtyInputType, options?: string[]): Promise<TtyInputRequest>;
  /** Waits for the answer to the question to reach the worker (its command stream). */
  answerTo(requestId: string): Promise<string>;
  /** Commits files on the task branch and pushes it; resolves to the commit. */
  commit(files: Record<string, string>, message: string): Promise<string>;
  report(state: SessionState, more?: { errorMessage?: string; exitCode?: number }): Promise<void>;
  close(): Promise<void>;
}

export interface ScriptedWorker {
  /** The next queued run of a COMMAND task (waits for one up to 30 s). */
  claim(): Promise<ScriptedRun>;
  /** Unregisters: the server requeues the runs it holds as their next attempt. */
  unregister(): Promise<void>;
  close(): Promise<void>;
}

/** A worker of the caller's that runs COMMAND tasks only, so the tests' other tasks stay queued. */
export async function scriptedWorker(who: Caller): Promise<ScriptedWorker> {
  const { secret } = await who.registrationToken();
  const res = await registerWorker(who.server, secret, { name: "cli test worker", agentTypes: [AgentType.COMMAND], maxConcurrentSessions: 4 });
  const client: Client<typeof WorkerService> = clientWith(who.server, WorkerService, res.workerToken);
  const commands = openCommands({ id: res.workerId, token: res.workerToken, client }, 60_000);
  await commands.live;
  const dirs: string[] = [];
  // Heartbeats keep the runs it holds leased however long a test takes between its steps.
  const held = new Map<string, Lease>();
  let beating = Promise.resolve();
  const heartbeat = setInterval(() => {
    beating = beating.then(() => client.heartbeat({ status: WorkerStatus.BUSY, leases: [...held.values()] }).then(() => undefined, () => undefined));
  }, 1000);
  const stopBeating = async () => {
    clearInterval(heartbeat);
    await beating;
  };

  async function claim(): Promise<ScriptedRun> {
    const { assignment } = await client.getTask({ pollId: randomUUID(), waitSeconds: 30 });
    if (assignment?.lease === undefined) throw new Error("no run to claim within 30 s");
    const a = assignment;
    const lease = a.lease!;
    const ids = { sessionId: lease.sessionId, leaseToken: lease.leaseToken };
    held.set(lease.sessionId, lease);
    await client.reportStatus({ ...ids, state: SessionState.RUNNING, errorMessage: "", headCommit: "" });
    let sequence = 0;
    let dir: string | undefined;
    const auth = { GIT_CONFIG_COUNT: "1", GIT_CONFIG_KEY_0: "http.extraHeader", GIT_CONFIG_VALUE_0: `Authorization: Bearer ${lease.leaseToken}` };
    return {
      assignment: a,
      sessionId: lease.sessionId,
      async append(lines) {
        sequence += 1;
        const batch = { sequence, lines: lines.map((l) => (typeof l === "string" ? { stream: LogStream.STDOUT, text: l } : { stream: LogStream.STDOUT, ...l })) };
        await client.appendLogs({ ...ids, batches: [batch] });
      },
      async ask(prompt, inputType = TtyInputType.TEXT, options = []) {
        const { request } = await client.createTtyInputRequest({ ...ids, prompt, inputType, options, clientRequestId: randomUUID() });
        return request!;
      },
      async answerTo(requestId) {
        for (let n = 1; ; n++) {
          const received = await commands.until(n);
          const found = received.find((c) => c.command.case === "ttyInputAnswer" && c.command.value.requestId === requestId);
          if (found?.command.case === "ttyInputAnswer") return found.command.value.response;
        }
      },
      async commit(files, message) {
        const r = a.repositories[0]!;
        const url = new URL(r.cloneUrl, who.server.url).toString();
        if (dir === undefined) {
          dir = await mkdtemp(path.join(os.tmpdir(), "foreman-cli-ws-"));
          dirs.push(dir);
          await git(["clone", "--quiet", "--branch", r.branchName, "--single-branch", url, dir], { env: auth });
        }
        await writeFiles(dir, files);
        await git(["-C", dir, "add", "-A"]);
        await git(["-C", dir, "commit", "--quiet", "-m", message]);
        await git(["-C", dir, "push", "--quiet", "origin", `HEAD:refs/heads/${r.branchName}`], { env: auth });
        return git(["-C", dir, "rev-parse", "HEAD"]);
      },
      async report(state, more = {}) {
        held.delete(lease.sessionId);
        await client.reportStatus({ ...ids, state, errorMessage: more.errorMessage ?? "", headCommit: "", ...(more.exitCode === undefined ? {} : { exitCode: more.exitCode }) });
      },
      async close() {
        if (dir !== undefined) await rm(dir, { recursive: true, force: true });
      },
    };
  }

  return {
    claim,
    async unregister() {
      await stopBeating();
      await commands.close();
      await client.unregisterWorker({});
    },
    async close() {
      await stopBeating();
      await commands.close();
      for (const d of dirs) await rm(d, { recursive: true, force: true });
    },
  };
}
