// GET /metrics: counts and durations of the calls the server answered, by procedure and code,
// and the streams open now, in the Prometheus text format.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { caller } from "../helpers/fixtures.js";
import { UNKNOWN_ID, expectCode } from "../helpers/rpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** The samples of the exposition, by series ("name{labels}"). */
async function scrape(url: string): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

const GET = '/foreman.v1.WorkspaceService/GetWorkspace';
const series = (name: string, procedure: string, extra = "") => `${name}{procedure="${procedure}"${extra}}`;

describe("GET /metrics", () => {
  let t: TestServer;

  beforeAll(async () => {
    t = await startTestServer("sqlite", { FOREMAN_STREAM_KEEPALIVE_SECONDS: "1" });
  });

  afterAll(async () => {
    await t?.close();
  });

  it("counts calls by procedure and code, with a duration histogram", async () => {
    const workspace = await caller(t).workspace({ name: "metrics" });
    for (let i = 0; i < 3; i++) await t.workspaces.getWorkspace({ id: workspace.id });
    for (let i = 0; i < 2; i++) await expectCode(t.workspaces.getWorkspace({ id: UNKNOWN_ID }), Code.NotFound);

    const samples = await scrape(t.url);
    expect(samples.get(series("foreman_rpc_calls_total", GET, ',code="ok"'))).toBe(3);
    expect(samples.get(series("foreman_rpc_calls_total", GET, ',code="not_found"'))).toBe(2);
    expect(samples.get(series("foreman_rpc_duration_seconds_count", GET))).toBe(5);
    expect(samples.get(series("foreman_rpc_duration_seconds_bucket", GET, ',le="+Inf"'))).toBe(5);
    // Buckets are cumulative: each holds at least the one before it.
    const buckets = [...samples].filter(([key]) => key.startsWith(`foreman_rpc_duration_seconds_bucket{procedure="${GET}"`)).map(([, n]) => n);
    expect(buckets.length).toBeGreaterThan(2);
    expect([...buckets].sort((a, b) => a - b)).toEqual(buckets);
    expect(samples.get("process_resident_memory_bytes")).toBeGreaterThan(0);
  });

  it("shows a stream as open while it runs, and counts it when it ends", async () => {
    const workspace = await caller(t).workspace({ name: "metrics stream" });
    const controller = new AbortController();
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const reading = (async () => {
      try {
        for await (const _ of t.client(TaskService).watchTasks({ workspaceId: workspace.id }, { signal: controller.signal })) started();
      } catch {
        // Cancelled below.
      }
    })();
    await running;
    const during = await scrape(t.url);
    expect(during.get("foreman_rpc_streams_open")).toBe(1);
    expect(during.get("foreman_task_watchers")).toBe(1);
    controller.abort();
    await reading;
    // The server notices the cancel on its side shortly after the client: wait for it.
    let after = await scrape(t.url);
    for (let i = 0; i < 100 && after.get("foreman_rpc_streams_open") !== 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      after = await scrape(t.url);
    }
    expect(after.get("foreman_rpc_streams_open")).toBe(0);
    expect(after.get("foreman_task_watchers")).toBe(0);
    expect(after.get(series("foreman_rpc_calls_total", "/foreman.v1.TaskService/WatchTasks", ',code="canceled"'))).toBe(1);
  });

  it("is not served when FOREMAN_METRICS is false", async () => {
    const off = await startTestServer("sqlite", { FOREMAN_METRICS: "false" });
    try {
      expect((await fetch(`${off.url}/metrics`)).status).toBe(404);
    } finally {
      await off.close();
    }
  });
});
