// The codex agent against the real Codex CLI (@openai/codex, a devDependency) talking to a
// scripted Responses API on 127.0.0.1 (test/helpers/openai-model.ts): the CLI runs its real
// loop, its real sandbox and its real shell in a temp workspace. Covered: a run whose model
// writes a file through the shell (the file, the events in order, the model and the prompt
// reaching the server, the private CODEX_HOME gone afterwards), the model server failing
// (500, no retries), codex refusing its configuration (exit 1, stderr) and a missing
// executable, a stream that never ends until stop() (cancelled, every process gone),
// a command printing megabytes (every event within the log's bound), and what the commands it
// runs are given (the task's secrets, FOREMAN_*, a question asked through FOREMAN_ASK_URL).
// Each run has its own HOME and workspace. Nothing here asserts how fast something happened.
// Events the scripted model cannot make codex print (file changes, MCP calls, web searches)
// and the argv are checked on the adapter's own functions first.
import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentEvent } from "../../src/worker/agents/agent.js";
import { boundPayload, codexAgent, codexArgv, mapEvent } from "../../src/worker/agents/codex.js";
import { startOpenAIModel, type ScriptStep, type ScriptedModel } from "../helpers/openai-model.js";

const CODEX = path.resolve("node_modules/.bin/codex");
// A name codex has no metadata for, so it offers the plain exec_command tool (see the helper).
const MODEL = "foreman-test-model";
// The server's bound on one log line (text and payload_json together).
const MAX_LINE_BYTES = 64 * 1024;
const TIMEOUT = 120_000;

let dir: string;
let runCount = 0;
const models: ScriptedModel[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "foreman-agent-codex-"));
});

afterAll(async () => {
  await Promise.all(models.map((m) => m.close()));
  await rm(dir, { recursive: true, force: true });
});

interface RunOptions {
  prompt?: string;
  secrets?: Record<string, string>;
  askUrl?: string;
  graceMs?: number;
  executable?: string;
  extraArgs?: string[];
}

async function run(script: ScriptStep[], options: RunOptions = {}) {
  const model = await startOpenAIModel(script);
  models.push(model);
  const n = ++runCount;
  const home = path.join(dir, `home-${n}`);
  const workspace = path.join(dir, `workspace-${n}`);
  await mkdir(home);
  await mkdir(workspace);
  const sessionId = `session-codex-${n}-${process.pid}`;
  const events: AgentEvent[] = [];
  const agent = codexAgent({
    executable: options.executable ?? CODEX,
    providerBaseUrl: model.url,
    graceMs: options.graceMs,
    // Fail at once on a model error rather than retry (codex retries 5xx by default).
    extraArgs: ["-c", "model_providers.foreman.request_max_retries=0", "-c", "model_providers.foreman.stream_max_retries=0", ...(options.extraArgs ?? [])],
  });
  const running = agent.start({
    taskId: `task-codex-${n}`,
    sessionId,
    workspace,
    prompt: options.prompt ?? "Do the scripted thing.",
    model: MODEL,
    env: { PATH: `${path.dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`, HOME: home, LANG: "C.UTF-8" },
    secrets: options.secrets ?? {},
    onEvent: (event) => events.push(event),
    askUrl: options.askUrl ?? "",
    ask: () => Promise.reject(new Error("no questions in this test")),
  });
  return { model, running, events, workspace, sessionId, home };
}

const structured = (events: AgentEvent[]) => events.filter((e) => e.kind !== undefined);
const ofKind = (events: AgentEvent[], kind: AgentEvent["kind"]) => events.filter((e) => e.kind === kind);
const payload = (event: AgentEvent) => JSON.parse(event.payloadJson ?? "{}") as Record<string, unknown>;

/** The processes whose environment holds this session's id: codex and whatever it started. */
async function sessionProcesses(sessionId: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const environ = await readFile(`/proc/${entry}/environ`, "utf8").catch(() => "");
    if (environ.split("\0").includes(`FOREMAN_SESSION_ID=${sessionId}`)) pids.push(Number(entry));
  }
  return pids;
}

