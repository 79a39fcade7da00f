// The worker daemon end to end with the real agent CLIs: the server (in process), a real git
// remote over smart HTTP, and a `foreman worker --agents claude-code` (resp. `codex`) daemon as a
// child process, whose agent is the real Claude Code (resp. Codex) CLI talking to a scripted model
// server on 127.0.0.1 (test/helpers/anthropic-model.ts, openai-model.ts). The scripted model
// writes a file with a tool, runs a command, asks its user a question through its shell
// (`curl --data … "$FOREMAN_ASK_URL"`, answered here with SubmitTtyInput), writes the answer into
// a file and ends with a message: the task reaches review with both files in its diff, the log
// holds the agent's structured events in order, and approval pushes the branch upstream. And the
// model server failing (500): the task fails with the agent's error. On both databases. Nothing
// here asserts how fast anything was; the timeouts are generous (the CLIs take seconds to start).
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentType, SessionState, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { LogLineKind, LogStream, SessionService, TtyInputStatus, type LogLine } from "../../gen/foreman/v1/session_pb.js";
import { TaskService, type AgentSession, type Task } from "../../gen/foreman/v1/task_pb.js";
import { startAnthropicModel, type ScriptedModel as AnthropicModel, type ScriptTurn } from "../helpers/anthropic-model.js";
import { createTestDatabase, DIALECTS, type TestDatabase } from "../helpers/databases.js";
import { startDaemon, type DaemonProcess } from "../helpers/daemon-process.js";
import { unit } from "../helpers/dispatch.js";
import { caller, type Caller } from "../helpers/fixtures.js";
import { git, startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { startOpenAIModel, type ScriptStep } from "../helpers/openai-model.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { killAllChildren, tempFolder } from "../helpers/worker-processes.js";
import { until as untilWithin } from "../helpers/until.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const TOKEN = `e2e-${randomBytes(24).toString("hex")}`;
const TEST_TIMEOUT = 180_000;
const QUESTION = "Which colour?";
const ANSWER = "blue";
/** The shell command both agents ask with, then write the answer with. */
const ASK = `answer=$(curl -s --data '${QUESTION}' "$FOREMAN_ASK_URL") && printf '%s\\n' "$answer" > colour.txt && echo "answer: $answer"`;

/** The CLIs start slowly on a busy machine: a longer wait than the helper's default. */
const until = <T>(what: string, look: () => Promise<T | undefined>) => untilWithin(what, look, 150_000);

/** The folder Claude Code works in, as its system prompt says ("Primary working directory: …"). */
function workingDirectory(model: AnthropicModel): string | undefined {
  const request = model.mainRequests().at(-1);
  return /[Ww]orking directory: ([^\s"\\]+)/.exec(JSON.stringify(request?.body.system ?? ""))?.[1];
}

/** Claude Code's script: Write hello.txt, run a command, ask through Bash, end with a message. */
function claudeScript(model: () => AnthropicModel): ScriptTurn[] {
  const turns: ScriptTurn[] = [
    { blocks: [] },
    { blocks: [{ type: "tool_use", name: "Bash", input: { command: "cat hello.txt && echo ran-ok", description: "show the file" } }] },
    { blocks: [{ type: "tool_use", name: "Bash", input: { command: ASK, description: "ask the user", timeout: 600_000 } }] },
    { blocks: [{ type: "text", text: "Done: hello.txt and colour.txt are written." }] },
  ];
  // The first turn names the file by its absolute path, which only the CLI's request tells.
  Object.defineProperty(turns, 0, {
    get: (): ScriptTurn => {
      const dir = workingDirectory(model());
      // Without it the run goes on and the test fails on the missing file.
      if (dir === undefined) return { blocks: [{ type: "text", text: "(no working directory in the request)" }] };
      return {
        blocks: [
          { type: "text", text: "Writing hello.txt." },
          { type: "tool_use", name: "Write", input: { file_path: path.join(dir, "hello.txt"), content: "hello from the agent\n" } },
        ],
      };
    },
  });
  return turns;
}

/** Codex's script: the same through its exec_command tool. */
const CODEX_SCRIPT: ScriptStep[] = [
  { items: [{ type: "shell", cmd: "printf 'hello from the agent\\n' > hello.txt && cat hello.txt && echo ran-ok" }] },
  { items: [{ type: "function_call", name: "exec_command", arguments: { cmd: ASK, yield_time_ms: 600_000 } }] },
  { items: [{ type: "message", text: "Done: hello.txt and colour.txt are written." }] },
];

/** A codex model name it has no metadata for, so it offers exec_command (see openai-model.ts). */
const CODEX_MODEL = "foreman-test-model";
const CLAUDE_MODEL = "claude-scripted-e2e";

/**
 * A Responses API that answers every request 500, with Retry-After: 0: codex retries a 5xx
 * (30 requests in all, with its default retries) and waits what the server says between them,
 * so it fails in a second or two instead of backing off for half a minute.
 */
async function startFailingResponsesApi() {
  const requests: { body: { model?: string } }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      try {
        requests.push({ body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as { model?: string } });
      } catch {
        requests.push({ body: {} });
      }
      res
        .writeHead(500, { "content-type": "application/json", "retry-after": "0" })
        .end(JSON.stringify({ error: { message: "scripted outage", type: "server_error", code: null } }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface AgentCase {
  name: "claude-code" | "codex";
  agentType: AgentType;
  model: string;
  /** Starts the scripted model server (failing: every request answers 500). */
  start(failing: boolean): Promise<{ url: string; close(): Promise<void>; requests: { body: { model?: string } }[] }>;
  env(url: string, home: string): Record<string, string>;
  /** The structured kinds that must appear in this order. */
  order: LogLineKind[];
  /** The text of the agent's error for a 500. */
  error: RegExp;
}

const CASES: AgentCase[] = [
  {
    name: "claude-code",
    agentType: AgentType.CLAUDE_CODE,
    model: CLAUDE_MODEL,
    async start(failing) {
      // The script reads the model's requests only once it is asked for a turn, after this returns.
      const model: AnthropicModel = await startAnthropicModel(failing ? [{ error: { status: 500, type: "api_error", message: "Internal trouble (scripted)" } }] : claudeScript(() => model));
      return model;
    },
    env: (url, home) => ({ ANTHROPIC_BASE_URL: url, ANTHROPIC_API_KEY: "any", CLAUDE_CODE_MAX_RETRIES: "0", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1", HOME: home }),
    order: [LogLineKind.TOOL_CALL, LogLineKind.TOOL_RESULT, LogLineKind.TOOL_CALL, LogLineKind.TOOL_RESULT, LogLineKind.TOOL_CALL, LogLineKind.TOOL_RESULT, LogLineKind.ASSISTANT_MESSAGE, LogLineKind.RESULT],
    error: /Internal trouble \(scripted\)/,
  },
  {
    name: "codex",
    agentType: AgentType.CODEX,
    model: CODEX_MODEL,
    start: (failing) => (failing ? startFailingResponsesApi() : startOpenAIModel(CODEX_SCRIPT)),
    env: (url, home) => ({ OPENAI_BASE_URL: url, OPENAI_API_KEY: "any", HOME: home }),
    order: [LogLineKind.TOOL_CALL, LogLineKind.TOOL_RESULT, LogLineKind.TOOL_CALL, LogLineKind.TOOL_RESULT, LogLineKind.ASSISTANT_MESSAGE, LogLineKind.USAGE],
    // codex's own words for a 5xx (it does not repeat the server's), or the status.
    error: /high demand|500|server error/i,
  },
];

describe.each(DIALECTS)("the worker daemon with the real agent CLIs on %s", (dialect) => {
  let database: TestDatabase;
  let t: TestServer;
  let c: Caller;
  let remote: GitRemote;
  let homes: string;
  const daemons: DaemonProcess[] = [];
  const models: { close(): Promise<void> }[] = [];

  beforeAll(async () => {
    remote = await startGitRemote();
    database = await createTestDatabase(dialect);
    t = await startTestServer(dialect, { FOREMAN_CONTACT_REMOTES: "true", FOREMAN_WORKER_REGISTRATION_TOKEN: TOKEN, FOREMAN_HEARTBEAT_SECONDS: "1" }, database);
    c = caller(t);
    homes = tempFolder("foreman-e2e-agent-homes-");
  }, 120_000);

  // Each test's daemon and model server go with it: no other test's agent claims the next task.
  afterEach(async () => {
    await Promise.all(daemons.splice(0).map((d) => d.kill()));
    await Promise.all(models.splice(0).map((m) => m.close()));
  });

  afterAll(async () => {
    await t?.server.close();
    await database?.drop();
    await remote?.close();
    await killAllChildren();
  });

  const tasks = () => c.client(TaskService);
  const sessions = () => c.client(SessionService);
  const getTask = async (id: string): Promise<Task> => (await tasks().getTask({ id })).task!;
  const sessionsOf = async (id: string): Promise<AgentSession[]> => unit(await getTask(id)).agentTasks.flatMap((a) => a.sessions);
  const settled = (id: string) =>
    until("the task to settle", async () => {
      const s = unit(await getTask(id)).status;
      return s === TaskStatus.IN_REVIEW || s === TaskStatus.FAILED ? s : undefined;
    });

  async function logOf(sessionId: string): Promise<LogLine[]> {
    const lines: LogLine[] = [];
    for (let after = 0; ; ) {
      const page = await sessions().getLog({ sessionId, afterSequence: after, maxBatches: 500 });
      for (const b of page.batches) lines.push(...b.lines);
      if (page.batches.length === 0) return lines;
      after = page.batches.at(-1)!.sequence;
    }
  }

  async function project() {
    const name = `e2e-${randomBytes(4).toString("hex")}`;
    const url = await remote.createRepository(name, { defaultBranch: "main", files: { "README.md": "# e2e\n" } });
    const ws = (await c.workspace()).id;
    const repo = await c.repository(ws, url);
    const group = await c.group(ws, [repo.id]);
    return { name, group };
  }

  /** The model server, a daemon offering only this agent pointed at it, and a task for it. */
  async function setUp(agent: AgentCase, failing: boolean) {
    const model = await agent.start(failing);
    models.push(model);
    const home = path.join(homes, `home-${randomBytes(4).toString("hex")}`);
    mkdirSync(home);
    const d = await startDaemon({
      server: t.url,
      token: TOKEN,
      agents: agent.name,
      name: `e2e ${agent.name}`,
      concurrency: 1,
      env: { ...agent.env(model.url, home), PATH: `${path.join(ROOT, "node_modules", ".bin")}${path.delimiter}${process.env.PATH ?? "/usr/bin:/bin"}` },
    });
    daemons.push(d);
    const p = await project();
    const { unitTask } = await tasks().createUnitTask({ repositoryGroupId: p.group.id, prompt: "Write hello.txt, then ask which colour and write it to colour.txt", agentType: agent.agentType, agentModel: agent.model });
    return { model, daemon: d, project: p, id: unitTask!.id };
  }

  describe.each(CASES)("$name", (agent) => {
    it("edits, runs a command, asks a question answered here, and is reviewed, approved and pushed", { timeout: TEST_TIMEOUT }, async () => {
      const { model, daemon, project: p, id } = await setUp(agent, false);

      const question = await until("the agent's question", async () => {
        const { requests } = await sessions().listTtyInputRequests({ taskId: id });
        return requests.find((r) => r.status === TtyInputStatus.PENDING) ?? (unit(await getTask(id)).status === TaskStatus.FAILED ? null : undefined);
      });
      expect(question, unit(await getTask(id)).statusReason).not.toBeNull();
      expect(question!.prompt).toBe(QUESTION);
      await sessions().submitTtyInput({ requestId: question!.id, response: ANSWER });

      const status = await settled(id);
      const [session] = await sessionsOf(id);
      expect(status, `${unit(await getTask(id)).statusReason} / ${session?.errorMessage}\n${daemon.output().slice(-4000)}`).toBe(TaskStatus.IN_REVIEW);
      expect(session!.state).toBe(SessionState.SUCCEEDED);
      // The task's model reached the model server.
      expect(model.requests.length).toBeGreaterThan(0);
      expect(model.requests.filter((r) => r.body.model === agent.model).length).toBeGreaterThan(0);

      // The log: the agent's events, structured, in order, each payload one JSON object.
      const lines = await logOf(session!.id);
      const structured = lines.filter((l) => l.kind !== LogLineKind.UNSPECIFIED && l.kind !== LogLineKind.TEXT);
      for (const l of structured) {
        expect(l.stream).toBe(LogStream.STDOUT);
        expect(l.payloadJson, LogLineKind[l.kind]).not.toBe("");
        expect(typeof JSON.parse(l.payloadJson), l.payloadJson).toBe("object");
      }
      const kinds = structured.map((l) => l.kind);
      let at = 0;
      for (const kind of kinds) if (kind === agent.order[at]) at++;
      expect(at, `kinds: ${kinds.map((k) => LogLineKind[k]).join(", ")}`).toBe(agent.order.length);
      expect(kinds).toContain(LogLineKind.USAGE);
      const results = structured.filter((l) => l.kind === LogLineKind.TOOL_RESULT).map((l) => l.payloadJson);
      expect(results.some((r) => r.includes("ran-ok"))).toBe(true);
      expect(results.some((r) => r.includes(`answer: ${ANSWER}`))).toBe(true);
      expect(structured.filter((l) => l.kind === LogLineKind.ASSISTANT_MESSAGE).map((l) => l.text)).toContain("Done: hello.txt and colour.txt are written.");
      if (agent.name === "claude-code") {
        expect(kinds.at(-1)).toBe(LogLineKind.RESULT);
        expect(structured.find((l) => l.kind === LogLineKind.TOOL_CALL)!.text).toBe("Write hello.txt");
      }
      const system = lines.filter((l) => l.stream === LogStream.SYSTEM).map((l) => l.text);
      expect(system.some((l) => l.includes(`runs attempt 1 with ${agent.name} (${agent.model})`))).toBe(true);
      expect(system.some((l) => /^pushed /.test(l))).toBe(true);

      // The diff has both files, the answer in one.
      const diff = await tasks().getTaskDiff({ id });
      expect(diff.repositories.flatMap((r) => r.files.map((f) => f.path)).sort()).toEqual(["colour.txt", "hello.txt"]);
      expect(diff.repositories[0]!.unifiedDiff).toContain(`+${ANSWER}`);
      expect(diff.repositories[0]!.unifiedDiff).toContain("+hello from the agent");

      // Approved: the branch is upstream with the files.
      await tasks().approveTask({ id });
      const branch = unit(await getTask(id)).branchName;
      const gitDir = remote.gitDir(p.name);
      expect(await git(["--git-dir", gitDir, "show", `refs/heads/${branch}:hello.txt`])).toBe("hello from the agent");
      expect(await git(["--git-dir", gitDir, "show", `refs/heads/${branch}:colour.txt`])).toBe(ANSWER);
      expect(daemon.output()).not.toContain(TOKEN);
    });

    it("the model server answering 500 fails the task with the agent's error", { timeout: TEST_TIMEOUT }, async () => {
      const { model, id } = await setUp(agent, true);
      const status = await settled(id);
      const task = unit(await getTask(id));
      const [session] = await sessionsOf(id);
      expect(status).toBe(TaskStatus.FAILED);
      expect(session!.state).toBe(SessionState.FAILED);
      expect(model.requests.length).toBeGreaterThan(0);
      process.stdout.write(`${agent.name} on ${dialect}: ${model.requests.length} requests to the failing model server\n`);
      const why = `${task.statusReason}\n${session!.errorMessage}`;
      expect(why).toMatch(agent.error);
      // The error the log's last ERROR line says is the one reported.
      const errors = (await logOf(session!.id)).filter((l) => l.kind === LogLineKind.ERROR);
      expect(errors.length).toBeGreaterThan(0);
      expect(session!.errorMessage).toContain(errors.at(-1)!.text.split("\n")[0]!.slice(0, 100));
    });
  });
});
