// The Claude Code adapter against the real `claude` CLI (the devDependency), talking to a
// scripted Anthropic Messages API on 127.0.0.1 (test/helpers/anthropic-model.ts). Each run has
// its own temporary HOME and workspace (a git repository). Covered: a run that writes a file and
// runs a command (the file is really there, the events come in order), the model answering
// 500/529, a stream that never ends until stop() (cancelled, nothing of its group left), output
// of several MB staying within the server's per-line bound, the environment (secrets in, FOREMAN_*
// overrides out), --model reaching the request, a question through FOREMAN_ASK_URL, a CLI that
// exits without a result, and (with a stand-in script for the CLI) a result line the CLI cut
// off and lines that are not JSON. No assertion on how fast anything was; timeouts are generous.
import { execFileSync } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { AgentEvent, AgentOutcome, AgentStartInput } from "../../src/worker/agents/agent.js";
import { claudeCodeAgent, MAX_EVENT_BYTES, type ClaudeCodeAgentConfig } from "../../src/worker/agents/claude-code.js";
import { startAnthropicModel, type ScriptedModel, type ScriptTurn } from "../helpers/anthropic-model.js";

const CLAUDE = path.resolve("node_modules/.bin/claude");
const RUN_TIMEOUT = 120_000;

let root: string;
let runCount = 0;
const models: ScriptedModel[] = [];

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "foreman-claude-code-"));
});

