// SessionService.StreamLog, on both databases and across two replicas: what is stored after the
// sequence is replayed, then what the worker appends follows live, with no gap and no duplicate
// (also for a reader that reconnects 200 times in the middle of an append), the stream says at
// once that it is live, TTY questions arrive as they are raised and answered, and the stream ends
// with the session's end. A thousand readers share one reader of the database, a slow reader
// slows nobody, and every cancelled stream is released (foreman_log_readers back to zero). The
// feed's own poll is an hour here, so a batch that arrives was pushed, not found by a poll.
import http2 from "node:http2";
import { create, toBinary, toJson } from "@bufbuild/protobuf";
import { Code, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { GetLogRequestSchema, LogBatchSchema, LogLineKind, LogStream, SessionService, StreamLogRequestSchema, TtyInputStatus, TtyInputType, type StreamLogResponse } from "../../gen/foreman/v1/session_pb.js";
import { SecretsService } from "../../gen/foreman/v1/secrets_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import type { Assignment } from "../../gen/foreman/v1/worker_pb.js";
import { DIALECTS, runsOn } from "../helpers/databases.js";
import { dispatchFixtures, type TestWorker } from "../helpers/dispatch.js";
import { clientWith, multiUserEnv, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { UNKNOWN_ID, expectCode, expectInvalid } from "../helpers/rpc-errors.js";
import { startReplicas, type Replicas } from "../helpers/replicas.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const TEST_TIMEOUT = 60_000;
const ENV = {
  FOREMAN_STREAM_POLL_SECONDS: "3600",
  FOREMAN_STREAM_KEEPALIVE_SECONDS: "300",
  FOREMAN_HEALTH_CHECK_SECONDS: "3600",
  // Leases of half an hour: the tests' workers append for a long while on a loaded machine
  // without heartbeating.
  FOREMAN_HEARTBEAT_SECONDS: "600",
  // A thousand readers of one client, each a stream of one HTTP/2 connection or its own.
  FOREMAN_MAX_CONNECTIONS_PER_ADDRESS: "0",
};

/** Appends one batch of `n` stdout lines under `sequence`. */
function append(w: TestWorker, a: Assignment, sequence: number, n = 2) {
  const lines = Array.from({ length: n }, (_, i) => ({ stream: LogStream.STDOUT, text: `line ${i} of batch ${sequence}` }));
  return w.client.appendLogs({ sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken, batches: [{ sequence, lines }] });
}

/** A reader of a session's StreamLog: what it got, and waits for a count of batches or the end. */
function read(client: Client<typeof SessionService>, sessionId: string, afterSequence = 0) {
  const controller = new AbortController();
  const events: StreamLogResponse["event"][] = [];
  const sequences: number[] = [];
  let notify: (() => void) | undefined;
  let done = false;
  const reading = (async () => {
    try {
      for await (const res of client.streamLog({ sessionId, afterSequence }, { signal: controller.signal })) {
        events.push(res.event);
        if (res.event.case === "batch") sequences.push(res.event.value.sequence);
        notify?.();
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    } finally {
      done = true;
      notify?.();
    }
  })();
  const until = (what: string, ready: () => boolean): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (ready()) resolve();
        else if (done) reading.then(() => reject(new Error(`the stream ended before ${what}`)), reject);
      };
      notify = check;
      check();
      setTimeout(() => reject(new Error(`no ${what} within ${TEST_TIMEOUT} ms (got ${sequences.length} batches)`)), TEST_TIMEOUT).unref();
    });
  return {
    events,
    sequences,
    until,
    batches: (n: number) => until(`${n} batches`, () => sequences.length >= n),
    /** Resolves when the stream has ended on its own. */
    end: () => until("the end", () => done).then(() => reading),
    async cancel() {
      controller.abort();
      await reading;
    },
  };
}

