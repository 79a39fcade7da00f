// The peer for log-fanout (bench/logs.ts): a bare connect-node server on h2c with no database
// and no auth. WorkerService.AppendLogs keeps the batches in memory and SessionService.StreamLog
// sends them to every reader (a keep-alive at once, the batches after after_sequence, then each
// new one), so the same readers get the same messages and the project's cost can be read off.
// It keeps a session's newest 512 batches, as the project's server keeps its readers' buffer
// (src/core/log-stream.ts BUFFER_SIZE), so that its memory does not grow with what was appended;
// a reader further behind skips to the oldest it has (the bench's readers never are).
// Run as its own process: `node --import tsx bench/bare-log-server.ts <port>`.
import http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { KeepAliveSchema } from "../gen/foreman/v1/common_pb.js";
import { SessionService, StreamLogResponseSchema, type LogBatch, type StreamLogResponse } from "../gen/foreman/v1/session_pb.js";
import { AppendLogsResponseSchema, WorkerService } from "../gen/foreman/v1/worker_pb.js";

const [portArg] = process.argv.slice(2);
if (portArg === undefined) {
  process.stderr.write("usage: bare-log-server.ts <port>\n");
  process.exit(2);
}

const KEPT = 512;

// One log per session id: its newest batches (batches[i] has sequence dropped + i + 1), the
// last sequence stored, and the readers waiting for the next batch.
interface Log {
  batches: LogBatch[];
  dropped: number;
  last: number;
  wake: Set<() => void>;
}
const logs = new Map<string, Log>();
const logOf = (sessionId: string) => {
  let log = logs.get(sessionId);
  if (log === undefined) logs.set(sessionId, (log = { batches: [], dropped: 0, last: 0, wake: new Set() }));
  return log;
};

const handler = connectNodeAdapter({
  // Uncompressed, as the project's server sends StreamLog: otherwise each reader's copy is gzipped.
  acceptCompression: [],
  routes: (router: ConnectRouter) => {
    router.service(WorkerService, {
      appendLogs(req) {
        const log = logOf(req.sessionId);
        for (const batch of req.batches) {
          if (batch.sequence !== log.last + 1) continue;
          log.batches.push(batch);
          log.last = batch.sequence;
        }
        if (log.batches.length > KEPT) {
          const over = log.batches.length - KEPT;
          log.batches.splice(0, over);
          log.dropped += over;
        }
        for (const wake of log.wake) wake();
        log.wake.clear();
        return create(AppendLogsResponseSchema, { storedSequence: log.last });
      },
    });
    router.service(SessionService, {
      async *streamLog(req, context) {
        const log = logOf(req.sessionId);
        yield create(StreamLogResponseSchema, { event: { case: "keepAlive", value: create(KeepAliveSchema) } });
        let next = req.afterSequence;
        // One abort listener per stream, not one per wait.
        let wakeUp: (() => void) | undefined;
        context.signal.addEventListener("abort", () => wakeUp?.(), { once: true });
        while (!context.signal.aborted) {
          while (next < log.last) {
            next = Math.max(next, log.dropped);
            const message: StreamLogResponse = create(StreamLogResponseSchema, { event: { case: "batch", value: log.batches[next - log.dropped]! } });
            next++;
            yield message;
          }
          await new Promise<void>((resolve) => {
            wakeUp = resolve;
            log.wake.add(resolve);
          });
        }
      },
    });
  },
});
const server = http2.createServer(handler);
server.listen(Number(portArg), "127.0.0.1", () => process.stdout.write("listening\n"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
