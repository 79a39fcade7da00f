// untilClosed: a long-lived stream listens on its call's signal and the server's shutdown
// while it runs, and removes both listeners when it ends, however it ends.
import { getEventListeners } from "node:events";
import { createContextValues, createHandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { Shutdown, shutdownKey, untilClosed } from "../../src/api/context-keys.js";

function context(shutdown: Shutdown, request = new AbortController().signal) {
  return createHandlerContext({
    service: TaskService,
    method: TaskService.method.watchTasks,
    protocolName: "test",
    requestMethod: "POST",
    url: "http://localhost/foreman.v1.TaskService/WatchTasks",
    requestSignal: request,
    contextValues: createContextValues().set(shutdownKey, shutdown),
  });
}

/** A stream that yields once, then waits until its signal fires. */
async function* waiting(signal: AbortSignal): AsyncGenerator<number> {
  yield 1;
  if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

describe("untilClosed", () => {
  it("removes its listeners when the stream ends, is abandoned, or is shut down", async () => {
    const shutdown = new Shutdown();

    // Ends because its client went away.
    const client = new AbortController();
    const first = untilClosed(context(shutdown, client.signal), waiting);
    await first.next();
    expect(shutdown.size).toBe(1);
    expect(getEventListeners(client.signal, "abort").length).toBe(1);
    client.abort();
    expect(await first.next()).toEqual({ done: true, value: undefined });
    expect(shutdown.size).toBe(0);
    expect(getEventListeners(client.signal, "abort").length).toBe(0);

    // Abandoned by its reader (connect-es returns the generator when a write fails).
    const second = untilClosed(context(shutdown), waiting);
    await second.next();
    expect(shutdown.size).toBe(1);
    await second.return(undefined);
    expect(shutdown.size).toBe(0);

    // Many at once, all ended by the shutdown.
    const many = Array.from({ length: 20 }, () => untilClosed(context(shutdown), waiting));
    await Promise.all(many.map((s) => s.next()));
    expect(shutdown.size).toBe(20);
    shutdown.begin();
    expect((await Promise.all(many.map((s) => s.next()))).every((r) => r.done)).toBe(true);
    expect(shutdown.size).toBe(0);

    // Opened after the shutdown began: over at once, and nothing left listening.
    const late = untilClosed(context(shutdown), waiting);
    expect(await late.next()).toEqual({ done: true, value: undefined });
    expect(shutdown.size).toBe(0);
  });
});
