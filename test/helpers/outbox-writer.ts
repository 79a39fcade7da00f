// A worker process that pushes lines through a LogOutbox, for a test to SIGKILL mid-stream.
// Usage: node --import tsx test/helpers/outbox-writer.ts '<OutboxWriterSettings as JSON>'
// It pushes lines "line 0" … "line <ackedLines - 1>", waits until they are acknowledged and
// prints {"event":"acked","stored":n}; on the stdin line "more" it pushes the rest up to
// totalLines, waits until every batch is in a file of dir and prints {"event":"written","files":n};
// then it waits to be killed.
import { readdir } from "node:fs/promises";
import { createInterface } from "node:readline";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LogStream } from "../../gen/foreman/v1/session_pb.js";
import { WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { LogOutbox } from "../../src/worker/outbox.js";

export interface OutboxWriterSettings {
  url: string;
  workerToken: string;
  sessionId: string;
  leaseToken: string;
  dir: string;
  ackedLines: number;
  totalLines: number;
  maxBatchLines: number;
}

const settings = JSON.parse(process.argv[2]!) as OutboxWriterSettings;
const bearer: Interceptor = (next) => (req) => {
  req.header.set("authorization", `Bearer ${settings.workerToken}`);
  return next(req);
};
const worker = createClient(WorkerService, createConnectTransport({ baseUrl: settings.url, httpVersion: "1.1", interceptors: [bearer] }));
const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(event)}\n`);

const outbox = await LogOutbox.open({
  dir: settings.dir,
  sessionId: settings.sessionId,
  leaseToken: settings.leaseToken,
  worker,
  maxBatchLines: settings.maxBatchLines,
  onError: (error) => say({ event: "error", error }),
});
for (let i = 0; i < settings.ackedLines; i++) outbox.push({ stream: LogStream.STDOUT, text: `line ${i}` });
await outbox.flush();
say({ event: "acked", stored: outbox.storedSequence });

const stdin = createInterface({ input: process.stdin });
stdin.on("line", (line) => {
  if (line !== "more") return;
  for (let i = settings.ackedLines; i < settings.totalLines; i++) outbox.push({ stream: LogStream.STDOUT, text: `line ${i}` });
  const expected = Math.ceil((settings.totalLines - settings.ackedLines) / settings.maxBatchLines);
  void (async () => {
    // The last batch is cut by the flush timer; every batch is then written, none acknowledged (the proxy is cut).
    for (;;) {
      const files = (await readdir(settings.dir)).filter((f) => f.endsWith(".batch"));
      if (files.length >= expected) return say({ event: "written", files: files.length });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
});
// The parent is gone.
stdin.on("close", () => process.exit(0));
