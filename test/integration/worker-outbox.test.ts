// The worker's log outbox (src/worker/outbox.ts) against the real server in process, on both
// databases. The outbox's client goes through a TCP proxy (test/helpers/outbox-proxy.ts) that a
// test cuts, points at a restarted server or makes lose answers. What reached the server is read
// back with SessionService.GetLog: batch boundaries, and every line once and in order.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { LogBatchSchema, LogLineKind, LogStream, SessionService, type LogBatch } from "../../gen/foreman/v1/session_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { LogOutbox, MAX_LINE_BYTES, lineOfAgentEvent, outboxDir, recoverOutboxes, type OutboxError, type OutboxOptions } from "../../src/worker/outbox.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "../helpers/databases.js";
import { caller, registerWorker, type Caller } from "../helpers/fixtures.js";
import { clientWith } from "../helpers/oidc.js";
import { portOf, startOutboxProxy, type OutboxProxy } from "../helpers/outbox-proxy.js";
import type { OutboxWriterSettings } from "../helpers/outbox-writer.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const TEST_TIMEOUT = 120_000;
const ENV = {
  // Leases of half an hour: nothing here heartbeats, and a restart must not outlast the lease.
  FOREMAN_HEARTBEAT_SECONDS: "600",
  FOREMAN_HEALTH_CHECK_SECONDS: "3600",
  FOREMAN_STREAM_POLL_SECONDS: "3600",
};
const ROOT = path.resolve(import.meta.dirname, "../..");

