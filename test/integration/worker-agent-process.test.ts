// The worker's agent process and the command agent, with real processes (node and /bin/sh
// scripts in a temp folder): output line by line from both streams (chunk boundaries, multi-byte
// characters, over-long lines, a last line without a newline), exit codes, a stop that reaches the
// whole process group (SIGTERM, then SIGKILL after the grace), grandchildren gone afterwards, a
// missing or unrunnable executable reported as an outcome, and what the command agent is given
// (prompt on stdin and in FOREMAN_PROMPT, the context, secrets that cannot override FOREMAN_*).
// Nothing here asserts how fast something happened; waits have generous timeouts.
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { lineSplitter, startAgentProcess, type OutputLine } from "../../src/worker/agent-process.js";
import type { AgentEvent, AgentStartInput } from "../../src/worker/agents/agent.js";
import { commandAgent } from "../../src/worker/agents/command.js";

const NODE = process.execPath;
const BASE_ENV = { PATH: "/usr/local/bin:/usr/bin:/bin" };

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "foreman-agent-process-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let scriptCount = 0;
/** Writes an executable script into the temp folder and returns its path. */
async function script(body: string, ext = ".mjs"): Promise<string> {
  const file = path.join(dir, `script-${++scriptCount}${ext}`);
  await writeFile(file, body);
  await chmod(file, 0o755);
  return file;
}

