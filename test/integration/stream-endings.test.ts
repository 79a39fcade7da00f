// Streams a client ends: a client that resets or aborts a stream has done nothing wrong, so the
// server logs it as canceled (one line, no stack, never at error) and counts it as canceled;
// and any number of open streams share the shutdown signal without a MaxListenersExceededWarning.
import { spawn } from "node:child_process";
import http2 from "node:http2";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { ServerReflection, ServerReflectionRequestSchema } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { DIALECTS } from "../helpers/databases.js";
import { caller } from "../helpers/fixtures.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const WATCH = "/foreman.v1.TaskService/WatchTasks";
const BUF = path.join(process.cwd(), "node_modules", ".bin", "buf");

interface LogLine {
  level: number;
  msg: string;
  procedure?: string;
  code?: string;
  err?: unknown;
  stack?: unknown;
}

/** A gRPC length-prefixed message. */
function envelope(bytes: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(bytes.length, 1);
  return Buffer.concat([head, bytes]);
}

async function waitFor(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The calls_total samples of a procedure, by code. */
async function callCounts(url: string, procedure: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const counts: Record<string, number> = {};
  const prefix = `foreman_rpc_calls_total{procedure="${procedure}",code="`;
  for (const line of text.split("\n")) {
    if (!line.startsWith(prefix)) continue;
    const code = line.slice(prefix.length, line.indexOf('"', prefix.length));
    counts[code] = Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return counts;
}

describe.each(DIALECTS)("streams the client ends, on %s", (dialect) => {
  let t: TestServer;
  const lines: string[] = [];
  const logged = (from: number) => lines.slice(from).map((l) => JSON.parse(l) as LogLine);

  beforeAll(async () => {
    t = await startTestServer(dialect, { FOREMAN_STREAM_KEEPALIVE_SECONDS: "1" }, undefined, { logLines: lines });
  });

  afterAll(async () => {
    await t?.close();
  });

  /** Expects the procedure's calls since `from` to be canceled, logged without a stack or an error line. */
  function expectCanceled(from: number, procedure: string): void {
    const since = logged(from);
    expect(since.filter((l) => l.level >= 50), JSON.stringify(since)).toEqual([]);
    expect(lines.slice(from).join("")).not.toMatch(/stack|ERR_STREAM_PREMATURE_CLOSE|unexpected error/);
    const calls = since.filter((l) => l.procedure === procedure && l.msg === "call");
    expect(calls).toEqual([expect.objectContaining({ code: "Canceled" })]);
    expect(calls[0]!.level).toBeLessThanOrEqual(30);
  }

  it("logs and counts a reflection stream the client resets as canceled", async () => {
    const before = lines.length;
    const counted = await callCounts(t.url, REFLECTION);
    const session = http2.connect(t.url);
    try {
      const stream = session.request({ ":method": "POST", ":path": REFLECTION, "content-type": "application/grpc", te: "trailers" });
      const request = create(ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "*" } });
      stream.write(envelope(toBinary(ServerReflectionRequestSchema, request)));
      // The answer arrives while the request body is still open, as buf curl keeps it.
      await new Promise<void>((resolve, reject) => {
        stream.once("data", () => resolve());
        stream.once("error", reject);
      });
      stream.close(http2.constants.NGHTTP2_CANCEL);
      await waitFor(() => logged(before).some((l) => l.procedure === REFLECTION && l.msg === "call"), "the call line");
    } finally {
      session.destroy();
    }
    expectCanceled(before, REFLECTION);
    const after = await callCounts(t.url, REFLECTION);
    expect(after.canceled ?? 0).toBe((counted.canceled ?? 0) + 1);
    expect(after.internal ?? 0).toBe(counted.internal ?? 0);
  });

  it("logs and counts a reflection stream whose connection the client destroys as canceled", async () => {
    const before = lines.length;
    const counted = await callCounts(t.url, REFLECTION);
    const session = http2.connect(t.url);
    const stream = session.request({ ":method": "POST", ":path": REFLECTION, "content-type": "application/grpc", te: "trailers" });
    const request = create(ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "*" } });
    stream.write(envelope(toBinary(ServerReflectionRequestSchema, request)));
    await new Promise<void>((resolve) => stream.once("data", () => resolve()));
    stream.on("error", () => {});
    session.destroy();
    await waitFor(() => logged(before).some((l) => l.procedure === REFLECTION && l.msg === "call"), "the call line");
    expectCanceled(before, REFLECTION);
    const after = await callCounts(t.url, REFLECTION);
    expect(after.canceled ?? 0).toBe((counted.canceled ?? 0) + 1);
    expect(after.internal ?? 0).toBe(counted.internal ?? 0);
  });

  it("logs and counts a reflection stream the client ends cleanly as ok", async () => {
    const before = lines.length;
    const requests = (async function* () {
      yield create(ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "*" } });
    })();
    for await (const _ of t.client(ServerReflection, "grpc").serverReflectionInfo(requests));
    await waitFor(() => logged(before).some((l) => l.procedure === REFLECTION && l.msg === "call"), "the call line");
    expect(logged(before).filter((l) => l.procedure === REFLECTION && l.msg === "call")).toEqual([expect.objectContaining({ code: "ok" })]);
  });

  it.each(["grpc", "connect-h2c", "connect-http1", "grpc-web"] as const)("logs and counts a WatchTasks stream aborted over %s as canceled", async (protocol) => {
    const workspace = await caller(t).workspace();
    const before = lines.length;
    const counted = await callCounts(t.url, WATCH);
    const abort = new AbortController();
    const stream = t.client(TaskService, protocol).watchTasks({ workspaceId: workspace.id }, { signal: abort.signal })[Symbol.asyncIterator]();
    await stream.next();
    abort.abort();
    await stream.next().catch(() => undefined);
    await waitFor(() => logged(before).some((l) => l.procedure === WATCH && l.msg === "call"), "the call line");
    expectCanceled(before, WATCH);
    const after = await callCounts(t.url, WATCH);
    expect(after.canceled ?? 0).toBe((counted.canceled ?? 0) + 1);
    expect(after.internal ?? 0).toBe(counted.internal ?? 0);
  });

  it("logs and counts WatchTasks and its reflection stream as canceled when buf curl is stopped with Ctrl-C", async () => {
    const workspace = await caller(t).workspace();
    const before = lines.length;
    const reflected = await callCounts(t.url, REFLECTION);
    const watched = await callCounts(t.url, WATCH);
    const args = ["curl", "--http2-prior-knowledge", "--protocol", "grpc", "-d", JSON.stringify({ workspaceId: workspace.id }), `${t.url}${WATCH}`];
    // Its own process group, signalled whole as a terminal's Ctrl-C is: the npm shim and buf itself.
    const child = spawn(BUF, args, { detached: true, stdio: ["ignore", "pipe", "ignore"] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.once("data", () => resolve());
        child.once("exit", () => reject(new Error("buf curl ended before its first message")));
      });
    } finally {
      process.kill(-child.pid!, "SIGINT");
    }
    await waitFor(() => logged(before).filter((l) => l.msg === "call").length === 2, "both call lines");
    expect(lines.slice(before).join("")).not.toMatch(/stack|ERR_STREAM_PREMATURE_CLOSE|unexpected error/);
    expect(logged(before).filter((l) => l.level >= 40)).toEqual([]);
    const calls = logged(before).filter((l) => l.msg === "call");
    expect(calls).toEqual(expect.arrayContaining([expect.objectContaining({ procedure: WATCH, code: "Canceled" })]));
    // buf's reflection client sometimes half-closes its stream on SIGINT before the connection
    // goes (a clean end, ok) and sometimes loses it with the connection (Canceled); never internal.
    const reflection = calls.find((l) => l.procedure === REFLECTION);
    expect(["Canceled", "ok"]).toContain(reflection?.code);
    expect((await callCounts(t.url, WATCH)).canceled).toBe((watched.canceled ?? 0) + 1);
    const reflectedAfter = await callCounts(t.url, REFLECTION);
    const key = reflection?.code === "ok" ? "ok" : "canceled";
    expect(reflectedAfter[key]).toBe((reflected[key] ?? 0) + 1);
    expect(reflectedAfter.internal ?? 0).toBe(reflected.internal ?? 0);
  });
});

