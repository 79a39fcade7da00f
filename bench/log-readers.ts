// StreamLog readers for bench/logs.ts's log-fanout, in a process of their own so that the
// readers' decoding is not the server's bottleneck (the bench starts several: BENCH_LOG_READER_PROCESSES).
// Opens BENCH_READERS_COUNT streams of session BENCH_READERS_SESSION at BENCH_READERS_URL from
// BENCH_READERS_AFTER, 90 to an HTTP/2 connection, and talks JSON lines with the bench
// (bench/children.ts): prints {"type":"up"} once every stream has its first message,
// {"type":"have","sequence":n} each time every stream of this process has batch n, and answers
// {"type":"take"} with {"type":"taken","lines":…,"latencies":[…],"errors":…}: what arrived since
// the last take. A batch's latency is this process's reading of the machine's shared clock when
// a stream has it, less the clock the bench stamped into its first line just before AppendLogs
// (machineClockMs: one clock for every process on the machine). A stream that fails is counted
// in errors and no longer waited for. Exits on SIGTERM or when its stdin closes.
import { setMaxListeners } from "node:events";
import { createClient, type Client } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import { SessionService } from "../gen/foreman/v1/session_pb.js";
import { machineClockMs, parentChannel } from "./children.js";

const url = process.env.BENCH_READERS_URL!;
const sessionId = process.env.BENCH_READERS_SESSION!;
const count = Number(process.env.BENCH_READERS_COUNT);
const afterSequence = Number(process.env.BENCH_READERS_AFTER ?? "0");
/** Node's HTTP/2 client assumes 100 streams per connection until the server says otherwise. */
const STREAMS_PER_CONNECTION = 90;
/** Stands for "every sequence" once no stream is left to wait for. */
const ALL = Number.MAX_SAFE_INTEGER;

let lines = 0;
let latencies: number[] = [];
let errors = 0;
/** Streams still reading, and how many of them have each sequence not yet everyone's. */
let live = count;
const have = new Map<number, number>();
let done = afterSequence;
let up = 0;

const tell = parentChannel<{ type: "take" }>((message) => {
  if (message.type !== "take") return;
  tell({ type: "taken", lines, latencies, errors });
  lines = 0;
  latencies = [];
});

function everyoneHas(sequence: number): void {
  have.delete(sequence);
  if (sequence <= done) return;
  done = sequence;
  tell({ type: "have", sequence });
}

function opened(): void {
  if (++up === count) tell({ type: "up" });
}

const controller = new AbortController();
setMaxListeners(count + 10, controller.signal);
const sessions: Http2SessionManager[] = [];
let client: Client<typeof SessionService> | undefined;
for (let i = 0; i < count; i++) {
  if (i % STREAMS_PER_CONNECTION === 0) {
    const session = new Http2SessionManager(url);
    sessions.push(session);
    client = createClient(SessionService, createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager: session }));
  }
  const reader = client!;
  void (async () => {
    let first = true;
    try {
      for await (const res of reader.streamLog({ sessionId, afterSequence }, { signal: controller.signal })) {
        const at = machineClockMs();
        if (first) opened();
        first = false;
        if (res.event.case !== "batch") continue;
        const batch = res.event.value;
        // The bench's stamp: "t=<machineClockMs()> batch <n>" (bench/logs.ts makeBatch).
        const sentAt = Number(batch.lines[0]!.text.slice(2, batch.lines[0]!.text.indexOf(" ")));
        latencies.push(Math.round((at - sentAt) * 1000) / 1000);
        lines += batch.lines.length;
        const n = (have.get(batch.sequence) ?? 0) + 1;
        if (n >= live) everyoneHas(batch.sequence);
        else have.set(batch.sequence, n);
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      errors++;
      if (errors === 1) process.stderr.write(`log-readers: a StreamLog failed: ${(error as Error).message}\n`);
      if (first) opened();
      // No longer waited for: sequences the others all have are everyone's now.
      live--;
      for (const [sequence, n] of [...have].sort((a, b) => a[0] - b[0])) if (n >= live) everyoneHas(sequence);
      if (live === 0) everyoneHas(ALL);
    }
  })();
}

process.on("SIGTERM", () => {
  controller.abort();
  for (const s of sessions) s.abort();
  process.exit(0);
});
