// Session logs through the generated clients over HTTP, on both databases: WorkerService.
// AppendLogs (fenced by the lease, sequences, retries, bounds, the per-session cap, structured
// lines, masking of the task's secrets) and SessionService.GetLog (paging, ownership, the end).
// Every secret value sent is a fresh random string, looked for at the end in GetLog, the
// database (the SQLite file and WAL, or a pg_dump), and every line the server logged.
import { randomBytes } from "node:crypto";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SessionState } from "../../gen/foreman/v1/common_pb.js";
import { SecretsService } from "../../gen/foreman/v1/secrets_pb.js";
import { LogLineKind, LogStream, SessionService, type LogBatchSchema } from "../../gen/foreman/v1/session_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { AppendLogsRequestSchema, WorkerService, type Assignment } from "../../gen/foreman/v1/worker_pb.js";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { randomUUID } from "node:crypto";
import { DIALECTS, createTestDatabase, databaseText, runsOn, type TestDatabase } from "../helpers/databases.js";
import { dispatchFixtures, expectLeaseLost, type TestWorker } from "../helpers/dispatch.js";
import { caller, registerWorker, type User } from "../helpers/fixtures.js";
import { clientWith, movableClock, startMultiUserServer, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { UNKNOWN_ID, expectCode, expectError, expectInvalid } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const TEST_TIMEOUT = 60_000;
const LEASE_SECONDS = 30;
/** FOREMAN_MAX_LOG_BYTES_PER_SESSION on the test server: small, so one test can pass it. */
const CAP = 20_000;

type BatchInit = MessageInitShape<typeof LogBatchSchema>;

const line = (text: string, stream = LogStream.STDOUT) => ({ stream, text });
const batch = (sequence: number, ...texts: string[]): BatchInit => ({ sequence, lines: texts.map((t) => line(t)) });

describe.each(DIALECTS)("session logs on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const clock = movableClock();
  const logLines: string[] = [];
  const { newUser, newWorker, createTask, claim, report } = dispatchFixtures({
    server: () => t,
    provider: () => provider,
    userPrefix: "logs",
    workerName: "logs worker",
  });

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startMultiUserServer(
      dialect,
      provider,
      { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_HEALTH_CHECK_SECONDS: "3600", FOREMAN_MAX_LOG_BYTES_PER_SESSION: String(CAP) },
      { clock: clock.now, logLines },
    );
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  const db = () => t.server.db.kysely;
  /** A user with a worker of theirs holding a fresh task's run. */
  async function claimed(secrets?: Record<string, string>): Promise<{ alice: User; w: TestWorker; a: Assignment; sessionId: string }> {
    const alice = await newUser();
    const task = await createTask(alice);
    if (secrets !== undefined) await alice.client(SecretsService).sendSecrets({ taskId: task.id, secrets, ttlSeconds: 0 });
    const w = await newWorker(alice);
    const a = await claim(w);
    expect(a.taskId).toBe(task.id);
    return { alice, w, a, sessionId: a.lease!.sessionId };
  }
  const append = (w: TestWorker, a: Assignment, ...batches: BatchInit[]) => w.client.appendLogs({ sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken, batches });
  const getLog = (user: User, sessionId: string, afterSequence = 0, maxBatches = 0) => user.client(SessionService).getLog({ sessionId, afterSequence, maxBatches });
  const texts = async (user: User, sessionId: string) => (await getLog(user, sessionId)).batches.map((b) => [b.sequence, b.lines.map((l) => l.text)]);
  const rowCount = async (sessionId: string) => (await db().selectFrom("log_batches").select("sequence").where("session_id", "=", sessionId).execute()).length;
  const metadataOf = (error: ConnectError) => error.findDetails(ErrorInfoSchema)[0]!.metadata;

  it(
    "stores batches in sequence and reads them back; a retried batch is acknowledged and stored once",
    async () => {
      const { alice, w, a, sessionId } = await claimed();
      expect((await append(w, a, batch(1, "one", "two"))).storedSequence).toBe(1);
      expect((await append(w, a, batch(2, "three"), batch(3, "four", "\u001b[32mgreen\u001b[0m\ttab"))).storedSequence).toBe(3);
      // The same batch again (the worker lost the answer), alone and with the next one.
      expect((await append(w, a, batch(3, "four", "\u001b[32mgreen\u001b[0m\ttab"))).storedSequence).toBe(3);
      expect((await append(w, a, batch(3, "four", "\u001b[32mgreen\u001b[0m\ttab"), batch(4, "five"))).storedSequence).toBe(4);
      // The same batch sent five times at once (a worker retrying over several connections): one is stored, all are acknowledged.
      const same = await Promise.all(Array.from({ length: 5 }, () => append(w, a, batch(5, "six", "seven"))));
      expect(same.map((r) => r.storedSequence)).toEqual([5, 5, 5, 5, 5]);
      expect(await rowCount(sessionId)).toBe(5);
      // An empty call says where the server is.
      expect((await append(w, a)).storedSequence).toBe(5);
      expect(await texts(alice, sessionId)).toEqual([
        [1, ["one", "two"]],
        [2, ["three"]],
        [3, ["four", "\u001b[32mgreen\u001b[0m\ttab"]],
        [4, ["five"]],
        [5, ["six", "seven"]],
      ]);
      const log = await getLog(alice, sessionId);
      expect(log.lastSequence).toBe(5);
      expect(log.sessionEnded).toBe(false);
      expect(log.batches[0]!.lines[0]!.stream).toBe(LogStream.STDOUT);
    },
    TEST_TIMEOUT,
  );

  it(
    "refuses a gap with SEQUENCE_GAP and other lines under a stored sequence with SEQUENCE_CONFLICT, both saying the stored sequence",
    async () => {
      const { alice, w, a, sessionId } = await claimed();
      const gap = await expectError(append(w, a, batch(2, "early")), { code: Code.FailedPrecondition, reason: "SEQUENCE_GAP", message: "send from 1" });
      expect(metadataOf(gap)).toMatchObject({ stored_sequence: "0", sequence: "2" });
      await append(w, a, batch(1, "one"), batch(2, "two"));
      const conflict = await expectError(append(w, a, batch(2, "not two")), { code: Code.FailedPrecondition, reason: "SEQUENCE_CONFLICT" });
      expect(metadataOf(conflict)).toMatchObject({ stored_sequence: "2", sequence: "2" });
      // A retried batch with the next one after a changed one: the whole call is refused, nothing stored.
      await expectError(append(w, a, batch(2, "two", "more"), batch(3, "three")), { code: Code.FailedPrecondition, reason: "SEQUENCE_CONFLICT" });
      const gap2 = await expectError(append(w, a, batch(4, "four")), { code: Code.FailedPrecondition, reason: "SEQUENCE_GAP" });
      expect(metadataOf(gap2)).toMatchObject({ stored_sequence: "2", sequence: "4" });
      expect(await texts(alice, sessionId)).toEqual([
        [1, ["one"]],
        [2, ["two"]],
      ]);
      // Batches of one call must follow each other.
      await expectInvalid(append(w, a, batch(3, "three"), batch(5, "five")), "batches[1].sequence");
      await expectInvalid(append(w, a, batch(0, "zero")), "batches[0].sequence");
    },
    TEST_TIMEOUT,
  );

  it(
    "refuses a stale, foreign, made-up or ended lease with LEASE_LOST, and another user's worker with NotFound",
    async () => {
      const { alice, w, a, sessionId } = await claimed();
      await append(w, a, batch(1, "mine"));
      const other = await newWorker(alice);
      await expectLeaseLost(other.client.appendLogs({ sessionId, leaseToken: a.lease!.leaseToken, batches: [batch(2, "theirs")] }), "not this session's lease");
      await expectLeaseLost(w.client.appendLogs({ sessionId, leaseToken: "fls_garbage", batches: [batch(2, "garbage")] }), "not this session's lease");
      await expectLeaseLost(w.client.appendLogs({ sessionId, leaseToken: "x".repeat(5000), batches: [batch(2, "long")] }), "not this session's lease");
      const bob = await newUser();
      const bobs = await newWorker(bob);
      await expectCode(bobs.client.appendLogs({ sessionId, leaseToken: a.lease!.leaseToken, batches: [batch(2, "bob")] }), Code.NotFound);
      await expectCode(w.client.appendLogs({ sessionId: UNKNOWN_ID, leaseToken: a.lease!.leaseToken, batches: [] }), Code.NotFound);
      await expectInvalid(w.client.appendLogs({ sessionId: "nope", leaseToken: "", batches: [] }), "session_id", "lease_token");
      expect(await texts(alice, sessionId)).toEqual([[1, ["mine"]]]);

      // An expired lease.
      const second = await claimed();
      await append(second.w, second.a, batch(1, "before"));
      clock.advance(LEASE_SECONDS + 1);
      await expectLeaseLost(append(second.w, second.a, batch(2, "after")), "lease expired");
      expect(await rowCount(second.sessionId)).toBe(1);
    },
    TEST_TIMEOUT,
  );

  it(
    "says session_ended once the run is reported, after which the lease is gone",
    async () => {
      const { alice, w, a, sessionId } = await claimed();
      await report(w, a, SessionState.RUNNING);
      await append(w, a, batch(1, "working"));
      expect((await getLog(alice, sessionId)).sessionEnded).toBe(false);
      await report(w, a, SessionState.SUCCEEDED);
      const log = await getLog(alice, sessionId);
      expect(log.sessionEnded).toBe(true);
      expect(log.lastSequence).toBe(1);
      await expectLeaseLost(append(w, a, batch(2, "late")), "ended as succeeded");
      // Even a retry of a stored batch: the session is over.
      await expectLeaseLost(append(w, a, batch(1, "working")), "ended as succeeded");
    },
    TEST_TIMEOUT,
  );

  it(
    "refuses lines, line bytes, batch bytes, NUL and a payload that is not a JSON object, naming the field",
    async () => {
      const { alice, w, a, sessionId } = await claimed();
      const many = { sequence: 1, lines: Array.from({ length: 5001 }, () => line("x")) };
      const tooMany = await expectInvalid(append(w, a, many), "batches[0].lines");
      expect(tooMany.rawMessage).toContain("5000");
      const long = await expectInvalid(append(w, a, batch(1, "ok", "y".repeat(64 * 1024 + 1))), "batches[0].lines[1].text");
      expect(long.rawMessage).toContain("65536");
      // 17 lines of 63 KiB: each line fits, the batch does not.
      const big = await expectInvalid(append(w, a, batch(1, ...Array.from({ length: 17 }, () => "z".repeat(63 * 1024)))), "batches[0]");
      expect(big.rawMessage).toContain(String(1024 * 1024));
      await expectInvalid(append(w, a, batch(1, "nul\u0000here")), "batches[0].lines[0].text");
      await expectInvalid(append(w, a, { sequence: 1, lines: [{ ...line("call"), kind: LogLineKind.TOOL_CALL, payloadJson: "[1,2]" }] }), "batches[0].lines[0].payload_json");
      await expectInvalid(append(w, a, { sequence: 1, lines: [{ ...line("call"), kind: LogLineKind.TOOL_CALL, payloadJson: "{nope" }] }), "batches[0].lines[0].payload_json");
      await expectInvalid(append(w, a, { sequence: 1, lines: [{ stream: 99 as LogStream, text: "?" }] }), "batches[0].lines[0].stream");
      expect(await rowCount(sessionId)).toBe(0);
      // At the bound, accepted (and, alone past this server's small cap, cut off at once).
      expect((await append(w, a, batch(1, "y".repeat(64 * 1024)))).storedSequence).toBe(1);
      expect((await getLog(alice, sessionId)).batches[0]!.lines.map((l) => l.stream)).toEqual([LogStream.SYSTEM]);
    },
    TEST_TIMEOUT,
  );

  it(
    "refuses invalid UTF-8 (binary) and a lone surrogate (JSON) in a line's text over the wire, storing nothing",
    async () => {
      const { w, a, sessionId } = await claimed();
      const body = toBinary(
        AppendLogsRequestSchema,
        create(AppendLogsRequestSchema, { sessionId, leaseToken: a.lease!.leaseToken, batches: [{ sequence: 1, lines: [line("MARK")] }] }),
      );
      const at = Buffer.from(body).indexOf("MARK");
      expect(at).toBeGreaterThan(0);
      body.set([0xff, 0xfe, 0xc3, 0x28], at);
      const res = await fetch(`${t.url}/foreman.v1.WorkerService/AppendLogs`, {
        method: "POST",
        headers: { "content-type": "application/proto", authorization: `Bearer ${w.token}` },
        body,
      });
      const answer = (await res.json()) as { code: string; message: string };
      expect(res.status).toBe(400);
      expect(answer.code).toBe("invalid_argument");
      expect(await rowCount(sessionId)).toBe(0);
      // JSON has no invalid UTF-8 but can carry a lone surrogate, which no database would store: the protocol layer refuses it too (a pair is kept).
      const json = await fetch(`${t.url}/foreman.v1.WorkerService/AppendLogs`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${w.token}` },
        body: `{"sessionId":"${sessionId}","leaseToken":"${a.lease!.leaseToken}","batches":[{"sequence":1,"lines":[{"text":"half \\ud800 of a pair"}]}]}`,
      });
      const refused = (await json.json()) as { code: string; message: string };
      expect([json.status, refused.code]).toEqual([400, "invalid_argument"]);
      expect(refused.message).toContain("LogLine.text");
      expect(await rowCount(sessionId)).toBe(0);
      expect((await append(w, a, batch(1, "pair \u{1F600}"))).storedSequence).toBe(1);
    },
    TEST_TIMEOUT,
  );

  it(
    "cuts a session's log off at FOREMAN_MAX_LOG_BYTES_PER_SESSION with a SYSTEM line, then acknowledges without storing",
    async () => {
      const { alice, w, a, sessionId } = await claimed();
      const kb = (c: string) => c.repeat(1000);
      await append(w, a, batch(1, ...Array.from({ length: 15 }, () => kb("a"))));
      // 15,000 stored: of these ten, five fit under 20,000.
      expect((await append(w, a, batch(2, ...Array.from({ length: 10 }, () => kb("b"))))).storedSequence).toBe(2);
      // Acknowledged, not stored: the worker moves on instead of resending.
      expect((await append(w, a, batch(3, kb("c")), batch(4, "small"))).storedSequence).toBe(4);
      expect((await append(w, a, batch(3, "retried differently"))).storedSequence).toBe(4);
      const log = await getLog(alice, sessionId);
      expect(log.lastSequence).toBe(4);
      expect(log.batches.map((b) => b.sequence)).toEqual([1, 2]);
      const cut = log.batches[1]!.lines;
      expect(cut.length).toBe(6);
      expect(cut.slice(0, 5).every((l) => l.text === kb("b"))).toBe(true);
      expect(cut[5]!.stream).toBe(LogStream.SYSTEM);
      expect(cut[5]!.text).toContain(`cut off at ${CAP} bytes`);
      expect(await rowCount(sessionId)).toBe(2);
    },
    TEST_TIMEOUT,
  );

  it(
    "round-trips structured lines (kind, payload_json, time) beside plain ones",
    async () => {
      const { alice, w, a, sessionId } = await claimed();
      const time = new Date("2026-12-02T04:05:06.789Z");
      const call = JSON.stringify({ type: "tool_use", id: "toolu_01", name: "Bash", input: { command: "npm test" }, big: 12345678901234567890n.toString() });
      await append(w, a, {
        sequence: 1,
        lines: [
          { stream: LogStream.STDOUT, text: "Bash: npm test", kind: LogLineKind.TOOL_CALL, payloadJson: call, time: timestampFromDate(time) },
          { stream: LogStream.STDOUT, text: "ok", kind: LogLineKind.TOOL_RESULT, payloadJson: '{"tool_use_id":"toolu_01","content":"ok"}' },
          { stream: LogStream.STDOUT, text: "in 10, out 20", kind: LogLineKind.USAGE, payloadJson: '{"input_tokens":10,"output_tokens":20}' },
          { stream: LogStream.STDERR, text: "plain", kind: LogLineKind.TEXT },
          { stream: LogStream.STDOUT, text: "plainer" },
        ],
      });
      const [b] = (await getLog(alice, sessionId)).batches;
      const lines = b!.lines;
      expect(lines.map((l) => [l.kind, l.stream, l.text])).toEqual([
        [LogLineKind.TOOL_CALL, LogStream.STDOUT, "Bash: npm test"],
        [LogLineKind.TOOL_RESULT, LogStream.STDOUT, "ok"],
        [LogLineKind.USAGE, LogStream.STDOUT, "in 10, out 20"],
        // TEXT and UNSPECIFIED are one kind: a plain line reads back UNSPECIFIED.
        [LogLineKind.UNSPECIFIED, LogStream.STDERR, "plain"],
        [LogLineKind.UNSPECIFIED, LogStream.STDOUT, "plainer"],
      ]);
      expect(lines[0]!.payloadJson).toBe(call);
      expect(timestampDate(lines[0]!.time!).toISOString()).toBe(time.toISOString());
      expect(lines[1]!.time).toBeUndefined();
      expect(lines[3]!.payloadJson).toBe("");
      // A retry with the same structured lines is the same batch.
      expect(
        (
          await append(w, a, {
            sequence: 1,
            lines: [
              { stream: LogStream.STDOUT, text: "Bash: npm test", kind: LogLineKind.TOOL_CALL, payloadJson: call, time: timestampFromDate(time) },
              { stream: LogStream.STDOUT, text: "ok", kind: LogLineKind.TOOL_RESULT, payloadJson: '{"tool_use_id":"toolu_01","content":"ok"}' },
              { stream: LogStream.STDOUT, text: "in 10, out 20", kind: LogLineKind.USAGE, payloadJson: '{"input_tokens":10,"output_tokens":20}' },
              { stream: LogStream.STDERR, text: "plain", kind: LogLineKind.TEXT },
              { stream: LogStream.STDOUT, text: "plainer" },
            ],
          })
        ).storedSequence,
      ).toBe(1);
      expect(await rowCount(sessionId)).toBe(1);
    },
    TEST_TIMEOUT,
  );

  it(
    "masks the task's secrets (plain, split across two lines, in a payload, base64 standard and URL-safe) before storing; short values are kept",
    async () => {
      // Bytes whose base64 holds + and /, so the two alphabets differ.
      const key = `sk-${randomBytes(18).toString("hex")}`;
      const password = `pw~?>${randomBytes(9).toString("hex")}~?>`;
      const pem = `-----BEGIN KEY-----\n${randomBytes(24).toString("hex")}\n-----END KEY-----`;
      const pemMiddle = pem.split("\n")[1]!;
      const { alice, w, a, sessionId } = await claimed({ API_KEY: key, DB_PASSWORD: password, PEM: pem, PIN: "12345" });
      const basic = Buffer.from(`user:${password}`).toString("base64");
      const urlSafe = Buffer.from(`x${key}`).toString("base64url");
      expect(Buffer.from(password).toString("base64")).toMatch(/[+/]/);
      const lines = [
        line(`export API_KEY=${key}; echo done`),
        // Wrapped by the terminal in the middle of the value.
        line(`the key is ${key.slice(0, 20)}`),
        line(`${key.slice(20)} and more`),
        line(`Authorization: Basic ${basic}`),
        line(`token=${urlSafe}`),
        line(`db: ${password}`, LogStream.STDERR),
        line(pemMiddle),
        line("pin 12345 stays"),
      ];
      await append(w, a, {
        sequence: 1,
        lines: [...lines, { stream: LogStream.STDOUT, text: "Bash", kind: LogLineKind.TOOL_CALL, payloadJson: JSON.stringify({ command: `curl -H "x-key: ${key}"`, pw: password }) }],
      });
      const [b] = (await getLog(alice, sessionId)).batches;
      const got = b!.lines.map((l) => l.text);
      expect(got[0]).toBe("export API_KEY=***; echo done");
      expect(got[1]).toBe("the key is ***");
      expect(got[2]).toBe("*** and more");
      expect(got[3]).toMatch(/^Authorization: Basic .*\*\*\*/);
      expect(got[4]).toMatch(/^token=.*\*\*\*/);
      expect(got[5]).toBe("db: ***");
      expect(got[6]).toBe("***");
      expect(got[7]).toBe("pin 12345 stays");
      expect(JSON.parse(b!.lines[8]!.payloadJson)).toEqual({ command: 'curl -H "x-key: ***"', pw: "***" });

      // What was refused as a conflict or retried must not leak either: the retry compares masked lines.
      expect((await append(w, a, { sequence: 1, lines: [...lines, { stream: LogStream.STDOUT, text: "Bash", kind: LogLineKind.TOOL_CALL, payloadJson: JSON.stringify({ command: `curl -H "x-key: ${key}"`, pw: password }) }] })).storedSequence).toBe(1);

      const secrets = [key, password, pem, pemMiddle, basic, urlSafe, Buffer.from(key).toString("base64").slice(0, 40)];
      const found = (text: string) => secrets.filter((s) => text.includes(s));
      expect(found(JSON.stringify((await getLog(alice, sessionId)).batches))).toEqual([]);
      expect(found(await databaseText(t.database))).toEqual([]);
      expect(found(logLines.join("\n"))).toEqual([]);
      // The check can fail: the server's log did record this call.
      expect(logLines.some((l) => l.includes(sessionId))).toBe(true);
    },
    TEST_TIMEOUT,
  );

  it(
    "pages through GetLog; past the end is empty; another user's session and an unknown one are NotFound",
    async () => {
      const { alice, w, a, sessionId } = await claimed();
      await append(w, a, ...Array.from({ length: 7 }, (_, i) => batch(i + 1, `line ${i + 1}`)));
      const first = await getLog(alice, sessionId, 0, 3);
      expect(first.batches.map((b) => b.sequence)).toEqual([1, 2, 3]);
      expect(first.lastSequence).toBe(7);
      const second = await getLog(alice, sessionId, 3, 3);
      expect(second.batches.map((b) => b.sequence)).toEqual([4, 5, 6]);
      const third = await getLog(alice, sessionId, 6, 3);
      expect(third.batches.map((b) => [b.sequence, b.lines[0]!.text])).toEqual([[7, "line 7"]]);
      const past = await getLog(alice, sessionId, 100);
      expect(past.batches).toEqual([]);
      expect(past.lastSequence).toBe(7);
      expect((await getLog(alice, sessionId)).batches.length).toBe(7);
      await expectInvalid(getLog(alice, sessionId, 0, 5001), "max_batches");
      await expectInvalid(getLog(alice, sessionId, 0, -1), "max_batches");
      await expectInvalid(getLog(alice, "nope"), "session_id");
      const bob = await newUser();
      await expectCode(getLog(bob, sessionId), Code.NotFound);
      await expectCode(getLog(alice, UNKNOWN_ID), Code.NotFound);
      // A queued session (no worker yet) has an empty log, not ended.
      const task = await createTask(bob);
      const queued = (await bob.client(SessionService).getLog({ sessionId: (await sessionIdOf(bob, task.id))!, afterSequence: 0, maxBatches: 0 }));
      expect(queued).toMatchObject({ batches: [], lastSequence: 0, sessionEnded: false });
    },
    TEST_TIMEOUT,
  );

  async function sessionIdOf(user: User, taskId: string): Promise<string | undefined> {
    const { task } = await user.client(TaskService).getTask({ id: taskId });
    const unitTask = task?.task.case === "unitTask" ? task.task.value : undefined;
    return unitTask?.agentTasks.at(-1)?.sessions.at(-1)?.id;
  }
});

describe.runIf(runsOn("postgres"))("session logs with two replicas on one PostgreSQL database", () => {
  let database: TestDatabase;
  let a: TestServer;
  let b: TestServer;
  const logLines: string[] = [];

  beforeAll(async () => {
    database = await createTestDatabase("postgres");
    // Single-user mode on one data folder: both replicas read one secret key, as replicas given one FOREMAN_SECRET_KEY do.
    const env = { FOREMAN_STREAM_POLL_SECONDS: "3600", FOREMAN_HEALTH_CHECK_SECONDS: "3600" };
    [a, b] = await Promise.all([startTestServer("postgres", env, database, { logLines }), startTestServer("postgres", env, database, { logLines })]);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await database?.drop();
  });

  it(
    "masks secrets held by one replica in a batch appended through the other, and reads it back through either",
    async () => {
      const key = `sk-${randomBytes(16).toString("hex")}`;
      const { group } = await caller(a).groupOfOne();
      const { unitTask } = await caller(a).client(TaskService).createUnitTask({ repositoryGroupId: group.id, prompt: "Print the key" });
      await caller(a).client(SecretsService).sendSecrets({ taskId: unitTask!.id, secrets: { API_KEY: key }, ttlSeconds: 0 });
      const { secret } = await caller(a).registrationToken();
      const reg = await registerWorker(b, secret, { name: "replica worker" });
      const worker = clientWith(b, WorkerService, reg.workerToken);
      const { assignment } = await worker.getTask({ pollId: randomUUID(), waitSeconds: 0 });
      expect(assignment?.taskId).toBe(unitTask!.id);
      const sessionId = assignment!.lease!.sessionId;
      const lines = [line(`key=${key.slice(0, 10)}`), line(`${key.slice(10)}!`)];
      const res = await worker.appendLogs({ sessionId, leaseToken: assignment!.lease!.leaseToken, batches: [{ sequence: 1, lines }, { sequence: 2, lines: [line(key)] }] });
      expect(res.storedSequence).toBe(2);
      for (const via of [a, b]) {
        const log = await caller(via).client(SessionService).getLog({ sessionId, afterSequence: 0, maxBatches: 0 });
        expect(log.batches.map((x) => x.lines.map((l) => l.text))).toEqual([["key=***", "***!"], ["***"]]);
      }
      // B asked A for the values (A handed them over sealed), and kept them briefly: a second append asks no more.
      const handed = () => logLines.filter((l) => l.includes("task secrets handed to a replica, sealed")).length;
      const before = handed();
      expect(before).toBeGreaterThan(0);
      await worker.appendLogs({ sessionId, leaseToken: assignment!.lease!.leaseToken, batches: [{ sequence: 3, lines: [line(`again ${key}`)] }] });
      expect(handed()).toBe(before);
      const texts = JSON.stringify((await caller(b).client(SessionService).getLog({ sessionId, afterSequence: 0, maxBatches: 0 })).batches);
      expect(texts).toContain("again ***");
      expect(texts).not.toContain(key);
      expect(logLines.join("\n")).not.toContain(key);
      expect(await databaseText(database)).not.toContain(key);
    },
    TEST_TIMEOUT,
  );
});
