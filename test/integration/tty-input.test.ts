// TTY input on both databases: a worker raises its agent's question (CreateTtyInputRequest,
// fenced by the lease, idempotent by client_request_id), the user's clients list it
// (ListTtyInputRequests, oldest first) and answer it once (SubmitTtyInput), and the answer
// reaches the worker as a tty_input_answer command on its ReceiveCommands stream and in its
// next heartbeat. A pending request reads as cancelled once its session ends, and survives a
// server restart. The backstop reads (FOREMAN_STREAM_POLL_SECONDS) are an hour here, so a
// command that arrives on a stream was pushed, not found by a poll.
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { SessionService, TtyInputStatus, TtyInputType, type TtyInputRequest } from "../../gen/foreman/v1/session_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkerService, type Assignment, type WorkerCommand } from "../../gen/foreman/v1/worker_pb.js";
import { createTestDatabase, DIALECTS } from "../helpers/databases.js";
import { dispatchFixtures, expectLeaseLost, openCommands, type TestWorker } from "../helpers/dispatch.js";
import { signIn, type User } from "../helpers/fixtures.js";
import { clientWith, movableClock, multiUserEnv, startOidcProvider, type TestProvider } from "../helpers/oidc.js";
import { expectCode, expectError, expectInvalid, UNKNOWN_ID } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const TEST_TIMEOUT = 30_000;
const ENV = {
  FOREMAN_STREAM_POLL_SECONDS: "3600",
  FOREMAN_STREAM_KEEPALIVE_SECONDS: "300",
  FOREMAN_HEALTH_CHECK_SECONDS: "3600",
};

interface Question {
  prompt?: string;
  inputType?: TtyInputType;
  options?: string[];
  clientRequestId?: string;
}

/** The worker raises a question for the session of the assignment (a CONFIRM unless told). */
function raise(w: TestWorker, a: Assignment, q: Question = {}) {
  return w.client.createTtyInputRequest({
    sessionId: a.lease!.sessionId,
    leaseToken: a.lease!.leaseToken,
    prompt: "Overwrite README.md?",
    inputType: TtyInputType.CONFIRM,
    clientRequestId: randomUUID(),
    ...q,
  });
}

/** The request an answer was for, checked to be one. */
const requestOf = (res: { request?: TtyInputRequest }): TtyInputRequest => {
  expect(res.request).toBeDefined();
  return res.request!;
};

const ttyAnswer = (c: WorkerCommand) => (c.command.case === "ttyInputAnswer" ? { id: c.id, ...c.command.value } : undefined);

/** Expects FailedPrecondition whose ErrorInfo says the request's current status. */
async function expectNotPending(call: Promise<unknown>, status: "answered" | "cancelled", message: string | RegExp) {
  const error = await expectError(call, { code: Code.FailedPrecondition, message });
  expect(error.findDetails(ErrorInfoSchema)[0]!.metadata["current_status"]).toBe(status);
}