/** Gone: no such process, or a zombie waiting for whoever reaps orphans here. */
async function isGone(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return true;
    throw error;
  }
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat === "" || /^\d+ \(.*\) Z /.test(stat);
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("codex events and argv", () => {
  it("maps each kind of event to its kind and a one-line summary", () => {
    const cases: [Record<string, unknown>, string, string][] = [
      [{ type: "thread.started", thread_id: "th_1" }, "session_event", "thread started th_1"],
      [{ type: "turn.started" }, "session_event", "turn started"],
      [{ type: "turn.completed", usage: { input_tokens: 120, cached_input_tokens: 100, output_tokens: 9 } }, "usage", "tokens: 120 in (100 cached), 9 out"],
      [{ type: "turn.failed", error: { message: "the model is gone" } }, "error", "the model is gone"],
      [{ type: "error", message: "stream disconnected" }, "error", "stream disconnected"],
      [{ type: "item.started", item: { type: "command_execution", command: "/bin/bash -lc 'npm test'" } }, "tool_call", "$ npm test"],
      [{ type: "item.started", item: { type: "command_execution", command: `/bin/bash -lc "echo 'a b'"` } }, "tool_call", "$ echo 'a b'"],
      [{ type: "item.started", item: { type: "command_execution", command: "npm test && echo done" } }, "tool_call", "$ npm test && echo done"],
      [{ type: "item.completed", item: { type: "command_execution", exit_code: 1, aggregated_output: "\n  FAIL src/a.test.ts\nmore" } }, "tool_result", "exit 1: FAIL src/a.test.ts"],
      [{ type: "item.completed", item: { type: "command_execution", exit_code: null, status: "declined", aggregated_output: "" } }, "tool_result", "declined"],
      [{ type: "item.started", item: { type: "file_change", changes: [{ path: "src/a.ts", kind: "update" }, { path: "b.ts", kind: "add" }] } }, "tool_call", "edit src/a.ts, add b.ts"],
      [{ type: "item.completed", item: { type: "file_change", status: "completed", changes: [{ path: "old.ts", kind: "delete" }] } }, "tool_result", "completed: delete old.ts"],
      [{ type: "item.started", item: { type: "mcp_tool_call", server: "docs", tool: "search" } }, "tool_call", "docs.search"],
      [{ type: "item.completed", item: { type: "mcp_tool_call", server: "docs", tool: "search", status: "failed", error: { message: "timed out" } } }, "tool_result", "docs.search: failed: timed out"],
      [{ type: "item.started", item: { type: "web_search", query: "vitest forks" } }, "tool_call", "search vitest forks"],
      [{ type: "item.completed", item: { type: "web_search", query: "vitest forks" } }, "tool_result", "searched vitest forks"],
      [{ type: "item.completed", item: { type: "agent_message", text: "Done.\nAll tests pass." } }, "assistant_message", "Done.\nAll tests pass."],
      [{ type: "item.completed", item: { type: "reasoning", text: "**Checking** the tests" } }, "thinking", "**Checking** the tests"],
      [{ type: "item.completed", item: { type: "error", message: "a warning" } }, "error", "a warning"],
      [{ type: "item.updated", item: { type: "todo_list", items: [] } }, "session_event", "item.updated todo_list"],
      [{ type: "something.new" }, "session_event", "something.new"],
    ];
    for (const [event, kind, text] of cases) expect(mapEvent(event), JSON.stringify(event)).toEqual({ kind, text });
    // A summary stays one short line.
    const long = mapEvent({ type: "item.started", item: { type: "command_execution", command: "echo one\necho two\t" + "x".repeat(1000) } });
    expect(long.text).toMatch(/^\$ echo one echo two x+…$/);
    expect(long.text.length).toBeLessThan(300);
  });

  it("cuts a payload too big for a log line and keeps it one JSON object", () => {
    const event = { type: "item.completed", item: { id: "item_1", type: "command_execution", aggregated_output: "y\n".repeat(500_000), exit_code: 0 } };
    const line = JSON.stringify(event);
    expect(boundPayload(event, line, 64 * 1024)).not.toBe(line);
    const cut = boundPayload(event, line, 60 * 1024);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(60 * 1024);
    expect(JSON.parse(cut)).toMatchObject({ type: "item.completed", item: { id: "item_1", exit_code: 0 } });
    expect(cut).toContain("…[cut ");
    // A small one is the line as codex printed it, byte for byte.
    const small = '{"type":"turn.started" ,"n":12345678901234567890}';
    expect(boundPayload(JSON.parse(small), small, 1024)).toBe(small);
  });

  it("runs codex exec with the prompt on stdin, the sandbox, the provider and the model", () => {
    const input = { workspace: "/w/ws", model: "gpt-test" } as Parameters<typeof codexArgv>[1];
    expect(codexArgv({ providerBaseUrl: "http://127.0.0.1:9/v1", extraArgs: ["-c", "x=1"] }, input, { OPENAI_API_KEY: "k" })).toEqual([
      "codex", "exec", "--json", "--skip-git-repo-check", "--cd", "/w/ws", "--sandbox", "workspace-write",
      "-c", 'approval_policy="never"',
      "-c", "sandbox_workspace_write.network_access=true",
      "-c", 'shell_environment_policy.inherit="all"',
      "-c", "shell_environment_policy.ignore_default_excludes=true",
      "-c", 'model_provider="foreman"',
      "-c", 'model_providers.foreman={name="foreman",base_url="http://127.0.0.1:9/v1",wire_api="responses",env_key="OPENAI_API_KEY"}',
      "--model", "gpt-test", "-c", "x=1", "-",
    ]);
    // No provider, no model, no key: codex's own defaults.
    const plain = codexArgv({ executable: "/opt/codex", sandbox: "danger-full-access" }, { ...input, model: "" }, {});
    expect(plain[0]).toBe("/opt/codex");
    expect(plain).toContain("danger-full-access");
    expect(plain.join(" ")).not.toMatch(/model/);
    expect(plain.at(-1)).toBe("-");
  });
});

