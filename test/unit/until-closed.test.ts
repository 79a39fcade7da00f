// untilClosed: a long-lived stream listens on its call's signal and the shared shutdown signal
// while it runs, and removes both listeners when it ends, however it ends.
import { getEventListeners, setMaxListeners } from "node:events";
import { createContextValues, createHandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { shutdownSignalKey, untilClosed } from "../../src/api/context-keys.js";

function context(shutdown: AbortSignal, request = new AbortController().signal) {
  return createHandlerContext({
    service: TaskService,
    method: TaskService.method.watchTasks,
    protocolName: "test",
    requestMethod: "POST",
    url: "http://localhost/foreman.v1.TaskService/WatchTasks",
    requestSignal: request,
    contextValues: createContextValues().set(shutdownSignalKey, shutdown),
  });
}

/** A stream that yields once, then waits until its signal fires. */
async function* waiting(signal: AbortSignal): AsyncGenerator<number> {
  yield 1;
  if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

describe("untilClosed", () => {
  it("removes its shutdown listener when the stream ends, is abandoned, or is shut down", async () => {
    const shutdown = new AbortController();
    setMaxListeners(0, shutdown.signal); // as server/compose.ts does
    const listeners = () => getEventListeners(shutdown.signal, "abort").length;

    // Ends because its client went away.
    const client = new AbortController();
    const first = untilClosed(context(shutdown.signal, client.signal), waiting);
    await first.next();
    expect(listeners()).toBe(1);
    client.abort();
    expect(await first.next()).toEqual({ done: true, value: undefined });
    expect(listeners()).toBe(0);

    // Abandoned by its reader (connect-es returns the generator when a write fails).
    const second = untilClosed(context(shutdown.signal), waiting);
    await second.next();
    expect(listeners()).toBe(1);
    await second.return(undefined);
    expect(listeners()).toBe(0);

    // Many at once, all ended by the shutdown.
    const many = Array.from({ length: 20 }, () => untilClosed(context(shutdown.signal), waiting));
    await Promise.all(many.map((s) => s.next()));
    expect(listeners()).toBe(20);
    shutdown.abort();
    expect((await Promise.all(many.map((s) => s.next()))).every((r) => r.done)).toBe(true);
    expect(listeners()).toBe(0);
  });
});