describe.each(DIALECTS)("many open streams, on %s", (dialect) => {
  it("shares the shutdown signal among 20 WatchTasks streams without a MaxListenersExceededWarning, and shuts down", async () => {
    const t = await startTestServer(dialect, { FOREMAN_STREAM_KEEPALIVE_SECONDS: "1" });
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => void warnings.push(warning);
    process.on("warning", onWarning);
    try {
      const workspace = await caller(t).workspace();
      const streams = Array.from({ length: 20 }, () => t.client(TaskService, "grpc").watchTasks({ workspaceId: workspace.id })[Symbol.asyncIterator]());
      // Each stream's first message (a keep-alive, a second in) means it is open on the server.
      await Promise.all(streams.map((s) => s.next()));
      await waitFor(async () => (await fetch(`${t.url}/metrics`).then((r) => r.text())).includes("foreman_rpc_streams_open 20"), "20 open streams");
      // A warning is emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.filter((w) => w.name === "MaxListenersExceededWarning")).toEqual([]);
      // Shutdown ends every stream cleanly.
      await t.server.close();
      const ends = await Promise.all(streams.map((s) => s.next().then((r) => r.done, () => "failed")));
      expect(ends.every((end) => end === true)).toBe(true);
    } finally {
      process.off("warning", onWarning);
      await t.close();
    }
  });
});