describe("codex agent (the real CLI, a scripted model)", () => {
  it(
    "runs the model's shell command in the workspace and reports its events in order",
    async () => {
      const prompt = "-n starts with a dash: write made.txt, please.";
      const { model, running, events, workspace, home } = await run(
        [
          {
            items: [
              { type: "reasoning", text: "A file is wanted; the shell can write it." },
              { type: "shell", cmd: `printf 'made by codex\\n' > made.txt && echo wrote made.txt && echo "codex_home=$CODEX_HOME"` },
            ],
          },
          { items: [{ type: "message", text: "I wrote made.txt." }] },
        ],
        { prompt },
      );
      const outcome = await running.done;
      expect(outcome).toEqual({ state: "succeeded" });
      expect(await readFile(path.join(workspace, "made.txt"), "utf8")).toBe("made by codex\n");

      // The order of the kinds that matter (codex may add events of its own between them).
      const kinds = structured(events).map((e) => e.kind);
      const order = ["session_event", "tool_call", "tool_result", "assistant_message", "usage"];
      let at = 0;
      for (const kind of kinds) if (kind === order[at]) at++;
      expect(at, `kinds: ${kinds.join(", ")}`).toBe(order.length);

      expect(structured(events).find((e) => e.kind === "session_event" && payload(e).type === "thread.started")).toBeDefined();
      expect(ofKind(events, "thinking").map((e) => e.text)).toContain("A file is wanted; the shell can write it.");
      const call = ofKind(events, "tool_call")[0]!;
      expect(call.text).toMatch(/^\$ printf 'made by codex\\n' > made\.txt/);
      expect(payload(call)).toMatchObject({ type: "item.started", item: { type: "command_execution" } });
      const result = ofKind(events, "tool_result")[0]!;
      expect(result.text).toBe("exit 0: wrote made.txt");
      expect(ofKind(events, "assistant_message").map((e) => e.text)).toEqual(["I wrote made.txt."]);
      expect(ofKind(events, "usage")[0]!.text).toBe("tokens: 50 in, 14 out");
      for (const e of structured(events)) expect(e.stream).toBe("stdout");

      // What reached the model server: the task's model, the prompt (dash and all), the output.
      expect(model.requests.map((r) => r.body.model)).toEqual([MODEL, MODEL]);
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const userTexts = (model.requests[0]!.body.input as any[]).filter((i) => i.role === "user").flatMap((i) => i.content.map((c: any) => c.text));
      expect(userTexts).toContain(prompt);
      const [output] = model.toolOutputs(model.requests[1]!);
      expect(output).toContain("wrote made.txt");

      // Its own CODEX_HOME, not under HOME, and gone once the session ended.
      const codexHome = /codex_home=(\S+)/.exec(output ?? "")?.[1];
      expect(codexHome).toBeDefined();
      expect(codexHome!.startsWith(home)).toBe(false);
      expect(existsSync(codexHome!)).toBe(false);
      // Nor did it leave anything in HOME, which sessions share.
      expect(await readdir(home)).toEqual([]);
    },
    TIMEOUT,
  );

  it(
    "fails with the model server's error when it answers 500",
    async () => {
      const { model, running, events } = await run([{ error: { status: 500, message: "scripted outage" } }]);
      const outcome = await running.done;
      expect(outcome.state).toBe("failed");
      const errors = ofKind(events, "error").filter((e) => ["turn.failed", "error"].includes(payload(e).type as string));
      expect(errors.length).toBeGreaterThan(0);
      // The message is codex's own (for a 5xx it does not repeat the server's), as the last error said it.
      expect(outcome).toEqual({ state: "failed", error: errors.at(-1)!.text });
      expect(outcome.state === "failed" && outcome.error.length).toBeGreaterThan(0);
      expect(model.requests).toHaveLength(1);
    },
    TIMEOUT,
  );

  it(
    "fails with the exit code and stderr when codex refuses to start, and names a missing executable",
    async () => {
      const refused = await run([], { extraArgs: ["-c", 'approval_policy="sometimes"'] });
      const outcome = await refused.running.done;
      expect(outcome.state).toBe("failed");
      expect(outcome.state === "failed" && outcome.error).toMatch(/^codex exited with code 1: [\s\S]*approval_policy/);
      expect(refused.model.requests).toEqual([]);

      const missing = await run([], { executable: path.join(dir, "no-such-codex") });
      expect(await missing.running.done).toEqual({ state: "failed", error: expect.stringMatching(/no-such-codex: no such executable \(ENOENT\)/) });
    },
    TIMEOUT,
  );

  it(
    "is cancelled by stop() while the model's stream hangs, and every process of it is gone",
    async () => {
      const { model, running, events, sessionId } = await run([{ hang: true }], { graceMs: 3_000 });
      await model.reachedStep(0);
      const pids = await sessionProcesses(sessionId);
      expect(pids.length).toBeGreaterThan(0);
      const codexHome = (await readFile(`/proc/${pids[0]}/environ`, "utf8")).split("\0").find((v) => v.startsWith("CODEX_HOME="))?.slice("CODEX_HOME=".length);
      expect(codexHome).toBeDefined();
      expect(existsSync(codexHome!)).toBe(true);

      running.stop("stopped by the test");
      expect(await running.done).toEqual({ state: "cancelled", reason: "stopped by the test" });
      for (const pid of pids) await waitFor(`process ${pid} to end`, () => isGone(pid));
      expect(await sessionProcesses(sessionId)).toEqual([]);
      expect(existsSync(codexHome!)).toBe(false);
      expect(structured(events).some((e) => payload(e).type === "turn.started")).toBe(true);
    },
    TIMEOUT,
  );

  it(
    "keeps every event within the log's bound when a command prints megabytes, and succeeds",
    async () => {
      const { running, events } = await run([
        { items: [{ type: "shell", cmd: "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 6000000; echo; echo end of output" }] },
        { items: [{ type: "message", text: "é".repeat(500_000) }] },
      ]);
      expect(await running.done).toEqual({ state: "succeeded" });
      for (const e of events) {
        const bytes = Buffer.byteLength(e.text) + Buffer.byteLength(e.payloadJson ?? "");
        expect(bytes, `a ${e.kind ?? "plain"} line`).toBeLessThanOrEqual(MAX_LINE_BYTES);
        if (e.payloadJson !== undefined) expect(typeof payload(e)).toBe("object");
      }
      const result = ofKind(events, "tool_result")[0]!;
      expect(result.text).toMatch(/^exit 0: 0123456789abcdefghijklmnopqrstuvwxyz/);
      expect(payload(result)).toMatchObject({ type: "item.completed", item: { type: "command_execution", exit_code: 0 } });
      expect(result.payloadJson).toContain("…[cut ");
      const [message] = ofKind(events, "assistant_message");
      expect(message!.text).toMatch(/^(é)+…\[cut \d+ bytes\]$/);
    },
    TIMEOUT,
  );

  it(
    "gives the commands it runs the task's secrets and FOREMAN_*, and a question through FOREMAN_ASK_URL gets its answer",
    async () => {
      // Stands in for the worker's ask server: the question is the body, the answer the response.
      const questions: string[] = [];
      const askServer = http.createServer((req, res) => {
        let body = "";
        req.on("data", (c: Buffer) => (body += c.toString("utf8")));
        req.on("end", () => {
          questions.push(`${req.method} ${req.url} ${body}`);
          res.end("yes, go ahead");
        });
      });
      await new Promise<void>((resolve) => askServer.listen(0, "127.0.0.1", resolve));
      const url = `http://127.0.0.1:${(askServer.address() as AddressInfo).port}/ask/session-key`;
      try {
        const cmd = [
          `printf '%s\\n' "$MY_SECRET" "$FOREMAN_TASK_ID" "$FOREMAN_SESSION_ID" "$FOREMAN_WORKSPACE" "$FOREMAN_ASK_URL" "\${FOREMAN_PROMPT-unset}" > env.txt`,
          `answer=$(curl -s --data 'Deploy to staging?' "$FOREMAN_ASK_URL")`,
          `echo "answer=$answer"`,
        ].join("; ");
        const { model, running, workspace, sessionId } = await run([{ items: [{ type: "shell", cmd }] }, { items: [{ type: "message", text: "Asked." }] }], {
          secrets: { MY_SECRET: "s3cret value", FOREMAN_TASK_ID: "forged", OPENAI_API_KEY: "sk-from-the-task" },
          askUrl: url,
        });
        expect(await running.done).toEqual({ state: "succeeded" });
        const lines = (await readFile(path.join(workspace, "env.txt"), "utf8")).split("\n");
        expect(lines.slice(0, 6)).toEqual(["s3cret value", `task-codex-${runCount}`, sessionId, workspace, url, "unset"]);
        expect(questions).toEqual(["POST /ask/session-key Deploy to staging?"]);
        expect(model.toolOutputs(model.requests[1]!)[0]).toContain("answer=yes, go ahead");
        // The provider's key is the task's OPENAI_API_KEY.
        expect(model.requests[0]!.headers.authorization).toBe("Bearer sk-from-the-task");
      } finally {
        askServer.closeAllConnections();
        await new Promise((resolve) => askServer.close(resolve));
      }
    },
    TIMEOUT,
  );
});