async function logReaders(t: TestServer): Promise<number> {
  const text = await (await fetch(`${t.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("foreman_log_readers "));
  return Number(line?.split(" ")[1]);
}

async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  const until = performance.now() + TEST_TIMEOUT;
  while (!(await check())) {
    if (performance.now() > until) throw new Error(`not ${what} within ${TEST_TIMEOUT} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe.each(DIALECTS)("StreamLog on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const fx = dispatchFixtures({ server: () => t, provider: () => provider, userPrefix: "stream-log", workerName: "log worker" });

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startTestServer(dialect, multiUserEnv(provider, ENV));
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  /** A user, their task's run claimed and running on a worker of theirs. */
  async function running() {
    const user = await fx.newUser();
    const task = await fx.createTask(user);
    const w = await fx.newWorker(user);
    const a = await fx.claim(w);
    await fx.report(w, a, SessionState.RUNNING);
    return { user, task, w, a, sessionId: a.lease!.sessionId };
  }

  it(
    "replays what is stored after the sequence, follows what is appended live, and ends with the session's end",
    async () => {
      const { user, w, a, sessionId } = await running();
      for (const seq of [1, 2, 3]) await append(w, a, seq);
      const from0 = read(user.client(SessionService), sessionId);
      const from2 = read(user.client(SessionService), sessionId, 2);
      try {
        await from0.batches(3);
        await from2.batches(1);
        for (const seq of [4, 5]) await append(w, a, seq, 3);
        await from0.batches(5);
        await from2.batches(3);
        await fx.report(w, a, SessionState.SUCCEEDED, { exitCode: 0 });
        await from0.end();
        await from2.end();
        expect(from0.sequences).toEqual([1, 2, 3, 4, 5]);
        expect(from2.sequences).toEqual([3, 4, 5]);
        const batch4 = from0.events.find((e) => e.case === "batch" && e.value.sequence === 4);
        expect(batch4?.case === "batch" && batch4.value.lines.map((l) => l.text)).toEqual(["line 0 of batch 4", "line 1 of batch 4", "line 2 of batch 4"]);
        const last = from0.events.at(-1)!;
        expect(last.case).toBe("ended");
        expect(last.case === "ended" && last.value).toEqual(expect.objectContaining({ state: SessionState.SUCCEEDED, exitCode: 0, lastSequence: 5 }));
      } finally {
        await from0.cancel();
        await from2.cancel();
      }
    },
    TEST_TIMEOUT,
  );

  it("says at once that it is live: a keep-alive first when nothing is stored after the sequence", async () => {
    const { user, w, a, sessionId } = await running();
    const empty = read(user.client(SessionService), sessionId);
    try {
      await empty.until("a first message", () => empty.events.length > 0);
      expect(empty.events[0]!.case).toBe("keepAlive");
    } finally {
      await empty.cancel();
    }
    await append(w, a, 1);
    const caughtUp = read(user.client(SessionService), sessionId, 1);
    try {
      await caughtUp.until("a first message", () => caughtUp.events.length > 0);
      expect(caughtUp.events[0]!.case).toBe("keepAlive");
    } finally {
      await caughtUp.cancel();
    }
  });

  it("replays and ends at once for a session that has already ended, also one stopped by its user", async () => {
    const { user, w, a, sessionId } = await running();
    await append(w, a, 1);
    await append(w, a, 2);
    await user.client(SessionService).stopSession({ sessionId, reason: "enough" });
    const late = read(user.client(SessionService), sessionId);
    await late.end();
    expect(late.sequences).toEqual([1, 2]);
    const last = late.events.at(-1)!;
    expect(last.case === "ended" && last.value.state).toBe(SessionState.CANCELLED);
    expect(last.case === "ended" && last.value.errorMessage).toBe("stopped by its user: enough");
    expect(last.case === "ended" && last.value.lastSequence).toBe(2);
    // From its last sequence: nothing to replay, the end at once.
    const atEnd = read(user.client(SessionService), sessionId, 2);
    await atEnd.end();
    expect(atEnd.events.map((e) => e.case)).toEqual(["ended"]);
  });

  it("ends the stream when the task is cancelled or deleted while it is read", async () => {
    const first = await running();
    const cancelled = read(first.user.client(SessionService), first.sessionId);
    await cancelled.until("a first message", () => cancelled.events.length > 0);
    await first.user.client(TaskService).updateTaskStatus({ id: first.task.id, status: TaskStatus.CANCELLED });
    await cancelled.end();
    expect(cancelled.events.at(-1)).toEqual(expect.objectContaining({ case: "ended", value: expect.objectContaining({ state: SessionState.CANCELLED }) }));

    const second = await running();
    await append(second.w, second.a, 1);
    const deleted = read(second.user.client(SessionService), second.sessionId);
    await deleted.batches(1);
    await second.user.client(TaskService).deleteTask({ id: second.task.id });
    await deleted.end();
    expect(deleted.events.at(-1)).toEqual(expect.objectContaining({ case: "ended", value: expect.objectContaining({ state: SessionState.CANCELLED }) }));
  });

  it(
    "gives a reader that reconnects 200 times at random points during a live append exactly the stored sequence, no gap, no duplicate",
    async () => {
      const { user, w, a, sessionId } = await running();
      let reconnects = 0;
      // The worker appends for as long as the reader is still reconnecting, then a little more, and ends.
      let total = 0;
      const writing = (async () => {
        while (reconnects < 200) await append(w, a, ++total, 1);
        for (let i = 0; i < 5; i++) await append(w, a, ++total, 1);
        await fx.report(w, a, SessionState.SUCCEEDED);
      })();
      const seen: number[] = [];
      let ended = false;
      while (!ended) {
        const after = seen.at(-1) ?? 0;
        const controller = new AbortController();
        // Leave after 0 to 3 batches (0: at once, often before the replay), 200 times; then read to the end.
        const take = reconnects < 200 ? Math.floor(Math.random() * 4) : Number.POSITIVE_INFINITY;
        let taken = 0;
        try {
          for await (const res of user.client(SessionService).streamLog({ sessionId, afterSequence: after }, { signal: controller.signal })) {
            if (res.event.case === "batch") {
              seen.push(res.event.value.sequence);
              taken++;
            }
            if (res.event.case === "ended") {
              ended = true;
              expect(res.event.value.lastSequence).toBe(total);
            }
            if (taken >= take) break;
          }
        } finally {
          controller.abort();
        }
        reconnects++;
      }
      await writing;
      expect(reconnects).toBeGreaterThan(200);
      expect(seen).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    },
    TEST_TIMEOUT * 2,
  );

  it(
    "delivers every batch in order to 1,000 concurrent readers of one session, and releases them all when they cancel",
    async () => {
      const { user, w, a, sessionId } = await running();
      // Every earlier test cancelled its readers; the server may take a moment to release them.
      await eventually("no readers left from earlier tests", async () => (await logReaders(t)) === 0);
      const readers = Array.from({ length: 1000 }, () => read(user.client(SessionService), sessionId));
      try {
        await Promise.all(readers.map((r) => r.until("a first message", () => r.events.length > 0)));
        expect(await logReaders(t)).toBe(1000);
        for (let seq = 1; seq <= 10; seq++) await append(w, a, seq, 5);
        await Promise.all(readers.map((r) => r.batches(10)));
        for (const r of readers) expect(r.sequences).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      } finally {
        await Promise.all(readers.map((r) => r.cancel()));
      }
      await eventually("the readers released", async () => (await logReaders(t)) === 0);
    },
    TEST_TIMEOUT * 2,
  );

  it(
    "lets a reader that stops reading for a while slow neither the worker nor another reader, and catch up after",
    async () => {
      const { user, w, a, sessionId } = await running();
      const brisk = read(user.client(SessionService), sessionId);
      // The slow reader takes one batch, then reads nothing while 600 batches (past the feed's
      // buffer of 512) are appended, then reads on.
      const controller = new AbortController();
      const stream = user.client(SessionService).streamLog({ sessionId }, { signal: controller.signal })[Symbol.asyncIterator]();
      try {
        await append(w, a, 1, 20);
        let first = await stream.next();
        while (first.value?.event.case !== "batch") first = await stream.next();
        for (let seq = 2; seq <= 600; seq++) await append(w, a, seq, 20);
        // The worker was never held up: every append above was acknowledged, and the brisk
        // reader has them all, while the slow one is still at its first batch.
        await brisk.batches(600);
        expect(brisk.sequences).toEqual(Array.from({ length: 600 }, (_, i) => i + 1));
        const slow: number[] = [first.value.event.value.sequence];
        while (slow.length < 600) {
          const next = await stream.next();
          if (next.done) break;
          if (next.value.event.case === "batch") slow.push(next.value.event.value.sequence);
        }
        expect(slow).toEqual(Array.from({ length: 600 }, (_, i) => i + 1));
      } finally {
        controller.abort();
        await stream.return?.(undefined).catch(() => undefined);
        await brisk.cancel();
      }
    },
    TEST_TIMEOUT * 2,
  );

  it("delivers a TTY question as it is raised and again when it is answered", async () => {
    const { user, w, a, sessionId } = await running();
    const reader = read(user.client(SessionService), sessionId);
    try {
      await reader.until("a first message", () => reader.events.length > 0);
      const { request } = await w.client.createTtyInputRequest({
        sessionId,
        leaseToken: a.lease!.leaseToken,
        prompt: "Overwrite the lock file?",
        inputType: TtyInputType.CONFIRM,
        clientRequestId: "q1",
      });
      const ttyEvents = () => reader.events.flatMap((e) => (e.case === "ttyInputRequest" ? [e.value] : []));
      await reader.until("the question", () => ttyEvents().length >= 1);
      expect(ttyEvents()[0]).toEqual(expect.objectContaining({ id: request!.id, prompt: "Overwrite the lock file?", status: TtyInputStatus.PENDING }));
      await user.client(SessionService).submitTtyInput({ requestId: request!.id, response: "yes" });
      await reader.until("the answer", () => ttyEvents().length >= 2);
      expect(ttyEvents()[1]).toEqual(expect.objectContaining({ id: request!.id, status: TtyInputStatus.ANSWERED, response: "yes" }));
    } finally {
      await reader.cancel();
    }
  });

  it("never hands a reader a secret the agent printed: the line arrives masked", async () => {
    const user = await fx.newUser();
    const task = await fx.createTask(user);
    const secret = "sk-live-0123456789abcdef";
    await user.client(SecretsService).sendSecrets({ taskId: task.id, secrets: { API_KEY: secret } });
    const w = await fx.newWorker(user);
    const a = await fx.claim(w);
    const reader = read(user.client(SessionService), a.lease!.sessionId);
    try {
      await reader.until("a first message", () => reader.events.length > 0);
      await w.client.appendLogs({
        sessionId: a.lease!.sessionId,
        leaseToken: a.lease!.leaseToken,
        batches: [{ sequence: 1, lines: [{ stream: LogStream.STDOUT, text: `export API_KEY=${secret}` }] }],
      });
      await reader.batches(1);
      const batch = reader.events.find((e) => e.case === "batch");
      expect(batch?.case === "batch" && batch.value.lines.map((l) => l.text)).toEqual(["export API_KEY=***"]);
      expect(JSON.stringify(reader.events)).not.toContain(secret);
    } finally {
      await reader.cancel();
    }
  });

  it("refuses unknown, foreign and malformed sessions, and a sequence past the end", async () => {
    const { user, w, a, sessionId } = await running();
    await append(w, a, 1);
    const drain = async (call: AsyncIterable<unknown>) => {
      for await (const _ of call);
    };
    const client = user.client(SessionService);
    await expectCode(drain(client.streamLog({ sessionId: UNKNOWN_ID })), Code.NotFound);
    await expectInvalid(drain(client.streamLog({ sessionId: "" })), "session_id");
    await expectInvalid(drain(client.streamLog({ sessionId: "not-an-id" })), "session_id");
    await expectInvalid(drain(client.streamLog({ sessionId, afterSequence: 2 })), "after_sequence");
    const bob = await fx.newUser();
    await expectCode(drain(bob.client(SessionService).streamLog({ sessionId })), Code.NotFound);
  });
});

describe.runIf(runsOn("postgres"))("StreamLog across two replicas", () => {
  let provider: TestProvider;
  let replicas: Replicas;
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    provider = await startOidcProvider();
    replicas = await startReplicas(multiUserEnv(provider, ENV));
    ({ a, b } = replicas);
  });

  afterAll(async () => {
    await replicas?.close();
    await provider?.close();
  });

  it(
    "follows on one replica what a worker appends through the other, by NOTIFY, to the end",
    async () => {
      const onA = dispatchFixtures({ server: () => a, provider: () => provider, userPrefix: "stream-log-replica", workerName: "replica worker" });
      const user = await onA.newUser();
      await onA.createTask(user);
      const w = await onA.newWorker(user);
      const claimed = await onA.claim(w);
      await onA.report(w, claimed, SessionState.RUNNING);
      // The same user's reader, on B.
      const readerOnB = read(clientWith(b, SessionService, user.accessToken), claimed.lease!.sessionId);
      try {
        await readerOnB.until("a first message", () => readerOnB.events.length > 0);
        for (const seq of [1, 2, 3]) await append(w, claimed, seq);
        await readerOnB.batches(3);
        await onA.report(w, claimed, SessionState.SUCCEEDED);
        await readerOnB.end();
        expect(readerOnB.sequences).toEqual([1, 2, 3]);
        expect(readerOnB.events.at(-1)?.case).toBe("ended");
      } finally {
        await readerOnB.cancel();
      }
    },
    TEST_TIMEOUT,
  );
});