/** Resolves once ready() holds, looking every 20 ms; fails after TEST_TIMEOUT with what it waited for. */
async function until(what: string, ready: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + TEST_TIMEOUT;
  while (!(await ready())) {
    if (Date.now() > deadline) throw new Error(`no ${what} within ${TEST_TIMEOUT} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const stdout = (text: string) => ({ stream: LogStream.STDOUT, text });

describe.each(DIALECTS)("the worker's log outbox on %s", (dialect) => {
  let database: TestDatabase;
  let t: TestServer;
  let proxy: OutboxProxy;
  let me: Caller;
  let groupId: string;
  let registrationSecret: string;
  let parentDir: string;
  const opened: LogOutbox[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    t = await startTestServer(dialect, ENV, database);
    proxy = await startOutboxProxy(t.url);
    me = caller(t);
    groupId = (await me.groupOfOne()).group.id;
    registrationSecret = (await me.registrationToken()).secret;
    parentDir = await mkdtemp(path.join(tmpdir(), "foreman-outbox-"));
  });

  afterEach(async () => {
    proxy.up(portOf(t.url));
    proxy.loseAnswers(0);
    // Whatever a test left open ends without waiting for the server.
    for (const o of opened.splice(0)) await Promise.race([o.close(), new Promise((r) => setTimeout(r, 5_000))]);
  });

  afterAll(async () => {
    await proxy?.close();
    await t?.server.close();
    await database?.drop();
    if (parentDir !== undefined) await rm(parentDir, { recursive: true, force: true });
  });

  /** A fresh task claimed by a fresh worker: its session, lease, and the worker's clients (through the proxy, and direct). */
  async function claimed() {
    const { workerToken } = await registerWorker(t, registrationSecret, { name: `outbox ${randomUUID().slice(0, 6)}` });
    const task = (await me.client(TaskService).createUnitTask({ repositoryGroupId: groupId, prompt: "Print a lot" })).unitTask!;
    const direct = clientWith(t, WorkerService, workerToken, "connect-http1");
    const { assignment } = await direct.getTask({ pollId: randomUUID(), waitSeconds: 0 });
    expect(assignment?.taskId).toBe(task.id);
    const proxied = clientWith({ ...t, url: proxy.url }, WorkerService, workerToken, "connect-http1");
    return { taskId: task.id, sessionId: assignment!.lease!.sessionId, leaseToken: assignment!.lease!.leaseToken, workerToken, worker: proxied, direct };
  }

  type Claimed = Awaited<ReturnType<typeof claimed>>;

  async function open(c: Claimed, more: Partial<OutboxOptions> = {}) {
    const errors: OutboxError[] = [];
    let leaseLost = 0;
    const dir = outboxDir(parentDir, c.sessionId);
    const outbox = await LogOutbox.open({
      dir,
      sessionId: c.sessionId,
      leaseToken: c.leaseToken,
      worker: c.worker,
      onError: (e) => errors.push(e),
      onLeaseLost: () => leaseLost++,
      ...more,
    });
    opened.push(outbox);
    return { outbox, dir, errors, leaseLost: () => leaseLost };
  }

  /** Every batch the server stored for the session, through as many GetLog pages as it takes. */
  async function storedBatches(sessionId: string, server: TestServer = t): Promise<LogBatch[]> {
    const sessions = caller(server).client(SessionService) as Client<typeof SessionService>;
    const all: LogBatch[] = [];
    for (;;) {
      const page = await sessions.getLog({ sessionId, afterSequence: all.at(-1)?.sequence ?? 0, maxBatches: 5000 });
      all.push(...page.batches);
      if (page.batches.length === 0 || all.at(-1)!.sequence >= page.lastSequence) return all;
    }
  }
  const texts = async (sessionId: string) => (await storedBatches(sessionId)).flatMap((b) => b.lines.map((l) => l.text));
  const shape = async (sessionId: string) => (await storedBatches(sessionId)).map((b) => [b.sequence, b.lines.length]);
  const numbered = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `line ${from + i}`);

  it(
    "cuts batches at maxBatchLines, at maxBatchBytes (text and payload) and flushMs after a batch's first line",
    async () => {
      // By lines: 3 a batch; the timer is out of the way, flush() cuts the rest.
      const byLines = await claimed();
      const a = await open(byLines, { maxBatchLines: 3, flushMs: 3_600_000 });
      for (let i = 0; i < 7; i++) a.outbox.push(stdout(`line ${i}`));
      await a.outbox.flush();
      expect(await shape(byLines.sessionId)).toEqual([
        [1, 3],
        [2, 3],
        [3, 1],
      ]);
      expect(await texts(byLines.sessionId)).toEqual(numbered(0, 7));
      expect(a.outbox.storedSequence).toBe(3);
      expect(lineOfAgentEvent({ stream: "stdout", kind: "tool_call", text: "ls", payloadJson: "{}" })).toEqual({ stream: LogStream.STDOUT, kind: LogLineKind.TOOL_CALL, text: "ls", payloadJson: "{}" });

      // By bytes: 100 a batch; lines of 30 bytes (one of them 10 of text and 20 of payload), so three fit and a fourth would not.
      const byBytes = await claimed();
      const b = await open(byBytes, { maxBatchBytes: 100, flushMs: 3_600_000 });
      const thirty = (i: number) => `${i}`.padEnd(30, ".");
      b.outbox.push(stdout(thirty(0)));
      b.outbox.push({ stream: LogStream.STDOUT, kind: LogLineKind.TOOL_CALL, text: "tool: ls..", payloadJson: '{"tool":"ls","n":12}' });
      for (let i = 2; i < 7; i++) b.outbox.push(stdout(thirty(i)));
      // A line of exactly the batch's bytes is a batch of its own.
      b.outbox.push(stdout("x".repeat(100)));
      await b.outbox.flush();
      expect(await shape(byBytes.sessionId)).toEqual([
        [1, 3],
        [2, 3],
        [3, 1],
        [4, 1],
      ]);
      const tool = (await storedBatches(byBytes.sessionId))[0]!.lines[1]!;
      expect(tool.kind).toBe(LogLineKind.TOOL_CALL);
      expect(JSON.parse(tool.payloadJson)).toEqual({ tool: "ls", n: 12 });

      // By time: nobody calls flush(); the batch goes flushMs after its first line.
      const byTime = await claimed();
      const c = await open(byTime, { flushMs: 50 });
      c.outbox.push(stdout("first"));
      c.outbox.push(stdout("second"));
      await until("the first batch stored", async () => (await storedBatches(byTime.sessionId)).length === 1);
      c.outbox.push(stdout("third"));
      await until("the second batch stored", async () => (await storedBatches(byTime.sessionId)).length === 2);
      expect((await storedBatches(byTime.sessionId)).map((x) => x.lines.map((l) => l.text))).toEqual([["first", "second"], ["third"]]);
      await Promise.all([a.outbox.close(), b.outbox.close(), c.outbox.close()]);
    },
    TEST_TIMEOUT,
  );

  it(
    "delivers 20,000 lines once and in order, several batches a call, and close() removes the folder",
    async () => {
      const s = await claimed();
      // The batches each AppendLogs call carried.
      const calls: number[] = [];
      const counting: typeof s.worker = {
        ...s.worker,
        appendLogs: (...args: Parameters<typeof s.worker.appendLogs>) => {
          calls.push(args[0].batches?.length ?? 0);
          return s.worker.appendLogs(...args);
        },
      };
      const o = await open({ ...s, worker: counting });
      expect(statSync(path.join(o.dir, "session.json")).mode & 0o777).toBe(0o600);
      for (let i = 0; i < 20_000; i++) o.outbox.push(stdout(`line ${i}`));
      await o.outbox.flush();
      expect(await texts(s.sessionId)).toEqual(numbered(0, 20_000));
      expect(o.outbox.storedSequence).toBe(40);
      expect(Math.max(...calls)).toBeGreaterThan(1);
      expect(existsSync(o.dir)).toBe(true);
      await o.outbox.close();
      expect(existsSync(o.dir)).toBe(false);
      expect(o.errors).toEqual([]);
    },
    TEST_TIMEOUT,
  );

  it(
    "loses nothing and stores nothing twice when answers are lost, the connection is cut, and the server restarts on its database",
    async () => {
      const s = await claimed();
      const o = await open(s, { maxBatchLines: 100, flushMs: 20 });
      // Answers lost: the server stored the batches, the worker sends them again and is acknowledged.
      proxy.loseAnswers(3);
      for (let i = 0; i < 1000; i++) o.outbox.push(stdout(`line ${i}`));
      await o.outbox.flush();
      expect(proxy.lostAnswers()).toBe(3);
      expect(await texts(s.sessionId)).toEqual(numbered(0, 1000));

      // Cut: lines go on being pushed while nothing gets through.
      for (let i = 1000; i < 1500; i++) o.outbox.push(stdout(`line ${i}`));
      proxy.cut();
      for (let i = 1500; i < 2000; i++) o.outbox.push(stdout(`line ${i}`));
      await until("batch files waiting", async () => (await readdir(o.dir)).some((f) => f.endsWith(".batch")));
      proxy.up();

      // The server stopped mid-stream, lines pushed while it is away, then a new server on the same database (another port).
      for (let i = 2000; i < 2500; i++) o.outbox.push(stdout(`line ${i}`));
      await t.server.close();
      for (let i = 2500; i < 3000; i++) o.outbox.push(stdout(`line ${i}`));
      t = await startTestServer(dialect, ENV, database);
      me = caller(t);
      proxy.up(portOf(t.url));
      for (let i = 3000; i < 3500; i++) o.outbox.push(stdout(`line ${i}`));
      await o.outbox.flush();
      expect(await texts(s.sessionId)).toEqual(numbered(0, 3500));
      const batches = await storedBatches(s.sessionId);
      expect(batches.map((b) => b.sequence)).toEqual(batches.map((_, i) => i + 1));
      expect(o.errors).toEqual([]);
      await o.outbox.close();
      expect(existsSync(o.dir)).toBe(false);
    },
    TEST_TIMEOUT,
  );

  it(
    "resends, after the worker process was SIGKILLed, the batches it left on disk; numbering goes on after them",
    async () => {
      const s = await claimed();
      const dir = outboxDir(parentDir, s.sessionId);
      const settings: OutboxWriterSettings = { url: proxy.url, workerToken: s.workerToken, sessionId: s.sessionId, leaseToken: s.leaseToken, dir, ackedLines: 450, totalLines: 1234, maxBatchLines: 100 };
      const child = spawn(process.execPath, ["--import", "tsx", "test/helpers/outbox-writer.ts", JSON.stringify(settings)], { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] });
      const killChild = () => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL");
      process.once("exit", killChild);
      try {
        const events: Record<string, unknown>[] = [];
        let stderr = "";
        let rest = "";
        child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
          const lines = (rest + chunk).split("\n");
          rest = lines.pop()!;
          for (const line of lines) if (line.startsWith("{")) events.push(JSON.parse(line) as Record<string, unknown>);
        });
        const exited = new Promise((resolve) => child.once("exit", resolve));
        const event = (name: string) => until(`the writer's ${name} (${stderr})`, () => events.some((e) => e.event === name) || child.exitCode !== null);
        await event("acked");
        expect(events.find((e) => e.event === "acked")).toMatchObject({ stored: 5 });
        // The rest is written to disk but never acknowledged.
        proxy.cut();
        child.stdin.write("more\n");
        await event("written");
        expect(events.find((e) => e.event === "written")).toMatchObject({ files: 8 });
        child.kill("SIGKILL");
        await exited;
        proxy.up();
        expect(await texts(s.sessionId)).toEqual(numbered(0, 450));

        // The daemon's next start finds the folder, with the session and its lease token.
        const found = await recoverOutboxes(parentDir);
        const mine = found.find((f) => f.sessionId === s.sessionId);
        expect(mine).toEqual({ dir, sessionId: s.sessionId, leaseToken: s.leaseToken, batches: 8 });
        const o = await open({ ...s, leaseToken: mine!.leaseToken });
        o.outbox.push(stdout("after the restart"));
        await o.outbox.flush();
        expect(await texts(s.sessionId)).toEqual([...numbered(0, 1234), "after the restart"]);
        expect((await storedBatches(s.sessionId)).map((b) => b.sequence)).toEqual(Array.from({ length: 14 }, (_, i) => i + 1));
        expect(o.outbox.storedSequence).toBe(14);
        await o.outbox.close();
        expect(existsSync(dir)).toBe(false);
        expect((await recoverOutboxes(parentDir)).some((f) => f.sessionId === s.sessionId)).toBe(false);
      } finally {
        killChild();
        process.off("exit", killChild);
      }
    },
    TEST_TIMEOUT,
  );

  it(
    "stops at once when its signal aborts and leaves what is unacknowledged in its folder, for the next start to send",
    async () => {
      const s = await claimed();
      const controller = new AbortController();
      const o = await open(s, { signal: controller.signal, maxBatchLines: 10 });
      o.outbox.push(lineOfAgentEvent({ stream: "stderr", text: "acknowledged" }));
      await o.outbox.flush();
      proxy.cut();
      for (let i = 0; i < 25; i++) o.outbox.push(stdout(`line ${i}`));
      const batchFiles = async () => (await readdir(o.dir)).filter((f) => f.endsWith(".batch"));
      await until("three batch files", async () => (await batchFiles()).length === 3);
      controller.abort();
      await o.outbox.close();
      expect(await batchFiles()).toHaveLength(3);
      proxy.up();
      const again = await open(s);
      await again.outbox.close();
      const lines = (await storedBatches(s.sessionId)).flatMap((b) => b.lines);
      expect(lines.map((l) => l.text)).toEqual(["acknowledged", ...numbered(0, 25)]);
      expect(lines[0]!.stream).toBe(LogStream.STDERR);
      expect(existsSync(o.dir)).toBe(false);
    },
    TEST_TIMEOUT,
  );

  it(
    "stops on LEASE_LOST when the task is cancelled: onLeaseLost once, nothing more sent, nothing kept",
    async () => {
      const s = await claimed();
      const o = await open(s);
      o.outbox.push(stdout("before"));
      await o.outbox.flush();
      await me.client(TaskService).updateTaskStatus({ id: s.taskId, status: TaskStatus.CANCELLED });
      o.outbox.push(stdout("after the cancel"));
      await o.outbox.flush();
      expect(o.leaseLost()).toBe(1);
      o.outbox.push(stdout("later still"));
      await o.outbox.flush();
      await o.outbox.close();
      expect(o.leaseLost()).toBe(1);
      expect(existsSync(o.dir)).toBe(false);
      expect(await texts(s.sessionId)).toEqual(["before"]);
      expect(o.errors).toEqual([]);
    },
    TEST_TIMEOUT,
  );

  it(
    "drops lines past maxPendingBytes while the server is unreachable and says how many in one SYSTEM line",
    async () => {
      const s = await claimed();
      const o = await open(s, { maxPendingBytes: 10_000, maxBatchLines: 10 });
      proxy.cut();
      // 100 bytes a line: 100 fit, 900 are dropped.
      const hundred = (i: number) => `line ${i} `.padEnd(100, "-");
      for (let i = 0; i < 1000; i++) o.outbox.push(stdout(hundred(i)));
      expect(o.outbox.droppedLineCount).toBe(900);
      proxy.up();
      await o.outbox.flush();
      o.outbox.push(stdout("after"));
      await o.outbox.close();
      const lines = (await storedBatches(s.sessionId)).flatMap((b) => b.lines);
      expect(lines.slice(0, 100).map((l) => l.text)).toEqual(Array.from({ length: 100 }, (_, i) => hundred(i)));
      const system = lines.filter((l) => l.stream === LogStream.SYSTEM);
      expect(system).toHaveLength(1);
      expect(system[0]!.text).toMatch(/^900 lines of output were dropped/);
      expect(lines.at(-1)!.text).toBe("after");
      expect(lines).toHaveLength(102);
    },
    TEST_TIMEOUT,
  );

  it(
    "cuts a line over 64 KiB at a character boundary with a marker, and replaces lone surrogates and NUL, so nothing is refused",
    async () => {
      const s = await claimed();
      const o = await open(s);
      const long = "é".repeat(60_000); // 120,000 bytes of UTF-8
      o.outbox.push(stdout(long));
      o.outbox.push(stdout("lone \uD800 high, lone \uDC00 low, a pair \uD83D\uDE00, a NUL \0."));
      o.outbox.push({ stream: LogStream.STDOUT, kind: LogLineKind.TOOL_RESULT, text: "big result", payloadJson: JSON.stringify({ out: "x".repeat(70_000) }) });
      await o.outbox.flush();
      const [cut, odd, big] = (await storedBatches(s.sessionId)).flatMap((b) => b.lines);
      expect(Buffer.byteLength(cut!.text)).toBeLessThanOrEqual(MAX_LINE_BYTES);
      expect(cut!.text).toMatch(/^é+… \[cut: the line was 120000 bytes, over 65536\]$/);
      expect(odd!.text).toBe("lone \uFFFD high, lone \uFFFD low, a pair \uD83D\uDE00, a NUL \uFFFD.");
      expect(big!.payloadJson).toBe("");
      expect(big!.text).toMatch(/^big result… \[cut: .*payload_json of 70010 bytes dropped/);
      expect(o.errors).toEqual([]);
      await o.outbox.close();
    },
    TEST_TIMEOUT,
  );

  it(
    "drops a batch the server refuses (InvalidArgument) with a SYSTEM line under its sequence, so later batches still go, also from a call of several",
    async () => {
      const s = await claimed();
      const o = await open(s, { maxBatchLines: 1 });
      o.outbox.push(stdout("good 1"));
      await o.outbox.flush();
      // Batches 2 to 4 wait together, so they go in one call, which the bad one refuses whole.
      proxy.cut();
      o.outbox.push(stdout("good 2"));
      o.outbox.push({ stream: 99 as LogStream, text: "an unknown stream" });
      o.outbox.push(stdout("good 3"));
      await until("three batch files", async () => (await readdir(o.dir)).filter((f) => f.endsWith(".batch")).length === 3);
      proxy.up();
      await o.outbox.flush();
      o.outbox.push(stdout("good 4"));
      await o.outbox.close();
      const batches = await storedBatches(s.sessionId);
      expect(batches.map((b) => [b.sequence, b.lines.map((l) => l.text)])).toEqual([
        [1, ["good 1"]],
        [2, ["good 2"]],
        [3, [expect.stringMatching(/^1 lines of output were dropped: the server refused them \(InvalidArgument: batches\[\d\]\.lines\[0\]\.stream\)$/)]],
        [4, ["good 3"]],
        [5, ["good 4"]],
      ]);
      expect(o.errors).toEqual([expect.objectContaining({ kind: "batch_refused", firstSequence: 3, lines: 1, code: "InvalidArgument" })]);
      expect(JSON.stringify(o.errors)).not.toContain("an unknown stream");
    },
    TEST_TIMEOUT,
  );

  it(
    "renumbers after SEQUENCE_GAP when the server lacks batches this outbox thought acknowledged, and keeps the server's lines on SEQUENCE_CONFLICT",
    async () => {
      // The folder says 5 were acknowledged; the server has none (its database went back).
      const gap = await claimed();
      const gapDir = outboxDir(parentDir, gap.sessionId);
      await rm(gapDir, { recursive: true, force: true });
      await mkdir(gapDir, { recursive: true });
      await writeFile(path.join(gapDir, "session.json"), JSON.stringify({ sessionId: gap.sessionId, leaseToken: gap.leaseToken, storedSequence: 5 }), { mode: 0o600 });
      const a = await open(gap);
      a.outbox.push(stdout("one"));
      await a.outbox.flush();
      expect(await shape(gap.sessionId)).toEqual([[1, 1]]);
      expect(a.errors).toEqual([expect.objectContaining({ kind: "sequences_lost", firstSequence: 1, lastSequence: 5, reason: "SEQUENCE_GAP" })]);

      // Another writer stored batch 1 with other lines; this outbox's batch 1 (left on disk) is dropped, its batch 2 goes.
      const conflict = await claimed();
      await conflict.direct.appendLogs({ sessionId: conflict.sessionId, leaseToken: conflict.leaseToken, batches: [{ sequence: 1, lines: [stdout("theirs")] }] });
      const dir = outboxDir(parentDir, conflict.sessionId);
      await mkdir(dir, { recursive: true });
      const file = (n: number, text: string) =>
        writeFile(path.join(dir, `${String(n).padStart(10, "0")}.batch`), toBinary(LogBatchSchema, create(LogBatchSchema, { sequence: n, lines: [{ ...stdout(text), time: timestampFromDate(new Date()) }] })));
      await file(1, "mine");
      await file(2, "next");
      const b = await open(conflict);
      await b.outbox.flush();
      expect((await storedBatches(conflict.sessionId)).map((x) => x.lines.map((l) => l.text))).toEqual([["theirs"], ["next"]]);
      expect(b.errors).toEqual([expect.objectContaining({ kind: "sequence_conflict", lastSequence: 1, lines: 1, reason: "SEQUENCE_CONFLICT" })]);
      await Promise.all([a.outbox.close(), b.outbox.close()]);
    },
    TEST_TIMEOUT,
  );
});