function run(argv: string[], options: { stdin?: string; graceMs?: number; maxLineBytes?: number; env?: Record<string, string> } = {}) {
  const lines: OutputLine[] = [];
  const waiters: { match: (l: OutputLine) => boolean; resolve: (l: OutputLine) => void }[] = [];
  const proc = startAgentProcess({
    argv,
    cwd: dir,
    env: options.env ?? BASE_ENV,
    stdin: options.stdin,
    graceMs: options.graceMs,
    maxLineBytes: options.maxLineBytes,
    onLine: (line) => {
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.match(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    },
  });
  /** Resolves on the first line (seen or to come) matching. */
  const line = (match: (l: OutputLine) => boolean) =>
    new Promise<OutputLine>((resolve) => {
      const seen = lines.find(match);
      if (seen) resolve(seen);
      else waiters.push({ match, resolve });
    });
  const texts = (stream: "stdout" | "stderr") => lines.filter((l) => l.stream === stream).map((l) => l.text);
  return { proc, lines, line, texts };
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

async function waitGone(pid: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await isGone(pid))) {
    if (Date.now() > deadline) throw new Error(`process ${pid} is still there`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("line splitting", () => {
  const split = (chunks: Buffer[], maxLineBytes = 1024) => {
    const lines: string[] = [];
    const s = lineSplitter("stdout", maxLineBytes, (l) => lines.push(l.text));
    for (const c of chunks) s.push(c);
    s.flush();
    return lines;
  };

  it("joins a line split across chunks and a multi-byte character split across chunks", () => {
    const bytes = Buffer.from("héllo wörld\n€uro\n");
    // Every possible cut, including inside "é", "ö" and "€".
    for (let cut = 1; cut < bytes.length; cut++) {
      expect(split([bytes.subarray(0, cut), bytes.subarray(cut)])).toEqual(["héllo wörld", "€uro"]);
    }
    // One byte at a time.
    expect(split([...bytes].map((b) => Buffer.from([b])))).toEqual(["héllo wörld", "€uro"]);
  });

  it("cuts an over-long line into pieces of at most the bound, never inside a character", () => {
    expect(split([Buffer.from("a".repeat(25) + "\nb\n")], 10)).toEqual(["a".repeat(10), "a".repeat(10), "a".repeat(5), "b"]);
    // "é" is two bytes: a bound of 5 fits two of them per piece.
    expect(split([Buffer.from("é".repeat(6) + "\n")], 5)).toEqual(["éé", "éé", "éé"]);
    // Still cut when the line arrives in small chunks, with no newline yet.
    const chunks = [...Buffer.from("x".repeat(23))].map((b) => Buffer.from([b]));
    expect(split(chunks, 10)).toEqual(["x".repeat(10), "x".repeat(10), "xxx"]);
  });

  it("flushes a last line without a newline, drops a CR before LF, keeps empty lines", () => {
    expect(split([Buffer.from("one\r\n\ntwo")])).toEqual(["one", "", "two"]);
  });
});

describe("agent process", () => {
  it(
    "delivers the lines of both streams, each in order, and the last line without a newline",
    async () => {
      const file = await script(`
        for (let i = 0; i < 2000; i++) {
          process.stdout.write("out " + i + "\\n");
          process.stderr.write("err " + i + "\\n");
        }
        process.stdout.write("no newline at the end");
      `);
      const { proc, texts } = run([NODE, file]);
      const outcome = await proc.done;
      expect(outcome).toEqual({ exitCode: 0, signal: null, stopped: false });
      const expected = (prefix: string) => Array.from({ length: 2000 }, (_, i) => `${prefix} ${i}`);
      expect(texts("stdout")).toEqual([...expected("out"), "no newline at the end"]);
      expect(texts("stderr")).toEqual(expected("err"));
    },
  );

  it("reassembles a line and a multi-byte character written in pieces", async () => {
    // Separate writes with pauses between, so they likely arrive as separate chunks; the result
    // must be the same however they arrive.
    const file = await script(`
      const bytes = Buffer.from("start ünïcödé €nd\\n");
      const pause = () => new Promise((r) => setTimeout(r, 20));
      for (let i = 0; i < bytes.length; i += 3) { process.stdout.write(bytes.subarray(i, i + 3)); await pause(); }
    `);
    const { proc, texts } = run([NODE, file]);
    expect((await proc.done).exitCode).toBe(0);
    expect(texts("stdout")).toEqual(["start ünïcödé €nd"]);
  });

  it("cuts an over-long line from a real process", async () => {
    const file = await script(`process.stdout.write("y".repeat(2500) + "\\nshort\\n");`);
    const { proc, texts } = run([NODE, file], { maxLineBytes: 1000 });
    await proc.done;
    expect(texts("stdout")).toEqual(["y".repeat(1000), "y".repeat(1000), "y".repeat(500), "short"]);
  });

  it("reports exit codes and a death by signal", async () => {
    const three = await script(`process.exit(3);`);
    expect(await run([NODE, three]).proc.done).toEqual({ exitCode: 3, signal: null, stopped: false });
    const killed = await script(`process.kill(process.pid, "SIGKILL");`);
    expect(await run([NODE, killed]).proc.done).toEqual({ exitCode: null, signal: "SIGKILL", stopped: false });
  });

  it("runs in the workspace folder with exactly the environment given, stdin closed after the text", async () => {
    process.env.FOREMAN_TEST_NOT_PASSED_ON = "leak";
    try {
      const file = await script(`
        let input = "";
        process.stdin.on("data", (c) => (input += c));
        process.stdin.on("end", () => {
          console.log(JSON.stringify({ cwd: process.cwd(), leak: process.env.FOREMAN_TEST_NOT_PASSED_ON ?? null, given: process.env.GIVEN, input }));
        });
      `);
      const { proc, texts } = run([NODE, file], { env: { GIVEN: "yes" }, stdin: "some input\nsecond line" });
      expect((await proc.done).exitCode).toBe(0);
      expect(JSON.parse(texts("stdout")[0] ?? "")).toEqual({ cwd: dir, leak: null, given: "yes", input: "some input\nsecond line" });
    } finally {
      delete process.env.FOREMAN_TEST_NOT_PASSED_ON;
    }
  });

  it("stop sends SIGTERM, and the outcome says stopped", async () => {
    const file = await script(`
      process.on("SIGTERM", () => { console.log("got SIGTERM"); process.exit(0); });
      console.log("ready");
      setInterval(() => {}, 1000);
    `);
    const { proc, line, texts } = run([NODE, file]);
    await line((l) => l.text === "ready");
    proc.stop("the user cancelled");
    expect(await proc.done).toEqual({ exitCode: 0, signal: null, stopped: true });
    expect(texts("stdout")).toEqual(["ready", "got SIGTERM"]);
  });

  it("SIGKILLs a process that ignores SIGTERM after the grace period", async () => {
    const file = await script(`
      process.on("SIGTERM", () => console.log("ignoring SIGTERM"));
      console.log("ready");
      setInterval(() => {}, 1000);
    `);
    const { proc, line, texts } = run([NODE, file], { graceMs: 300 });
    await line((l) => l.text === "ready");
    proc.stop("lease lost");
    expect(await proc.done).toEqual({ exitCode: null, signal: "SIGKILL", stopped: true });
    // Not asserting "ignoring SIGTERM" was printed: on a loaded machine the SIGKILL may come first.
    expect(texts("stdout")[0]).toBe("ready");
  });

  it("a stop kills the grandchildren in the group too", async () => {
    const file = await script(`#!/bin/sh\nsleep 1000 &\necho "grandchild $!"\nwait\n`, ".sh");
    const { proc, line } = run([file]);
    const started = await line((l) => l.text.startsWith("grandchild "));
    const grandchild = Number(started.text.split(" ")[1]);
    expect(await isGone(grandchild)).toBe(false);
    proc.stop("stopped");
    const outcome = await proc.done;
    expect(outcome.stopped).toBe(true);
    expect(outcome.signal).toBe("SIGTERM");
    await waitGone(grandchild);
  });

  it("kills a grandchild that ignores SIGTERM, and one left behind by an agent that exited", async () => {
    const stubborn = await script(`#!/bin/sh\ntrap "" TERM\nsleep 1000 &\necho "grandchild $!"\nwait\n`, ".sh");
    const a = run([stubborn], { graceMs: 300 });
    const pidA = Number((await a.line((l) => l.text.startsWith("grandchild "))).text.split(" ")[1]);
    a.proc.stop("stopped");
    expect((await a.proc.done).stopped).toBe(true);
    await waitGone(pidA);

    // Its output pipe stays open in the sleep; the run must end anyway, with the sleep gone.
    const leaver = await script(`#!/bin/sh\nsleep 1000 &\necho "grandchild $!"\nexit 0\n`, ".sh");
    const b = run([leaver]);
    expect(await b.proc.done).toEqual({ exitCode: 0, signal: null, stopped: false });
    await waitGone(Number(b.texts("stdout")[0]?.split(" ")[1]));
  });

  it("reports an executable that is missing or cannot be run as an outcome naming it", async () => {
    const missing = await run(["/no/such/agent-binary"]).proc.done;
    expect(missing).toMatchObject({ exitCode: null, signal: null, stopped: false });
    expect(missing.error).toContain("/no/such/agent-binary");
    expect(missing.error).toContain("ENOENT");

    const notOnPath = await run(["no-such-agent-on-path"]).proc.done;
    expect(notOnPath.error).toContain("no-such-agent-on-path");

    const notExecutable = path.join(dir, "not-executable.sh");
    await writeFile(notExecutable, "#!/bin/sh\necho hi\n");
    await chmod(notExecutable, 0o644);
    const denied = await run([notExecutable]).proc.done;
    expect(denied.error).toContain(notExecutable);
    expect(denied.error).toContain("EACCES");

    const noFolder = startAgentProcess({ argv: [NODE, "-e", ""], cwd: path.join(dir, "missing-folder"), env: BASE_ENV, onLine: () => {} });
    expect((await noFolder.done).error).toContain("missing-folder");
  });
});

describe("command agent", () => {
  const input = (events: AgentEvent[], overrides: Partial<AgentStartInput> = {}): AgentStartInput => ({
    taskId: "task-1",
    sessionId: "session-1",
    workspace: dir,
    prompt: "Fix the bug.\nThen add a test: ünïcode ok.",
    model: "",
    env: BASE_ENV,
    secrets: {},
    onEvent: (e) => events.push(e),
    askUrl: "",
    ask: () => Promise.reject(new Error("no question expected")),
    ...overrides,
  });

  it("gets the prompt on stdin and in FOREMAN_PROMPT, the task context and the secrets", async () => {
    const file = await script(`
      let stdin = "";
      process.stdin.on("data", (c) => (stdin += c));
      process.stdin.on("end", () => {
        const e = process.env;
        console.log(JSON.stringify({
          stdin, prompt: e.FOREMAN_PROMPT, task: e.FOREMAN_TASK_ID, session: e.FOREMAN_SESSION_ID,
          workspace: e.FOREMAN_WORKSPACE, model: e.FOREMAN_MODEL, cwd: process.cwd(), token: e.API_TOKEN,
          extra: e.FOREMAN_EXTRA ?? null,
        }));
      });
    `);
    const events: AgentEvent[] = [];
    const agent = commandAgent({ argv: [NODE, file] });
    const running = agent.start(
      input(events, {
        model: "big-model",
        secrets: { API_TOKEN: "s3cret", FOREMAN_TASK_ID: "hijacked", FOREMAN_PROMPT: "hijacked", FOREMAN_EXTRA: "hijacked" },
      }),
    );
    expect(await running.done).toEqual({ state: "succeeded" });
    expect(events).toHaveLength(1);
    expect(events[0]?.stream).toBe("stdout");
    const prompt = "Fix the bug.\nThen add a test: ünïcode ok.";
    expect(JSON.parse(events[0]?.text ?? "")).toEqual({
      stdin: prompt,
      prompt,
      task: "task-1",
      session: "session-1",
      workspace: dir,
      model: "big-model",
      cwd: dir,
      token: "s3cret",
      extra: null,
    });
  });

  it("gives an empty FOREMAN_MODEL when the task names none", async () => {
    const events: AgentEvent[] = [];
    const running = commandAgent({ argv: [NODE, "-e", `console.log(JSON.stringify(process.env.FOREMAN_MODEL))`] }).start(input(events));
    expect(await running.done).toEqual({ state: "succeeded" });
    expect(events.map((e) => e.text)).toEqual(['""']);
  });

  it("fails with the exit code and the tail of stderr", async () => {
    const file = await script(`
      for (let i = 1; i <= 20; i++) console.error("problem " + i);
      console.log("some output");
      process.exit(7);
    `);
    const events: AgentEvent[] = [];
    const outcome = await commandAgent({ argv: [NODE, file] }).start(input(events)).done;
    expect(outcome.state).toBe("failed");
    const error = outcome.state === "failed" ? outcome.error : "";
    expect(error).toMatch(/^exited with code 7: /);
    expect(error).toContain("problem 20");
    expect(error).toContain("problem 16");
    expect(error).not.toContain("problem 15\n");
    expect(error).not.toContain("some output");
    expect(events.filter((e) => e.stream === "stderr")).toHaveLength(20);
  });

  it("bounds the stderr tail in the error message", async () => {
    const file = await script(`console.error("z".repeat(50000)); process.exit(1);`);
    const outcome = await commandAgent({ argv: [NODE, file] }).start(input([])).done;
    expect(outcome.state).toBe("failed");
    const error = outcome.state === "failed" ? outcome.error : "";
    expect(error).toMatch(/^exited with code 1: /);
    expect(error.length).toBeLessThan(2100);
  });

  it("a stop cancels it, with the reason", async () => {
    const file = await script(`console.log("working"); setInterval(() => {}, 1000);`);
    const events: AgentEvent[] = [];
    let sawWorking!: () => void;
    const working = new Promise<void>((r) => (sawWorking = r));
    const running = commandAgent({ argv: [NODE, file], graceMs: 300 }).start(
      input(events, {
        onEvent: (e) => {
          events.push(e);
          if (e.text === "working") sawWorking();
        },
      }),
    );
    await working;
    running.stop("the task was cancelled");
    expect(await running.done).toEqual({ state: "cancelled", reason: "the task was cancelled" });
  });

  it("fails with the spawn error when the executable is missing", async () => {
    const outcome = await commandAgent({ argv: ["/no/such/agent"] }).start(input([])).done;
    expect(outcome.state).toBe("failed");
    expect(outcome.state === "failed" ? outcome.error : "").toContain("could not start /no/such/agent");
  });
});