describe.each(DIALECTS)("TTY input on %s", (dialect) => {
  let provider: TestProvider;
  let t: TestServer;
  const clock = movableClock();
  const logLines: string[] = [];
  const fx = dispatchFixtures({ server: () => t, provider: () => provider, userPrefix: "tty", workerName: "tty worker" });
  const { newUser, newWorker, createTask, claim, report } = fx;

  beforeAll(async () => {
    provider = await startOidcProvider();
    t = await startTestServer(dialect, multiUserEnv(provider, ENV), undefined, { clock: clock.now, logLines });
  });

  afterAll(async () => {
    await t?.close();
    await provider?.close();
  });

  /** A user signed in twice (two clients, two logins), with a group to file tasks against. */
  async function userWithTwoClients(): Promise<[User, User]> {
    const name = `tty-two-${randomUUID().slice(0, 8)}`;
    const first = await signIn(t, provider, name);
    const { group } = await first.groupOfOne();
    fx.groups.set(first.id, group);
    const second = await signIn(t, provider, name);
    expect(second.id).toBe(first.id);
    expect(second.accessToken).not.toBe(first.accessToken);
    return [first, second];
  }

  /** A user's running task on a worker of theirs. */
  async function running(user: User): Promise<{ taskId: string; w: TestWorker; a: Assignment }> {
    const task = await createTask(user);
    const w = await newWorker(user);
    const a = await claim(w);
    await report(w, a, SessionState.RUNNING);
    return { taskId: task.id, w, a };
  }

  const sessionsOf = (user: User) => user.client(SessionService);

  it(
    "raises a question the user lists and answers from a second client; the answer reaches the worker's stream at once and its next heartbeat",
    async () => {
      const [laptop, phone] = await userWithTwoClients();
      const { taskId, w, a } = await running(laptop);
      const sessionId = a.lease!.sessionId;
      const stream = openCommands(w, TEST_TIMEOUT);
      try {
        await stream.live;
        const raised = requestOf(await raise(w, a, { prompt: "Overwrite README.md?\n(it has local changes)" }));
        expect(raised).toEqual(
          expect.objectContaining({
            sessionId,
            taskId,
            prompt: "Overwrite README.md?\n(it has local changes)",
            inputType: TtyInputType.CONFIRM,
            options: [],
            status: TtyInputStatus.PENDING,
            response: "",
          }),
        );
        expect(raised.answerTime).toBeUndefined();

        // The second client sees it by session, by task, and among the pending.
        const phoneSessions = sessionsOf(phone);
        for (const filter of [{ sessionId }, { taskId }, { sessionId, taskId }, { taskId, status: TtyInputStatus.PENDING }]) {
          expect((await phoneSessions.listTtyInputRequests(filter)).requests.map((r) => r.id), JSON.stringify(filter)).toEqual([raised.id]);
        }
        expect((await phoneSessions.listTtyInputRequests({ taskId, status: TtyInputStatus.ANSWERED })).requests).toEqual([]);
        // Nothing was sent to the worker before the answer.
        expect(stream.received).toEqual([]);

        const answered = requestOf(await phoneSessions.submitTtyInput({ requestId: raised.id, response: " Y " }));
        expect(answered).toEqual(expect.objectContaining({ id: raised.id, status: TtyInputStatus.ANSWERED, response: "yes" }));
        expect(answered.answerTime).toBeDefined();

        const [command] = await stream.until(1);
        const expected = { id: `tty:${raised.id}`, requestId: raised.id, sessionId, response: "yes" };
        expect(ttyAnswer(command!)).toEqual(expect.objectContaining(expected));

        const beat = await w.client.heartbeat({ leases: [{ sessionId, leaseToken: a.lease!.leaseToken }] });
        expect(beat.commands.map(ttyAnswer)).toEqual([expect.objectContaining(expected)]);
        expect(beat.lostSessionIds).toEqual([]);

        // The first client sees the answer too; the pending list is empty.
        expect((await sessionsOf(laptop).listTtyInputRequests({ sessionId, status: TtyInputStatus.ANSWERED })).requests).toEqual([answered]);
        expect((await sessionsOf(laptop).listTtyInputRequests({ sessionId, status: TtyInputStatus.PENDING })).requests).toEqual([]);

        // Answered once: a second answer, from either client, is refused and changes nothing.
        await expectNotPending(sessionsOf(laptop).submitTtyInput({ requestId: raised.id, response: "no" }), "answered", "already answered");
        await expectNotPending(phoneSessions.submitTtyInput({ requestId: raised.id, response: "yes" }), "answered", "already answered");
        expect((await phoneSessions.listTtyInputRequests({ sessionId })).requests).toEqual([answered]);

        // Acknowledged, it is gone from the next heartbeat.
        await w.client.acknowledgeCommands({ commandIds: [command!.id] });
        expect((await w.client.heartbeat({ leases: [{ sessionId, leaseToken: a.lease!.leaseToken }] })).commands).toEqual([]);
        expect(stream.received).toHaveLength(1);
      } finally {
        await stream.close();
      }
      // The answer is the user's: the logs give its length, not its text.
      const answerLines = logLines.filter((l) => l.includes('"tty input answered"'));
      expect(answerLines.length).toBeGreaterThan(0);
      expect(answerLines.join("\n")).not.toContain('"yes"');
    },
    TEST_TIMEOUT,
  );

  it(
    "is idempotent by client_request_id: a retry returns the same request; the id with another question is refused",
    async () => {
      const alice = await newUser();
      const { taskId, w, a } = await running(alice);
      const q = { prompt: "Which branch?", inputType: TtyInputType.CHOICE, options: ["main", "develop"], clientRequestId: "question-1" };
      const first = requestOf(await raise(w, a, q));
      const retried = await Promise.all([raise(w, a, q), raise(w, a, q), raise(w, a, { ...q, options: [" main", "develop "] })]);
      expect(retried.map(requestOf)).toEqual([first, first, first]);
      expect((await sessionsOf(alice).listTtyInputRequests({ taskId })).requests).toEqual([first]);

      await expectInvalid(raise(w, a, { ...q, prompt: "Which branch, really?" }), "client_request_id");
      await expectInvalid(raise(w, a, { ...q, options: ["main", "release"] }), "client_request_id");
      await expectInvalid(raise(w, a, { ...q, inputType: TtyInputType.TEXT, options: [] }), "client_request_id");

      // Another id is another question, listed after the first: oldest first.
      const second = requestOf(await raise(w, a, { ...q, clientRequestId: "question-2" }));
      expect(second.id).not.toBe(first.id);
      expect((await sessionsOf(alice).listTtyInputRequests({ sessionId: a.lease!.sessionId })).requests.map((r) => r.id)).toEqual([first.id, second.id]);
    },
    TEST_TIMEOUT,
  );

  it(
    "pages through a session's requests oldest first, with tokens bound to their filters",
    async () => {
      const alice = await newUser();
      const { taskId, w, a } = await running(alice);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(requestOf(await raise(w, a, { prompt: `Question ${i}?` })).id);
      const seen: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await sessionsOf(alice).listTtyInputRequests({ taskId, pageSize: 2, pageToken });
        expect(page.requests.length).toBeLessThanOrEqual(2);
        seen.push(...page.requests.map((r) => r.id));
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken !== "");
      expect(seen).toEqual(ids);
      expect(pages).toBe(3);
      const { nextPageToken } = await sessionsOf(alice).listTtyInputRequests({ taskId, pageSize: 2 });
      await expectInvalid(sessionsOf(alice).listTtyInputRequests({ taskId, status: TtyInputStatus.PENDING, pageSize: 2, pageToken: nextPageToken }), "page_token");
    },
    TEST_TIMEOUT,
  );

  it(
    "takes exactly one of many concurrent answers, and queues one command with the winning answer",
    async () => {
      const alice = await newUser();
      const { w, a } = await running(alice);
      const colours = Array.from({ length: 12 }, (_, i) => `colour ${i}`);
      const raised = requestOf(await raise(w, a, { prompt: "Pick a colour", inputType: TtyInputType.CHOICE, options: colours }));
      // Two clients of one user, each sending half the answers.
      const clients = [sessionsOf(alice), clientWith(t, SessionService, alice.accessToken, "connect-http1")];
      const results = await Promise.allSettled(colours.map((response, i) => clients[i % 2]!.submitTtyInput({ requestId: raised.id, response })));
      const won = results.flatMap((r) => (r.status === "fulfilled" ? [requestOf(r.value)] : []));
      expect(won).toHaveLength(1);
      for (const r of results) if (r.status === "rejected") await expectNotPending(Promise.reject(r.reason), "answered", "already answered");
      const winner = won[0]!.response;
      expect(colours).toContain(winner);
      const listed = (await sessionsOf(alice).listTtyInputRequests({ sessionId: a.lease!.sessionId })).requests;
      expect(listed.map((r) => [r.status, r.response])).toEqual([[TtyInputStatus.ANSWERED, winner]]);
      const { commands } = await w.client.heartbeat({ leases: [{ sessionId: a.lease!.sessionId, leaseToken: a.lease!.leaseToken }] });
      expect(commands.map(ttyAnswer)).toEqual([expect.objectContaining({ requestId: raised.id, response: winner })]);
    },
    TEST_TIMEOUT,
  );

  it(
    "checks a CONFIRM answer is yes or no (stored canonical), a CHOICE answer one of its options, a TEXT answer's size",
    async () => {
      const alice = await newUser();
      const { w, a } = await running(alice);
      const submit = (requestId: string, response: string) => sessionsOf(alice).submitTtyInput({ requestId, response });
      const spellings: [string, string][] = [
        ["yes", "yes"],
        ["Y", "yes"],
        ["TRUE", "yes"],
        ["No", "no"],
        ["n", "no"],
        [" false ", "no"],
      ];
      for (const [given, stored] of spellings) {
        const r = requestOf(await raise(w, a));
        await expectInvalid(submit(r.id, "maybe"), "response");
        await expectInvalid(submit(r.id, ""), "response");
        expect(requestOf(await submit(r.id, given)).response, given).toBe(stored);
      }

      const choice = requestOf(await raise(w, a, { prompt: "Which?", inputType: TtyInputType.CHOICE, options: ["red", "Blue"] }));
      expect(choice.options).toEqual(["red", "Blue"]);
      await expectInvalid(submit(choice.id, "green"), "response");
      await expectInvalid(submit(choice.id, "blue"), "response");
      await expectInvalid(submit(choice.id, "1"), "response");
      expect(requestOf(await submit(choice.id, " Blue ")).response).toBe("Blue");

      const text = requestOf(await raise(w, a, { prompt: "Commit message?", inputType: TtyInputType.TEXT }));
      await expectInvalid(submit(text.id, "x".repeat(4001)), "response");
      await expectInvalid(submit(text.id, "bell \u0007"), "response");
      expect((await sessionsOf(alice).listTtyInputRequests({ sessionId: a.lease!.sessionId, status: TtyInputStatus.PENDING })).requests.map((r) => r.id)).toEqual([
        text.id,
      ]);
      // Free text is kept as typed, lines and spaces included.
      expect(requestOf(await submit(text.id, "  Fix the test\n\nIt was flaky.")).response).toBe("  Fix the test\n\nIt was flaky.");
    },
    TEST_TIMEOUT,
  );

  it(
    "refuses a question that is not well formed: CHOICE options, options on TEXT or CONFIRM, the type, the prompt's size",
    async () => {
      const alice = await newUser();
      const { w, a } = await running(alice);
      const choice = (options: string[]) => raise(w, a, { inputType: TtyInputType.CHOICE, options });
      await expectInvalid(choice([]), "options");
      await expectInvalid(choice(["only"]), "options");
      await expectInvalid(
        choice(Array.from({ length: 65 }, (_, i) => `o${i}`)),
        "options",
      );
      await expectInvalid(choice(["same", "other", "same"]), "options[2]");
      await expectInvalid(choice(["same", " same "]), "options[1]");
      await expectInvalid(choice(["a", ""]), "options[1]");
      await expectInvalid(choice(["a", "b".repeat(201)]), "options[1]");
      await expectInvalid(choice(["a", "two\nlines"]), "options[1]");
      // The contract's bound on the list, before anything reads it.
      await expectInvalid(choice(Array.from({ length: 100 }, (_, i) => `o${i}`)), "options");
      expect(requestOf(await choice(Array.from({ length: 64 }, (_, i) => `o${i}`))).options).toHaveLength(64);

      await expectInvalid(raise(w, a, { inputType: TtyInputType.TEXT, options: ["a", "b"] }), "options");
      await expectInvalid(raise(w, a, { inputType: TtyInputType.CONFIRM, options: ["yes", "no"] }), "options");
      await expectInvalid(raise(w, a, { inputType: TtyInputType.UNSPECIFIED }), "input_type");
      await expectInvalid(raise(w, a, { inputType: 99 as TtyInputType }), "input_type");
      await expectInvalid(raise(w, a, { prompt: "" }), "prompt");
      await expectInvalid(raise(w, a, { prompt: "  \n " }), "prompt");
      await expectInvalid(raise(w, a, { prompt: "x".repeat(4001) }), "prompt");
      expect(requestOf(await raise(w, a, { prompt: "x".repeat(4000) })).prompt).toHaveLength(4000);
      await expectInvalid(raise(w, a, { clientRequestId: "" }), "client_request_id");
      await expectInvalid(raise(w, a, { clientRequestId: "c".repeat(129) }), "client_request_id");
      await expectInvalid(
        w.client.createTtyInputRequest({ sessionId: "", leaseToken: "", prompt: "", inputType: TtyInputType.UNSPECIFIED, clientRequestId: "" }),
        "session_id",
        "lease_token",
        "prompt",
        "input_type",
        "client_request_id",
      );
      await expectInvalid(raise(w, { lease: { ...a.lease!, sessionId: "not-a-uuid" } } as Assignment), "session_id");
      await expectCode(raise(w, { lease: { ...a.lease!, sessionId: UNKNOWN_ID } } as Assignment), Code.NotFound);
      // None of the refused questions was stored.
      const stored = (await sessionsOf(alice).listTtyInputRequests({ sessionId: a.lease!.sessionId })).requests;
      expect(stored.map((r) => r.prompt.length)).toEqual(["Overwrite README.md?".length, 4000]);
    },
    TEST_TIMEOUT,
  );

  it(
    "reads a pending request as cancelled once its session ends (SUCCEEDED, StopSession, the task cancelled); it takes no answer",
    async () => {
      const alice = await newUser();
      const ends: [string, (run: { taskId: string; w: TestWorker; a: Assignment }) => Promise<unknown>][] = [
        ["succeeded", ({ w, a }) => report(w, a, SessionState.SUCCEEDED)],
        ["stopped", ({ a }) => sessionsOf(alice).stopSession({ sessionId: a.lease!.sessionId, reason: "enough" })],
        ["task cancelled", ({ taskId }) => alice.client(TaskService).updateTaskStatus({ id: taskId, status: TaskStatus.CANCELLED })],
      ];
      for (const [how, end] of ends) {
        const run = await running(alice);
        const { taskId, w, a } = run;
        const pending = requestOf(await raise(w, a, { prompt: `Before ${how}?` }));
        const answeredFirst = requestOf(await raise(w, a, { prompt: `Answered before ${how}?` }));
        await sessionsOf(alice).submitTtyInput({ requestId: answeredFirst.id, response: "yes" });
        await end(run);

        const all = (await sessionsOf(alice).listTtyInputRequests({ taskId })).requests;
        expect(all.map((r) => [r.id, r.status]), how).toEqual([
          [pending.id, TtyInputStatus.CANCELLED],
          [answeredFirst.id, TtyInputStatus.ANSWERED],
        ]);
        const byStatus = async (status: TtyInputStatus) => (await sessionsOf(alice).listTtyInputRequests({ taskId, status })).requests.map((r) => r.id);
        expect(await byStatus(TtyInputStatus.PENDING), how).toEqual([]);
        expect(await byStatus(TtyInputStatus.CANCELLED), how).toEqual([pending.id]);
        expect(await byStatus(TtyInputStatus.ANSWERED), how).toEqual([answeredFirst.id]);
        await expectNotPending(sessionsOf(alice).submitTtyInput({ requestId: pending.id, response: "yes" }), "cancelled", "the session ended");
        // The worker may raise nothing more on it.
        await expectLeaseLost(raise(w, a));
      }
    },
    TEST_TIMEOUT,
  );

  it(
    "refuses a stale lease: a made-up token, another worker's call, an expired lease",
    async () => {
      const alice = await newUser();
      const { w, a } = await running(alice);
      await expectLeaseLost(raise(w, { lease: { ...a.lease!, leaseToken: "fls_made-up" } } as Assignment), "not this session's lease");
      await expectLeaseLost(raise(w, { lease: { ...a.lease!, leaseToken: "x".repeat(5000) } } as Assignment), "not this session's lease");
      const other = await newWorker(alice);
      await expectLeaseLost(raise(other, a), "not this session's lease");
      // Past the lease's 30 s without a heartbeat.
      clock.advance(31);
      await expectLeaseLost(raise(w, a), "expired");
      expect((await sessionsOf(alice).listTtyInputRequests({ sessionId: a.lease!.sessionId })).requests).toEqual([]);
    },
    TEST_TIMEOUT,
  );

  it(
    "keeps another user's session, task and requests from them (NotFound), and lists only the caller's own",
    async () => {
      const alice = await newUser();
      const bob = await newUser();
      const { taskId, w, a } = await running(alice);
      const sessionId = a.lease!.sessionId;
      const raised = requestOf(await raise(w, a));
      await expectCode(sessionsOf(bob).listTtyInputRequests({ sessionId }), Code.NotFound);
      await expectCode(sessionsOf(bob).listTtyInputRequests({ taskId }), Code.NotFound);
      await expectCode(sessionsOf(bob).listTtyInputRequests({ sessionId, taskId }), Code.NotFound);
      await expectCode(sessionsOf(bob).submitTtyInput({ requestId: raised.id, response: "yes" }), Code.NotFound);
      // Bob's own task with alice's session: nothing of alice's.
      const bobs = await running(bob);
      await expectCode(sessionsOf(bob).listTtyInputRequests({ sessionId, taskId: bobs.taskId }), Code.NotFound);
      expect((await sessionsOf(bob).listTtyInputRequests({ taskId: bobs.taskId })).requests).toEqual([]);
      // Bob's worker cannot raise a question on alice's session.
      await expectCode(bobs.w.client.createTtyInputRequest({ sessionId, leaseToken: a.lease!.leaseToken, prompt: "?", inputType: TtyInputType.TEXT, clientRequestId: "b" }), Code.NotFound);
      // Still pending for alice, unanswered.
      expect((await sessionsOf(alice).listTtyInputRequests({ sessionId })).requests.map((r) => r.status)).toEqual([TtyInputStatus.PENDING]);
    },
    TEST_TIMEOUT,
  );

  it(
    "refuses bad list and answer requests: no ids, ids that are not UUIDs, unknown ids, an unknown status",
    async () => {
      const alice = await newUser();
      const s = sessionsOf(alice);
      await expectInvalid(s.listTtyInputRequests({}), "session_id");
      await expectInvalid(s.listTtyInputRequests({ sessionId: "  " }), "session_id");
      await expectInvalid(s.listTtyInputRequests({ sessionId: "abc", taskId: "def" }), "session_id", "task_id");
      await expectInvalid(s.listTtyInputRequests({ taskId: UNKNOWN_ID, status: 7 as TtyInputStatus }), "status");
      await expectInvalid(s.listTtyInputRequests({ taskId: UNKNOWN_ID, pageSize: -1 }), "page_size");
      await expectCode(s.listTtyInputRequests({ sessionId: UNKNOWN_ID }), Code.NotFound);
      await expectCode(s.listTtyInputRequests({ taskId: UNKNOWN_ID }), Code.NotFound);
      await expectInvalid(s.submitTtyInput({ requestId: "", response: "yes" }), "request_id");
      await expectInvalid(s.submitTtyInput({ requestId: "nope", response: "yes" }), "request_id");
      await expectInvalid(s.submitTtyInput({ requestId: UNKNOWN_ID, response: "x".repeat(4001) }), "response");
      await expectCode(s.submitTtyInput({ requestId: UNKNOWN_ID, response: "yes" }), Code.NotFound);
    },
    TEST_TIMEOUT,
  );
});