describe("StreamLog's wire", () => {
  let provider: TestProvider;
  let t: TestServer;
  const fx = dispatchFixtures({ server: () => t, provider: () => provider, userPrefix: "stream-log-wire", workerName: "w" });

  /** A user, and their task's run claimed by a worker of theirs. */
  async function claimed() {
    const user = await fx.newUser();
    await fx.createTask(user);
    const w = await fx.newWorker(user);
    return { user, w, a: await fx.claim(w) };
  }

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startTestServer("sqlite", multiUserEnv(provider, ENV));
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  /** Whether the first message a gzip-accepting gRPC client is answered with came compressed (its frame's flag). */
  async function firstCompressed(path: string, body: Uint8Array, token: string): Promise<boolean> {
    const session = http2.connect(t.url);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-accept-encoding": "gzip",
        authorization: `Bearer ${token}`,
      });
      const frame = new Uint8Array(5 + body.length);
      new DataView(frame.buffer).setUint32(1, body.length);
      frame.set(body, 5);
      stream.end(frame);
      const first = await new Promise<Buffer>((resolve, reject) => {
        stream.once("data", resolve);
        stream.once("error", reject);
      });
      stream.close();
      return first[0] === 1;
    } finally {
      session.destroy();
    }
  }

  it("sends StreamLog's batches uncompressed (each encoded once for every reader), while GetLog's answer is gzipped", async () => {
    const { user, w, a } = await claimed();
    // 8 KiB of log: past connect-node's 1 KiB threshold for compressing a message.
    const text = "compressible output ".repeat(50);
    await w.client.appendLogs({
      sessionId: a.lease!.sessionId,
      leaseToken: a.lease!.leaseToken,
      batches: [{ sequence: 1, lines: Array.from({ length: 8 }, () => ({ stream: LogStream.STDOUT, text })) }],
    });
    const request = { sessionId: a.lease!.sessionId };
    expect(await firstCompressed(`/${SessionService.typeName}/StreamLog`, toBinary(StreamLogRequestSchema, create(StreamLogRequestSchema, request)), user.accessToken)).toBe(false);
    expect(await firstCompressed(`/${SessionService.typeName}/GetLog`, toBinary(GetLogRequestSchema, create(GetLogRequestSchema, request)), user.accessToken)).toBe(true);
  });

  it("sends the same batches in every protocol and codec: Connect, gRPC and gRPC-Web, binary and JSON, replayed and live", async () => {
    const { user, w, a } = await claimed();
    await fx.report(w, a, SessionState.RUNNING);
    const sessionId = a.lease!.sessionId;
    const lines = (n: number) => [
      { stream: LogStream.STDOUT, text: `plain line ${n}, ünïcødé ✓ 🚀` },
      { stream: LogStream.STDOUT, kind: LogLineKind.TOOL_CALL, text: "Bash: ls", payloadJson: '{"name":"Bash","input":{"command":"ls"}}', time: { seconds: 1_700_000_000n + BigInt(n), nanos: 5 } },
      { stream: LogStream.STDERR, text: "" },
    ];
    const appendBatch = (sequence: number) => w.client.appendLogs({ sessionId, leaseToken: a.lease!.leaseToken, batches: [{ sequence, lines: lines(sequence) }] });
    await appendBatch(1);
    const bearer: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${user.accessToken}`);
      return next(req);
    };
    const options = { baseUrl: t.url, interceptors: [bearer] };
    const transports: [string, Transport][] = [
      ["connect, binary", createConnectTransport({ ...options, httpVersion: "2", useBinaryFormat: true })],
      ["connect, JSON", createConnectTransport({ ...options, httpVersion: "1.1", useBinaryFormat: false })],
      ["gRPC, binary", createGrpcTransport({ ...options, useBinaryFormat: true })],
      ["gRPC, JSON", createGrpcTransport({ ...options, useBinaryFormat: false })],
      ["gRPC-Web, binary", createGrpcWebTransport({ ...options, httpVersion: "2", useBinaryFormat: true })],
      ["gRPC-Web, JSON", createGrpcWebTransport({ ...options, httpVersion: "1.1", useBinaryFormat: false })],
    ];
    const readers = transports.map(([name, transport]) => ({ name, reader: read(createClient(SessionService, transport), sessionId) }));
    try {
      await Promise.all(readers.map(({ reader }) => reader.batches(1)));
      // The second batch comes live, through the feed, to every reader at once.
      await appendBatch(2);
      await Promise.all(readers.map(({ reader }) => reader.batches(2)));
      const stored = (await user.client(SessionService).getLog({ sessionId })).batches.map((b) => toJson(LogBatchSchema, b));
      expect(stored).toHaveLength(2);
      expect(stored[1]).toMatchObject({ sequence: 2, lines: [{ text: "plain line 2, ünïcødé ✓ 🚀" }, { kind: "LOG_LINE_KIND_TOOL_CALL", payloadJson: '{"name":"Bash","input":{"command":"ls"}}' }, { stream: "LOG_STREAM_STDERR" }] });
      for (const { name, reader } of readers) {
        const got = reader.events.flatMap((e) => (e.case === "batch" ? [toJson(LogBatchSchema, e.value)] : []));
        expect({ name, got }).toEqual({ name, got: stored });
      }
    } finally {
      await Promise.all(readers.map(({ reader }) => reader.cancel()));
    }
  });
});