afterEach(async () => {
  await Promise.all(models.splice(0).map((m) => m.close()));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Run {
  workspace: string;
  sessionId: string;
  model: ScriptedModel;
  events: AgentEvent[];
  stop: (reason: string) => void;
  done: Promise<AgentOutcome>;
}

async function startRun(
  script: ScriptTurn[] | ((workspace: string) => ScriptTurn[]),
  options: { prompt?: string; model?: string; secrets?: Record<string, string>; askUrl?: string; config?: ClaudeCodeAgentConfig } = {},
): Promise<Run> {
  const n = ++runCount;
  const workspace = path.join(root, `ws-${n}`);
  const home = path.join(root, `home-${n}`);
  execFileSync("git", ["init", "-q", workspace]);
  execFileSync("mkdir", ["-p", home]);
  const model = await startAnthropicModel(typeof script === "function" ? script(workspace) : script);
  models.push(model);
  const events: AgentEvent[] = [];
  const sessionId = `session-${n}-${process.pid}`;
  const input: AgentStartInput = {
    taskId: `task-${n}`,
    sessionId,
    workspace,
    prompt: options.prompt ?? "Do the scripted thing.",
    model: options.model ?? "",
    env: {
      PATH: "/usr/local/bin:/usr/bin:/bin",
      HOME: home,
      ANTHROPIC_BASE_URL: model.url,
      ANTHROPIC_API_KEY: "test-key",
      // The CLI retries a failed request with backoff; one try makes the failures quick.
      CLAUDE_CODE_MAX_RETRIES: "0",
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
      DISABLE_AUTOUPDATER: "1",
    },
    secrets: options.secrets ?? {},
    askUrl: options.askUrl ?? "",
    ask: () => Promise.reject(new Error("the adapter does not use ask")),
    onEvent: (event) => events.push(event),
  };
  const agent = claudeCodeAgent({ executable: CLAUDE, graceMs: 5_000, ...options.config }).start(input);
  return { workspace, sessionId, model, events, stop: agent.stop, done: agent.done };
}

const structured = (events: AgentEvent[]) => events.filter((e) => e.kind !== undefined);
const payload = (e: AgentEvent) => JSON.parse(e.payloadJson ?? "{}");

/** Pids of live (not zombie) processes whose environment holds FOREMAN_SESSION_ID=sessionId. */
async function processesOfSession(sessionId: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const environ = await readFile(`/proc/${name}/environ`, "utf8").catch(() => "");
    if (!environ.split("\0").includes(`FOREMAN_SESSION_ID=${sessionId}`)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    if (stat !== "" && !/^\d+ \(.*\) Z /.test(stat)) found.push(Number(name));
  }
  return found;
}

describe("claude-code agent", () => {
  it(
    "writes a file and runs a command; its events come in order; a long prompt starting with '-' arrives whole",
    async () => {
      const prompt = "--not-an-option: write hello.txt\n" + "context ".repeat(20_000);
      const run = await startRun(
        (workspace) => [
          {
            blocks: [
              { type: "thinking", thinking: "I should write the file.\nThen run it." },
              { type: "text", text: "Writing hello.txt." },
              { type: "tool_use", name: "Write", input: { file_path: path.join(workspace, "hello.txt"), content: "hello from claude\n" } },
            ],
          },
          { blocks: [{ type: "tool_use", name: "Bash", input: { command: "cat hello.txt && echo ran-ok", description: "show the file" } }] },
          { blocks: [{ type: "text", text: "Done.\nThe file is written." }] },
        ],
        { prompt },
      );
      const outcome = await run.done;
      expect(outcome).toEqual({ state: "succeeded" });
      expect(await readFile(path.join(run.workspace, "hello.txt"), "utf8")).toBe("hello from claude\n");

      const events = structured(run.events);
      for (const e of events) expect(() => payload(e)).not.toThrow();
      const at = (match: (e: AgentEvent) => boolean) => {
        const i = events.findIndex(match);
        expect(i, `no event matching ${match.toString()}`).toBeGreaterThanOrEqual(0);
        return i;
      };
      const init = at((e) => e.kind === "session_event" && payload(e).subtype === "init");
      const thinking = at((e) => e.kind === "thinking");
      const write = at((e) => e.kind === "tool_call" && e.text === "Write hello.txt");
      const writeResult = at((e) => e.kind === "tool_result" && payload(e).tool_use_id === payload(events[write]!).id);
      const bash = at((e) => e.kind === "tool_call" && e.text === "Bash: cat hello.txt && echo ran-ok");
      const bashResult = at((e) => e.kind === "tool_result" && payload(e).tool_use_id === payload(events[bash]!).id);
      const message = at((e) => e.kind === "assistant_message" && e.text === "Done.\nThe file is written.");
      const usage = at((e) => e.kind === "usage");
      const result = at((e) => e.kind === "result");
      expect(init).toBeLessThan(thinking);
      expect(thinking).toBeLessThan(write);
      expect(write).toBeLessThan(writeResult);
      expect(writeResult).toBeLessThan(bash);
      expect(bash).toBeLessThan(bashResult);
      expect(bashResult).toBeLessThan(message);
      expect(usage).toBeLessThan(result);
      expect(message).toBeLessThan(result);
      expect(result).toBe(events.length - 1);

      expect(events[thinking]!.text).toBe("I should write the file.\nThen run it.");
      expect(payload(events[write]!)).toMatchObject({ type: "tool_use", name: "Write" });
      expect(events[bashResult]!.text).toBe("hello from claude");
      expect(payload(events[bashResult]!)).toMatchObject({ type: "tool_result", content: "hello from claude\nran-ok" });
      expect(payload(events[usage]!)).toHaveProperty("input_tokens");
      expect(events[result]!.text).toMatch(/^success; 3 turns, \$[\d.]+, [\d.]+ s$/);
      expect(payload(events[result]!)).toMatchObject({ type: "result", subtype: "success", is_error: false });

      // The model saw the whole prompt, and got the tool's output back.
      const main = run.model.mainRequests();
      expect(JSON.stringify(main[0]!.body.messages)).toContain(JSON.stringify(prompt).slice(1, -1));
      const lastTurn = JSON.stringify(main.at(-1)!.body.messages.at(-1));
      expect(lastTurn).toContain("hello from claude\\nran-ok");
    },
    RUN_TIMEOUT,
  );

  it.each([
    { status: 500, type: "api_error", message: "Internal trouble (scripted)" },
    { status: 529, type: "overloaded_error", message: "Overloaded (scripted)" },
  ])(
    "fails with the API's error when the model answers $status",
    async (error) => {
      const run = await startRun([{ error }]);
      const outcome = await run.done;
      expect(outcome.state).toBe("failed");
      if (outcome.state !== "failed") return;
      expect(outcome.error).toContain(error.message);
      expect(outcome.error).toContain(String(error.status));
      const kinds = structured(run.events).map((e) => e.kind);
      expect(kinds).toContain("error");
      expect(kinds.at(-1)).toBe("result");
      expect(structured(run.events).at(-1)!.text).toMatch(/^error/);
    },
    RUN_TIMEOUT,
  );

  it(
    "a model stream that never ends: stop() cancels it and nothing of its process group is left",
    async () => {
      const run = await startRun([
        // Something in the background of its group, which must go with it.
        { blocks: [{ type: "tool_use", name: "Bash", input: { command: "nohup sleep 600 >/dev/null 2>&1 & echo started", description: "background" } }] },
        { hang: true },
      ]);
      await run.model.reachedTurn(1);
      expect((await processesOfSession(run.sessionId)).length).toBeGreaterThan(0);
      run.stop("the user stopped it");
      expect(await run.done).toEqual({ state: "cancelled", reason: "the user stopped it" });
      expect(await processesOfSession(run.sessionId)).toEqual([]);
    },
    RUN_TIMEOUT,
  );

  it(
    "output of several MB (a tool result, a long message) stays within the per-line bound and the run succeeds",
    async () => {
      // The long text comes with a tool call, not last: the CLI cuts off its own output when it
      // exits with more pending than the pipe holds and its reader lags (see claude-code.ts).
      const longText = "The long answer.\n" + "y".repeat(300_000);
      const run = await startRun([
        {
          blocks: [
            { type: "text", text: longText },
            { type: "tool_use", name: "Bash", input: { command: "head -c 5000000 /dev/zero | tr '\\0' x; echo; seq 1 20000", description: "much output" } },
          ],
        },
        { blocks: [{ type: "text", text: "Done." }] },
      ]);
      expect(await run.done).toEqual({ state: "succeeded" });
      for (const e of run.events) {
        const bytes = Buffer.byteLength(e.text, "utf8") + Buffer.byteLength(e.payloadJson ?? "", "utf8");
        expect(bytes).toBeLessThanOrEqual(MAX_EVENT_BYTES);
        if (e.payloadJson !== undefined) expect(typeof payload(e)).toBe("object");
      }
      const events = structured(run.events);
      expect(events.some((e) => e.kind === "tool_result")).toBe(true);
      const message = events.find((e) => e.kind === "assistant_message" && e.text.startsWith("The long answer."))!;
      expect(message.text).toMatch(/\[cut: \d+ bytes in all\]$/);
      expect(payload(message)).toMatchObject({ type: "text", foreman_truncated: true });
      expect(events.at(-1)!.kind).toBe("result");
    },
    RUN_TIMEOUT,
  );

  it(
    "its environment holds the task's secrets and context; a secret cannot override FOREMAN_*",
    async () => {
      const run = await startRun([{ blocks: [{ type: "tool_use", name: "Bash", input: { command: "env | sort", description: "env" } }] }], {
        secrets: { MY_TOKEN: "token-value-123", FOREMAN_TASK_ID: "forged", FOREMAN_WORKSPACE: "/forged" },
        askUrl: "http://127.0.0.1:9/ask",
      });
      expect(await run.done).toEqual({ state: "succeeded" });
      const result = structured(run.events).find((e) => e.kind === "tool_result")!;
      const env = String(payload(result).content).split("\n");
      expect(env).toContain("MY_TOKEN=token-value-123");
      expect(env).toContain(`FOREMAN_TASK_ID=task-${runCount}`);
      expect(env).toContain(`FOREMAN_SESSION_ID=${run.sessionId}`);
      expect(env).toContain(`FOREMAN_WORKSPACE=${run.workspace}`);
      expect(env).toContain("FOREMAN_MODEL=");
      expect(env).toContain("FOREMAN_ASK_URL=http://127.0.0.1:9/ask");
      expect(env.join("\n")).not.toContain("forged");
      expect(env.some((l) => l.startsWith("FOREMAN_PROMPT="))).toBe(false);
    },
    RUN_TIMEOUT,
  );

  it(
    "the task's model reaches the model server as --model",
    async () => {
      const run = await startRun([{ blocks: [{ type: "text", text: "Hi." }] }], { model: "claude-scripted-test-1" });
      expect(await run.done).toEqual({ state: "succeeded" });
      const main = run.model.mainRequests();
      expect(main.length).toBeGreaterThan(0);
      for (const r of main) expect(r.body.model).toBe("claude-scripted-test-1");
      const init = structured(run.events).find((e) => e.kind === "session_event")!;
      expect(payload(init).model).toBe("claude-scripted-test-1");
    },
    RUN_TIMEOUT,
  );

  it(
    "a question goes through FOREMAN_ASK_URL with the Bash tool, and the answer comes back to the model",
    async () => {
      const asked: string[] = [];
      const askServer = http.createServer((req, res) => {
        let body = "";
        req.on("data", (c) => (body += c));
        req.on("end", () => {
          asked.push(body);
          res.end("blue");
        });
      });
      await new Promise<void>((resolve) => askServer.listen(0, "127.0.0.1", resolve));
      const askUrl = `http://127.0.0.1:${(askServer.address() as AddressInfo).port}/ask`;
      try {
        const run = await startRun(
          [
            { blocks: [{ type: "tool_use", name: "Bash", input: { command: `curl -s --data-binary 'Which color?' "$FOREMAN_ASK_URL"`, description: "ask", timeout: 600000 } }] },
            { blocks: [{ type: "text", text: "Blue it is." }] },
          ],
          { askUrl },
        );
        expect(await run.done).toEqual({ state: "succeeded" });
        expect(asked).toEqual(["Which color?"]);
        const main = run.model.mainRequests();
        // The system prompt says how to ask; the answer is the tool's result.
        expect(JSON.stringify(main[0]!.body.system)).toContain("FOREMAN_ASK_URL");
        expect(JSON.stringify(main.at(-1)!.body.messages.at(-1))).toContain("blue");
      } finally {
        await new Promise<void>((resolve) => askServer.close(() => resolve()));
      }
    },
    RUN_TIMEOUT,
  );

  it(
    "a CLI that exits without a result fails with its exit code and stderr",
    async () => {
      const run = await startRun([], { config: { extraArgs: ["--no-such-option-here"] } });
      const outcome = await run.done;
      expect(outcome.state).toBe("failed");
      if (outcome.state !== "failed") return;
      expect(outcome.error).toMatch(/^claude exited with code \d+ without a result: /);
      expect(outcome.error).toContain("no-such-option-here");
      expect(run.events.some((e) => e.stream === "stderr")).toBe(true);
    },
    RUN_TIMEOUT,
  );

  it.each([
    { isError: false, exitCode: 0, state: "succeeded" },
    { isError: true, exitCode: 1, state: "failed" },
  ])(
    "a result line cut off by the CLI still decides the end (is_error $isError); lines that are not JSON stay plain",
    async ({ isError, exitCode, state }) => {
      // A stand-in for the CLI (its arguments ignored): what claude printed when it lost the end
      // of a long last line.
      const fake = path.join(root, `fake-claude-${isError}`);
      await writeFile(
        fake,
        [
          "#!/bin/sh",
          "cat >/dev/null",
          "echo 'not json from claude'",
          `head -c 100000 /dev/zero | tr '\\0' z; echo`,
          `printf '{"type":"result","subtype":"success","is_error":${isError},"result":"yyyyyyyy'`,
          `exit ${exitCode}`,
        ].join("\n") + "\n",
      );
      await chmod(fake, 0o755);
      const run = await startRun([], { config: { executable: fake } });
      const outcome = await run.done;
      expect(outcome.state).toBe(state);
      if (outcome.state === "failed") expect(outcome.error).toContain("cut off");
      expect(run.events.every((e) => e.kind === undefined && e.stream === "stdout")).toBe(true);
      expect(run.events[0]!.text).toBe("not json from claude");
      // The 100 000 z's: pieces within the bound.
      const zs = run.events.filter((e) => e.text.startsWith("z"));
      expect(zs.map((e) => e.text).join("")).toBe("z".repeat(100_000));
      for (const e of zs) expect(Buffer.byteLength(e.text)).toBeLessThanOrEqual(MAX_EVENT_BYTES);
    },
    RUN_TIMEOUT,
  );

  it("a missing executable is a failed start", async () => {
    const run = await startRun([], { config: { executable: path.join(root, "no-such-claude") } });
    const outcome = await run.done;
    expect(outcome.state).toBe("failed");
    if (outcome.state === "failed") expect(outcome.error).toContain("no such executable");
  });
});