describe.each(DIALECTS)("TTY input across a server restart on %s", (dialect) => {
  let provider: TestProvider;

  beforeAll(async () => {
    provider = await startOidcProvider();
  });

  afterAll(async () => {
    await provider?.close();
  });

  it(
    "keeps a pending request through a restart: answered on the new server, the answer reaches the worker's stream there",
    async () => {
      const database = await createTestDatabase(dialect);
      let t: TestServer | undefined;
      try {
        t = await startTestServer(dialect, multiUserEnv(provider, ENV), database);
        const fx = dispatchFixtures({ server: () => t!, provider: () => provider, userPrefix: "tty-restart", workerName: "tty worker" });
        const alice = await fx.newUser();
        await fx.createTask(alice);
        const w = await fx.newWorker(alice);
        const a = await fx.claim(w);
        await fx.report(w, a, SessionState.RUNNING);
        const raised = requestOf(await raise(w, a, { prompt: "Deploy?", clientRequestId: "deploy-1" }));
        await t.close();
        t = undefined;

        // The same database, the same settings: the worker's credential, the lease and alice's login hold.
        t = await startTestServer(dialect, multiUserEnv(provider, ENV), database);
        const sessions = clientWith(t, SessionService, alice.accessToken);
        const worker: TestWorker = { ...w, client: clientWith(t, WorkerService, w.token) };
        const listed = (await sessions.listTtyInputRequests({ sessionId: a.lease!.sessionId, status: TtyInputStatus.PENDING })).requests;
        expect(listed).toEqual([raised]);
        const stream = openCommands(worker, TEST_TIMEOUT);
        try {
          await stream.live;
          await sessions.submitTtyInput({ requestId: raised.id, response: "no" });
          const [command] = await stream.until(1);
          expect(ttyAnswer(command!)).toEqual(expect.objectContaining({ id: `tty:${raised.id}`, requestId: raised.id, sessionId: a.lease!.sessionId, response: "no" }));
        } finally {
          await stream.close();
        }
        // A raise retried after the restart is the same request, now answered.
        const retried = requestOf(await raise(worker, a, { prompt: "Deploy?", clientRequestId: "deploy-1" }));
        expect(retried).toEqual(expect.objectContaining({ id: raised.id, status: TtyInputStatus.ANSWERED, response: "no" }));
      } finally {
        await t?.close();
        await database.drop();
      }
    },
    60_000,
  );
});
