// The foreman command's daily verbs as a real process against the real server in process, on
// both databases, with a real git remote and a scripted worker speaking WorkerService (claims,
// log lines, a question, commits pushed to the task branch, reports): workspaces and
// repositories; tasks created from an argument, a file and stdin, listed and shown; logs of an
// ended session and followed live, across a dropped connection and onto a task's next session;
// answering a question; diffs; the review verbs; task create --follow's exit codes; errors and
// usage mistakes; every verb's help, which loads no server code.
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { LogLineKind, LogStream, TtyInputType } from "../../gen/foreman/v1/session_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { killCliProcesses, runCli, runOnTerminal, startCli, type Exited } from "../helpers/cli-process.js";
import { startCuttableProxy, type CuttableProxy } from "../helpers/cli-proxy.js";
import { scriptedWorker, type ScriptedWorker } from "../helpers/cli-worker.js";
import { DIALECTS } from "../helpers/databases.js";
import { unit } from "../helpers/dispatch.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { UNKNOWN_ID } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const LONG = { timeout: 240_000 };

let home: string;

beforeAll(async () => {
  // No stored login of the machine's user: every run gets an empty home of its own.
  home = await mkdtemp(path.join(tmpdir(), "foreman-cli-verbs-"));
});

afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

afterEach(() => killCliProcesses());

const baseEnv = () => ({ HOME: home, XDG_CONFIG_HOME: path.join(home, "config") });

/** stdout's lines, without the last (empty) one. */
const lines = (out: string) => out.replace(/\n$/, "").split("\n");

function expectOk(e: Exited): string {
  expect(e.stderr, "stderr").toBe("");
  expect(e.code, `exit code (stderr: ${e.stderr})`).toBe(0);
  return e.stdout;
}

describe.each(DIALECTS)("foreman's daily verbs on %s", (dialect) => {
  let t: TestServer;
  let c: Caller;
  let remote: GitRemote;
  let worker: ScriptedWorker;
  let proxy: CuttableProxy;
  let n = 0;

  beforeAll(async () => {
    remote = await startGitRemote();
    t = await startTestServer(dialect, { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_REMOTE_TIMEOUT_SECONDS: "10" });
    c = caller(t);
    worker = await scriptedWorker(c);
    proxy = await startCuttableProxy(t.url);
  }, 60_000);

  afterAll(async () => {
    await worker?.close();
    await proxy?.close();
    await t?.close();
    await remote?.close();
  });

  const env = () => ({ ...baseEnv(), FOREMAN_URL: t.url });
  const cli = (args: string[], input?: string) => runCli(args, env(), input === undefined ? {} : { input });
  const ok = async (args: string[], input?: string) => expectOk(await cli(args, input));
  const jsonOf = async (args: string[], input?: string) => JSON.parse(await ok(args, input)) as Record<string, unknown>;
  const task = async (id: string) => unit((await c.client(TaskService).getTask({ id })).task);

  /** A new workspace with one repository (named app) on the remote, through the CLI. */
  async function project(files: Record<string, string> = { "README.md": "# app\n" }) {
    const ws = `ws-${dialect}-${++n}`;
    const url = await remote.createRepository(`${ws}-app`, { defaultBranch: "main", files });
    await ok(["workspace", "add", ws]);
    await ok(["repository", "add", "--workspace", ws, url, "--name", "app"]);
    return { ws, url };
  }

  /** Files a COMMAND task (which the scripted worker serves) and returns its id. */
  async function commandTask(ws: string, prompt = "Add a health check"): Promise<string> {
    const out = await ok(["task", "create", "--workspace", ws, "--agent", "command", prompt]);
    return /^Created task (\S+):/.exec(out)![1]!;
  }

  it("adds and lists workspaces and repositories, as text and as JSON; the only workspace needs no naming", LONG, async () => {
    const url = await remote.createRepository(`first-${dialect}`, { defaultBranch: "main" });
    const added = await ok(["workspace", "add", "alpha", "--description", "the first"]);
    const alphaId = /^Created workspace alpha \(([0-9a-f-]{36})\)\.$/m.exec(added)![1];
    // The only workspace: no --workspace needed.
    const repo = await jsonOf(["repository", "add", url, "--name", "first", "--json"]);
    expect(repo).toMatchObject({ name: "first", defaultBranch: "main", remoteUrl: url, workspaceId: alphaId });
    expect(lines(await ok(["repository", "list"]))).toEqual([
      expect.stringMatching(/^ID {36}NAME {3}DEFAULT BRANCH {2}REMOTE$/),
      `${String(repo.id)}  first  main            ${url}`,
    ]);

    await ok(["workspace", "add", "beta"]);
    const table = lines(await ok(["workspace", "list"]));
    expect(table).toHaveLength(3);
    expect(table[0]).toMatch(/^ID {36}NAME {3}CREATED {15}DESCRIPTION$/);
    expect(table[1]).toMatch(new RegExp(`^${alphaId}  alpha  \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ  the first$`));
    expect(table[2]).toMatch(/^[0-9a-f-]{36} {2}beta {3}\S+Z$/);
    const listed = await jsonOf(["workspace", "list", "--json"]);
    expect(listed.workspaces).toEqual([
      expect.objectContaining({ id: alphaId, name: "alpha", description: "the first" }),
      expect.objectContaining({ name: "beta" }),
    ]);

    // Two workspaces: which one is now the user's to say.
    const which = await cli(["repository", "list"]);
    expect(which.code).toBe(2);
    expect(lines(which.stderr)[0]).toBe("foreman repository list: you have 2 workspaces; name one with --workspace (foreman workspace list shows them)");
    expect(await ok(["repository", "list", "--workspace", "beta"])).toBe("No repositories in workspace beta yet; add one with foreman repository add --workspace beta URL.\n");
    expect(await jsonOf(["repository", "list", "--workspace", alphaId!, "--json"])).toEqual({ repositories: [expect.objectContaining({ id: repo.id })] });

    const unknown = await cli(["repository", "list", "--workspace", "gamma"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe("foreman repository list: no workspace named 'gamma'; foreman workspace list shows yours\n");
    const taken = await cli(["workspace", "add", "alpha"]);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/^foreman workspace add: AlreadyExists: .*alpha/);
  });

  it("creates tasks from an argument, a file and stdin, lists them newest first, shows one, and cancels them", LONG, async () => {
    const { ws } = await project();
    const fromArg = await jsonOf(["task", "create", "--workspace", ws, "--repository", "app", "--title", "From an argument", "Fix the flaky test", "--json"]);
    expect(fromArg).toMatchObject({ title: "From an argument", prompt: "Fix the flaky test", status: "TASK_STATUS_IN_PROGRESS", agentType: "AGENT_TYPE_CLAUDE_CODE" });

    const file = path.join(home, `prompt-${dialect}.md`);
    await writeFile(file, "Rename the module\n\nKeep the old name as an alias.\n");
    const fromFile = await jsonOf(["task", "create", "--workspace", ws, "--prompt-file", file, "--model", "opus", "--json"]);
    expect(fromFile).toMatchObject({ title: "Rename the module", agentModel: "opus", repositoryGroupId: fromArg.repositoryGroupId });
    expect(String(fromFile.prompt).trim()).toBe((await readFile(file, "utf8")).trim());

    const fromDash = await jsonOf(["task", "create", "--workspace", ws, "-", "--agent", "codex", "--json"], "Written on stdin\n");
    expect(fromDash).toMatchObject({ title: "Written on stdin", agentType: "AGENT_TYPE_CODEX" });
    const piped = await jsonOf(["task", "create", "--workspace", ws, "--json"], "Piped with no argument");
    expect(piped).toMatchObject({ prompt: "Piped with no argument" });

    const ids = [piped.id, fromDash.id, fromFile.id, fromArg.id];
    const table = lines(await ok(["task", "list", "--workspace", ws]));
    expect(table[0]).toMatch(/^ID {36}STATUS {7}RUN {5}AGENT {8}CREATED {15}TITLE$/);
    expect(table.slice(1).map((l) => l.split(" ")[0])).toEqual(ids);
    expect(table[4]).toMatch(/^\S+ {2}in_progress {2}queued {2}claude-code {2}\S+Z {2}From an argument$/);

    expect(((await jsonOf(["task", "list", "--workspace", ws, "--status", "in_progress,in_review", "--json"])).tasks as unknown[]).length).toBe(4);
    expect(await ok(["task", "list", "--workspace", ws, "--status", "in_review"])).toBe("No tasks; create one with foreman task create 'What to do'.\n");

    const shown = await ok(["task", "show", String(fromArg.id)]);
    expect(shown).toContain(`task       ${String(fromArg.id)} (unit)\n`);
    expect(shown).toContain("title      From an argument\n");
    expect(shown).toContain("status     in_progress\n");
    expect(shown).toMatch(/^run {8}queued \(no worker runs claude_code\)$/m);
    expect(shown).toMatch(/^1 {4}\S{36} {2}\S{36} {2}1 {8}queued/m);
    expect(shown).toContain(`Follow it: foreman logs -f ${String(fromArg.id)}`);
    expect(await jsonOf(["task", "show", String(fromArg.id), "--json"])).toMatchObject({ unitTask: { id: fromArg.id } });

    for (const id of ids) {
      expect(await ok(["cancel", String(id)])).toBe(`Task ${String(id)} is cancelled.\n`);
      expect((await task(String(id))).status).toBe(TaskStatus.CANCELLED);
    }
  });

  it("follows a task's log live, answers its question, shows its diff, and moves it through review", LONG, async () => {
    const { ws } = await project({ "README.md": "# app\n", "src/app.ts": "export const x = 1;\n" });
    const id = await commandTask(ws);
    const follow = startCli(["logs", "-f", id], env());
    const run = await worker.claim();
    expect(run.assignment.taskId).toBe(id);
    await run.append([
      "starting",
      { kind: LogLineKind.ASSISTANT_MESSAGE, text: "I will add a health check." },
      { kind: LogLineKind.TOOL_CALL, text: "Bash: ls src", payloadJson: '{"name":"Bash"}' },
      { kind: LogLineKind.TOOL_RESULT, text: "app.ts" },
    ]);
    await run.append([{ stream: LogStream.SYSTEM, text: "workspace ready" }, { kind: LogLineKind.USAGE, text: "tokens: 10 in, 5 out" }]);
    const question = await run.ask("Add a test too?", TtyInputType.CONFIRM);
    await follow.waitFor(`  answer it: foreman answer ${question.id} yes\n`);

    // The task's one pending question, answered by the task's id.
    expect(await ok(["answer", id, "yes"])).toBe(`Answered ${question.id}: yes\n`);
    expect(await run.answerTo(question.id)).toBe("yes");
    // A question by its own id, the answer piped in.
    const which = await run.ask("Which test runner?");
    expect(await ok(["answer", which.id], "vitest, as the rest\n")).toBe(`Answered ${which.id}: vitest, as the rest\n`);
    expect(await run.answerTo(which.id)).toBe("vitest, as the rest");
    await run.commit({ "src/health.ts": "export const ok = true;\n" }, "Add a health check");
    await run.append(["done"]);
    await run.report(SessionState.SUCCEEDED);

    const followed = await follow.exited;
    expect(followed.code).toBe(0);
    const logLines = ["starting", "I will add a health check.", "→ Bash: ls src", "← app.ts", "[system] workspace ready", "tokens: 10 in, 5 out", "done"];
    const out = lines(followed.stdout);
    expect(out.filter((l) => !l.startsWith("?") && !l.startsWith("  answer it"))).toEqual(logLines);
    // Raised, then answered (where among the lines depends on when the stream heard of each).
    const asked = out.indexOf("? Add a test too? [yes/no]");
    expect(asked).toBeGreaterThanOrEqual(0);
    expect(out.indexOf("? Add a test too? — answered: yes")).toBeGreaterThan(asked);
    expect(followed.stderr).toContain(`task ${id} is in_review`);

    // The ended session's log: every line once, in order; as JSON lines too.
    expect(lines(await ok(["logs", id]))).toEqual(logLines);
    const asJson = lines(await ok(["logs", id, "--json"])).map((l) => JSON.parse(l) as { sessionId: string; sequence: number; line: { text: string } });
    expect(asJson.map((j) => j.line.text)).toEqual(["starting", "I will add a health check.", "Bash: ls src", "app.ts", "workspace ready", "tokens: 10 in, 5 out", "done"]);
    expect(asJson.map((j) => j.sequence)).toEqual([1, 1, 1, 1, 2, 2, 3]);
    expect(new Set(asJson.map((j) => j.sessionId))).toEqual(new Set([run.sessionId]));
    // The session's id works as well as the task's.
    expect(lines(await ok(["logs", run.sessionId]))).toEqual(logLines);
    // Following a task whose run has ended prints its log and ends at once.
    const again = await cli(["logs", "-f", id]);
    expect(again.code).toBe(0);
    expect(lines(again.stdout).filter((l) => !l.startsWith("?") && !l.startsWith("  answer it"))).toEqual(logLines);

    const diff = await ok(["diff", id]);
    expect(diff).toContain("+++ b/src/health.ts\n");
    expect(diff).toContain("+export const ok = true;\n");
    expect(lines(await ok(["diff", id, "--stat"]))).toEqual(["STATUS  FILE           LINES", "added   src/health.ts  +1 -0", "1 file changed, 1 insertion(+), 0 deletions(-)"]);
    const stat = await jsonOf(["diff", id, "--stat", "--json"]);
    expect(stat.repositories).toEqual([expect.objectContaining({ name: "app", files: [expect.objectContaining({ path: "src/health.ts", additions: 1 })] })]);
    expect((stat.repositories as Record<string, unknown>[])[0]).not.toHaveProperty("unifiedDiff");

    // Changes asked for: a second run, which fails; a retry, which succeeds; then approval.
    const noFeedback = await cli(["request-changes", id]);
    expect(noFeedback.code).toBe(2);
    expect(lines(noFeedback.stderr)[0]).toBe("foreman request-changes: --feedback TEXT is required: what the agent should change");
    expect(lines(await ok(["request-changes", id, "--feedback", "Also export a version"]))[0]).toBe(`Task ${id} is in_progress.`);
    const second = await worker.claim();
    expect(second.assignment.prompt).toContain("Also export a version");
    await second.report(SessionState.FAILED, { errorMessage: "tests failed", exitCode: 3 });
    expect((await task(id)).status).toBe(TaskStatus.FAILED);
    expect(lines(await ok(["diff", id, "--run", "1", "--stat"]))[1]).toBe("added   src/health.ts  +1 -0");

    expect(lines(await ok(["retry", id]))[0]).toBe(`Task ${id} is in_progress.`);
    const third = await worker.claim();
    await third.append(["third run"]);
    await third.report(SessionState.SUCCEEDED);
    expect((await task(id)).status).toBe(TaskStatus.IN_REVIEW);
    // Every session of the task, in order.
    const all = await cli(["logs", id]);
    expect(lines(all.stdout)).toEqual([...logLines, "third run"]);
    expect(all.stderr.match(/── session /g)).toHaveLength(3);

    expect(await ok(["approve", id])).toBe(`Task ${id} is approved.\n`);
    const branch = (await task(id)).branchName;
    expect(Object.keys(await remote.refs(`${ws}-app`))).toContain(`refs/heads/${branch}`);

    // A second task, rejected with a reason.
    const other = await commandTask(ws, "Another change");
    const r = await worker.claim();
    await r.report(SessionState.SUCCEEDED);
    expect(await ok(["reject", other, "--message", "Not needed"])).toBe(`Task ${other} is rejected.\n`);
    const rejected = await task(other);
    expect(rejected.status).toBe(TaskStatus.REJECTED);
    expect(rejected.statusReason).toBe("Not needed");
    const refused = await cli(["approve", other]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^foreman approve: FailedPrecondition: .*rejected/);
  });

  it("resumes a followed session after a dropped connection with every line exactly once", LONG, async () => {
    const { ws } = await project();
    await commandTask(ws);
    const run = await worker.claim();
    const follow = startCli(["logs", "-f", run.sessionId], { ...baseEnv(), FOREMAN_URL: proxy.url });
    await run.append(["line 1", "line 2"]);
    await run.append(["line 3"]);
    await follow.waitFor("line 3\n");
    const before = proxy.connections;
    proxy.cut();
    await run.append(["line 4"]);
    await run.append(["line 5", "line 6"]);
    await follow.waitFor("line 6\n");
    expect(proxy.connections).toBeGreaterThan(before);
    await run.append(["line 7"]);
    await run.report(SessionState.SUCCEEDED);
    const exited = await follow.exited;
    expect(exited.code).toBe(0);
    expect(lines(exited.stdout)).toEqual(["line 1", "line 2", "line 3", "line 4", "line 5", "line 6", "line 7"]);
    expect(exited.stderr).toMatch(/connection to http:\/\/127\.0\.0\.1:\d+ lost .*; reconnecting, resuming after batch 2/);
    expect(exited.stderr).toContain(`session ${run.sessionId} succeeded`);
  });

  it("follows a task onto its next session when its worker goes, and as JSON lines", LONG, async () => {
    const { ws } = await project();
    const id = await commandTask(ws);
    const first = await scriptedWorker(c);
    const follow = startCli(["logs", "-f", id, "--json"], env());
    const run = await first.claim();
    await run.append(["first attempt"]);
    await follow.waitFor("first attempt");
    // Unregistering requeues the run as its next attempt, a new session.
    await first.unregister();
    await first.close();
    const next = await worker.claim();
    expect(next.assignment.taskId).toBe(id);
    expect(next.sessionId).not.toBe(run.sessionId);
    await next.append(["second attempt"]);
    await next.report(SessionState.SUCCEEDED);
    const exited = await follow.exited;
    expect(exited.code).toBe(0);
    const events = lines(exited.stdout).map((l) => JSON.parse(l) as Record<string, { text?: string; state?: string }>);
    expect(events).toEqual([
      { sessionId: run.sessionId, sequence: 1, line: expect.objectContaining({ text: "first attempt" }) },
      { sessionId: run.sessionId, ended: expect.objectContaining({ state: "SESSION_STATE_LOST" }) },
      { sessionId: next.sessionId, sequence: 1, line: expect.objectContaining({ text: "second attempt" }) },
      { sessionId: next.sessionId, ended: expect.objectContaining({ state: "SESSION_STATE_SUCCEEDED" }) },
    ]);
  });

  it("keeps following a task whose run was cancelled by its worker until the task moves on", LONG, async () => {
    const { ws } = await project();
    const id = await commandTask(ws);
    const follow = startCli(["logs", "-f", id], env());
    const run = await worker.claim();
    await run.append(["partial"]);
    await follow.waitFor("partial\n");
    // The worker's CANCELLED leaves the task in progress with nothing running: not the end.
    await run.report(SessionState.CANCELLED);
    expect((await task(id)).status).toBe(TaskStatus.IN_PROGRESS);
    expect(await ok(["cancel", id])).toBe(`Task ${id} is cancelled.\n`);
    const exited = await follow.exited;
    expect(exited.code, exited.stderr).toBe(1);
    expect(lines(exited.stdout)).toEqual(["partial"]);
    expect(exited.stderr).toContain(`task ${id} is cancelled`);
  });

  it("task create --follow exits 0 when the run succeeds, 1 when it fails, 130 when interrupted", LONG, async () => {
    const { ws } = await project();
    const succeeding = startCli(["task", "create", "--workspace", ws, "--agent", "command", "--follow", "Say hello"], env());
    const good = await worker.claim();
    await good.append(["hello"]);
    await good.report(SessionState.SUCCEEDED);
    const succeeded = await succeeding.exited;
    expect(succeeded.code).toBe(0);
    expect(lines(succeeded.stdout)).toEqual([
      expect.stringMatching(/^Created task \S+: Say hello$/),
      expect.stringMatching(/^ {2}agent command, branch foreman\/say-hello-[0-9a-f]{8}$/),
      "hello",
    ]);

    const failing = startCli(["task", "create", "--workspace", ws, "--agent", "command", "--follow", "Fail"], env());
    const bad = await worker.claim();
    await bad.append(["trying"]);
    await bad.report(SessionState.FAILED, { errorMessage: "the command exited 2", exitCode: 2 });
    const failed = await failing.exited;
    expect(failed.code).toBe(1);
    expect(failed.stdout).toContain("trying\n");
    expect(failed.stderr).toMatch(/task \S+ is failed: the command exited 2/);

    const interrupted = startCli(["task", "create", "--workspace", ws, "--agent", "command", "--follow", "Wait"], env());
    const held = await worker.claim();
    await held.append(["working"]);
    await interrupted.waitFor("working\n");
    interrupted.child.kill("SIGINT");
    expect((await interrupted.exited).code).toBe(130);
    await held.report(SessionState.SUCCEEDED);
  });

  it.runIf(existsSync("/usr/bin/script") && dialect === DIALECTS[0])("colours its tables on a terminal only, and never with NO_COLOR", LONG, async () => {
    await ok(["workspace", "add", `colour-${dialect}`]);
    const onTerminal = async (more: Record<string, string>) => (await runOnTerminal(["workspace", "list"], { ...env(), ...more })).stdout;
    expect(await onTerminal({})).toContain("\x1b[1mID ");
    expect(await onTerminal({ NO_COLOR: "1" })).not.toContain("\x1b[");
    expect(await ok(["workspace", "list"])).not.toContain("\x1b[");
  });

  it("says what to do about an unknown task or question, and exits 1", LONG, async () => {
    for (const [args, message] of [
      [["task", "show", UNKNOWN_ID], `foreman task show: no task ${UNKNOWN_ID}; foreman task list shows yours`],
      [["diff", UNKNOWN_ID], `foreman diff: no task ${UNKNOWN_ID}; foreman task list shows yours`],
      [["approve", UNKNOWN_ID], `foreman approve: no task ${UNKNOWN_ID}; foreman task list shows yours`],
      [["logs", UNKNOWN_ID], `foreman logs: no task or session ${UNKNOWN_ID}; foreman task list shows your tasks`],
      [["logs", "-f", UNKNOWN_ID], `foreman logs: no task or session ${UNKNOWN_ID}; foreman task list shows your tasks`],
      [["answer", UNKNOWN_ID, "yes"], `foreman answer: no question or task ${UNKNOWN_ID}; foreman task show TASK_ID lists a task's questions`],
    ] as [string[], string][]) {
      const e = await cli(args);
      expect(e.code, args.join(" ")).toBe(1);
      expect(e.stderr).toBe(`${message}\n`);
      expect(e.stdout).toBe("");
    }
  });
});

describe("foreman's daily verbs without a server", () => {
  const nowhere = () => ({ ...baseEnv(), FOREMAN_URL: "http://127.0.0.1:9" });

  it("say in one line that the server cannot be reached, and exit 1", LONG, async () => {
    for (const args of [["task", "list"], ["logs", "-f", UNKNOWN_ID], ["workspace", "list", "--json"]]) {
      const e = await runCli(args, nowhere());
      expect(e.code, args.join(" ")).toBe(1);
      expect(lines(e.stderr)).toEqual([expect.stringMatching(/^foreman \S+( \S+)?: cannot reach the server at http:\/\/127\.0\.0\.1:9 \(connect ECONNREFUSED 127\.0\.0\.1:9\); is it running\?/)]);
    }
    const other = await runCli(["task", "list", "--server", "http://127.0.0.1:10"], nowhere());
    expect(other.stderr).toContain("cannot reach the server at http://127.0.0.1:10 ");
  });

  const mistakes: [string[], string][] = [
    [["task"], "foreman task: a command is required"],
    [["task", "frobnicate"], "foreman task: unknown command 'frobnicate'"],
    [["task", "list", "--bogus"], "foreman task list: unknown option '--bogus'"],
    [["task", "list", "--status", "sleeping"], "foreman task list: --status: no status 'sleeping' (in_progress, in_review, approved, done, rejected, failed, cancelled, ...)"],
    [["task", "create", "--agent", "hal", "x"], "foreman task create: --agent must be command, claude-code or codex, got 'hal'"],
    [["task", "create", "--repository", "a", "--group", "b", "x"], "foreman task create: give --repository or --group, not both"],
    [["task", "create", "x", "--prompt-file", "f"], "foreman task create: give the prompt as an argument or with --prompt-file, not both"],
    [["task", "create"], "foreman task create: the prompt is empty"],
    [["task", "create", "--prompt-file", "/nonexistent/prompt.md"], "foreman task create: cannot read --prompt-file /nonexistent/prompt.md: ENOENT: no such file or directory, open '/nonexistent/prompt.md'"],
    [["task", "create", "a", "b"], "foreman task create: unexpected argument 'b'"],
    [["task", "show"], "foreman task show: missing ID"],
    [["logs"], "foreman logs: missing TASK_OR_SESSION_ID"],
    [["logs", "-x", "id"], "foreman logs: unknown option '-x'"],
    [["logs", "--follow=yes", "id"], "foreman logs: option '--follow' takes no value"],
    [["diff", "id", "--run"], "foreman diff: option '--run' needs a value"],
    [["answer"], "foreman answer: missing ID"],
    [["answer", "a", "b", "c"], "foreman answer: unexpected argument 'c'"],
    [["request-changes", "id"], "foreman request-changes: --feedback TEXT is required: what the agent should change"],
    [["reject", "id", "--reason", "x"], "foreman reject: unknown option '--reason'"],
    [["task", "create", "x", "--secrets", "FOREMAN_TEST_NOT_SET"], "foreman task create: --secrets names FOREMAN_TEST_NOT_SET, which is not set in this environment: export it first"],
    [["task", "create", "x", "--secrets", "A,,B"], "foreman task create: --secrets takes names of environment variables, comma-separated: one is empty"],
    [["workspace", "add"], "foreman workspace add: missing NAME"],
    [["repository", "add", "--workspace"], "foreman repository add: option '--workspace' needs a value"],
    [["cancel", "id", "--server", "ftp://x"], "foreman cancel: --server must be an http:// or https:// URL, got 'ftp://x'"],
  ];

  it.each(mistakes)("%j exits 2 naming what is wrong, with the usage", async (args, message) => {
    const e = await runCli(args, nowhere());
    expect(e.code).toBe(2);
    expect(lines(e.stderr)[0]).toBe(message);
    expect(e.stderr).toContain(`Usage: ${message.slice(0, message.indexOf(":"))}`);
    expect(e.stdout).toBe("");
  });

  const VERBS = [
    ["workspace"],
    ["workspace", "add"],
    ["workspace", "list"],
    ["repository"],
    ["repository", "add"],
    ["repository", "list"],
    ["task"],
    ["task", "create"],
    ["task", "list"],
    ["task", "show"],
    ["logs"],
    ["answer"],
    ["diff"],
    ["approve"],
    ["reject"],
    ["request-changes"],
    ["retry"],
    ["cancel"],
    ["workers"],
    ["workers", "list"],
  ];

  /** The modules `foreman <args>` resolved, as paths under the repository or node_modules. */
  async function loaded(args: string[]): Promise<{ exited: Exited; modules: string[] }> {
    const dir = await mkdtemp(path.join(tmpdir(), "foreman-cli-imports-"));
    try {
      const file = path.join(dir, "imports.txt");
      const exited = await runCli(args, { ...nowhere(), FOREMAN_TEST_IMPORTS_FILE: file }, { nodeArgs: ["--import", "./test/helpers/record-imports.mjs"] });
      const root = path.resolve(import.meta.dirname, "../..");
      const urls = (await readFile(file, "utf8")).split("\n").filter((l) => l.startsWith("file://"));
      return { exited, modules: [...new Set(urls.map((u) => path.relative(root, new URL(u).pathname)))] };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  const SERVER_SIDE = [/^node_modules\/(kysely|pg|better-sqlite3|pino)\//, /^src\/(server|db|store|core|api|auth|git|worker)\//, /^migrations\//];

  it.each(VERBS.map((v) => [v.join(" "), v]))("foreman %s --help prints its usage, exits 0 and loads only the grammar", LONG, async (name, verb) => {
    const { exited, modules } = await loaded([...verb, "--help"]);
    expect(exited.stderr).toBe("");
    expect(exited.code).toBe(0);
    expect(exited.stdout).toMatch(new RegExp(`^Usage: foreman ${name}\\b`));
    const ours = modules.filter((m) => /^(src|gen|migrations)\//.test(m)).sort();
    expect(ours.filter((m) => !["src/cli/args.ts", "src/cli/errors.ts", "src/cli/main.ts", "src/cli/verb-args.ts", "src/client/errors.ts"].includes(m))).toEqual([]);
  });

  it.each([
    ["task list", ["task", "list"]],
    ["logs -f", ["logs", "-f", UNKNOWN_ID]],
    ["diff", ["diff", UNKNOWN_ID]],
  ])("%s loads no server code and no database driver", LONG, async (_label, args: string[]) => {
    const { exited, modules } = await loaded(args);
    expect(exited.code).toBe(1);
    expect(modules.some((m) => m.startsWith("src/cli/calls.ts"))).toBe(true);
    expect(modules.filter((m) => SERVER_SIDE.some((pattern) => pattern.test(m)))).toEqual([]);
  });
});
