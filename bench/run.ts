// `npm run bench`: runs every benchmark and prints a table plus a one-line JSON summary each
// (`npm run bench -- --help` says what each runs and which BENCH_* variables tune it). Exits 1
// if any call failed or a hostile request took the server down, 2 on a bad argument or setting,
// and 130 (Ctrl-C) or 143 (SIGTERM) after stopping its servers and removing its temporary
// folders and databases (bench/cleanup.ts).
import { runAuth } from "./auth.js";
import { cleanUpAfterFailure, cleanUpOnSignals, interrupted } from "./cleanup.js";
import {
  cpuPressure,
  formatDispatchIdle,
  formatDispatchLatency,
  formatDispatchThroughput,
  idleGoalMet,
  LATENCY_GOAL_P99_MS,
  pressureNote,
  runDispatchIdle,
  runDispatchLatency,
  runDispatchThroughput,
  type Spread,
} from "./dispatch.js";
import { formatH2load, h2loadAvailable, runH2load } from "./h2load.js";
import { formatHostile, runHostile } from "./hostile.js";
import { FANOUT_IN_FLIGHT, fanoutGoals, formatCommandLatency, formatLogFanout, formatLogIngest, loadNote, runCommandLatency, runLogFanout, runLogIngest } from "./logs.js";
import { formatPool, POOL_WORKERS, runPool } from "./pool.js";
import { formatWatch, runWatch } from "./watch.js";
import { formatUnary, runUnary, type UnaryResult } from "./unary.js";
import { formatWorkspaces, runWorkspaces } from "./workspaces.js";

const BENCHMARKS = ["unary", "h2load", "auth", "watch", "hostile", "dispatch-latency", "dispatch-throughput", "dispatch-idle", "log-ingest", "log-fanout", "command-latency", "workspaces", "pool"] as const;

const HELP = `npm run bench [-- --help]

Runs the benchmarks one after another, each comparing its targets side by side in one run, and
prints a table and a one-line JSON summary per benchmark on stdout (progress goes to stderr).
Each starts the real server as a child process (SQLite in a temporary folder, single-user, the
defaults users get) unless it says otherwise. The figures never fail the test run; the exit code
is 1 only if a call failed or a hostile request took the server down.

  unary    GetWorkspace per protocol (Connect over HTTP/1.1, Connect over h2c, gRPC): req/s,
           latency, and the server's and the client's CPU per call
  h2load   what one call costs the server, measured from outside by h2load (Debian's
           nghttp2-client; skipped without it): the compiled server (npm start's defaults, and at
           FOREMAN_LOG_LEVEL=warn) beside a bare connect-node server answering the same bytes
  auth     what authentication costs per call: single-user (no check) beside multi-user (access
           JWT and login check), on SQLite and, when it answers, on PostgreSQL
  watch    WatchTasks fan-out to 10, 100 and 1000 streams: time until every stream has a change,
           server CPU per change
  hostile  the worst single requests (largest bodies full of violations, hostile JSON), each on a
           fresh server: answer size, time, memory growth, event-loop stall, survival
  dispatch-latency
           task created → a worker long-polling in GetTask has the assignment: p50/p99/max with
           idle workers waiting, tasks one at a time, on SQLite and, when it answers, PostgreSQL,
           beside a bare connect-node server that hands each task to a waiting poll from memory
           (goal: p99 ≤ 5 ms)
  dispatch-throughput
           claim + completion (GetTask, ReportStatus RUNNING and SUCCEEDED, no agent) by 1, 10
           and 100 workers draining pre-queued tasks, jobs/s, on PostgreSQL beside graphile-worker
           (get_job + complete_job per job, its own database on the same server), on SQLite, and
           against a bare connect-node server answering the same three calls from memory (what
           the calls alone allow) (goal: at least graphile-worker's jobs/s with 100 workers)
  dispatch-idle
           simulated workers in processes of their own, heartbeating at the default interval and
           long-polling GetTask for the default longest wait: registration time, server CPU (% of
           one core) and RSS, on SQLite and, when it answers, PostgreSQL, beside a bare
           connect-node server answering the same calls from memory (goal: under one core)
  log-ingest
           lines/s through AppendLogs in 50-line batches, one call in flight per writer, 1 and 4
           writers (each its own session), on SQLite and, when it answers, PostgreSQL
  log-fanout
           1, 10, 100 and 1000 StreamLog readers of one session (in processes of their own)
           while a worker appends 50-line batches: lines/s to all readers together, AppendLogs →
           reader latency p50/p99, peak server RSS (fresh servers for each number of readers),
           the server's and the readers' CPU, the machine's CPU pressure; beside a bare
           connect-node server streaming the same messages from memory (goals: ≥ 80% of the bare
           server's lines/s at 1000 readers, p99 ≤ 20 ms at 10 and ≤ 200 ms at 1000, RSS ≤ 300 MB
           at 1000)
  command-latency
           StopSession by the user → the stop_session command on the worker's open
           ReceiveCommands stream: p50/p99/max, on SQLite, and on PostgreSQL with the stream on a
           second replica of the same database (the NOTIFY path) (goal: within a second)
  workspaces
           a 5,000-file repository's workspace to a worker and a 100-file result back (issue 18),
           through Foreman's lease-checked git route (server started with
           FOREMAN_CONTACT_REMOTES=true) beside a plain git http-backend serving the same
           repository, each with isomorphic-git and the git command: first run's clone, the push,
           the second run's fetch (RequestChanges) of what is new and of nothing new: ms, bytes on
           the wire, the server's and its git processes' CPU (BENCH_WORKSPACE_REPEATS repeats,
           no discarded round; some 2 minutes a repeat on a busy 2-core machine)
  pool     the local worker pool foreman serve starts (2 workers, the command agent) on tasks
           whose prompt is \`echo hi\`, against a local git repository, one at a time (issue 19):
           CreateUnitTask answered → the first log line at a StreamLog reader p50/p99/min/max,
           and per session the wall time beyond the agent's own (start → end as the server
           records it, less sh's run) and the worker daemons' CPU (and their git's and sh's, and
           the server's), on SQLite and, when it answers, PostgreSQL, beside sh + plain git doing
           the same clone and checks by hand (BENCH_POOL_TASKS tasks a repeat, after 4
           discarded; some 30 s a repeat and target on a busy 2-core machine)

Quick mode, to see that everything runs (figures too short to compare):
  BENCH_DURATION_MS=500 BENCH_WARMUP_MS=0 BENCH_REPEATS=1 npm run bench

Environment:
  BENCH_ONLY              run one benchmark: ${BENCHMARKS.join(", ")} (default: all)
  BENCH_DURATION_MS       unary, h2load, auth, dispatch-latency: one measured window, ms (default
                          3000; h2load rounds to whole seconds); dispatch-throughput sizes its
                          drains to last about this long
  BENCH_WARMUP_MS         unary, h2load, auth: warm-up before each window, ms (default 1000; 0: none)
  BENCH_REPEATS           measured rounds per target, after one discarded round (default 5)
  BENCH_CONCURRENCY       calls in flight per target in unary and auth (default 32)
  BENCH_WATCH_CHANGES     task changes per watch window (default 50)
  BENCH_DISPATCH_WORKERS  idle workers waiting in dispatch-latency (default 10)
  BENCH_DISPATCH_JOBS     jobs per dispatch-throughput drain (default: what the warm-up drain's
                          rate gets through in BENCH_DURATION_MS, at least 100)
  BENCH_DISPATCH_IDLE_WORKERS    simulated workers in dispatch-idle (default 10000; 1000 when
                          BENCH_DURATION_MS is under 1000, as in quick mode)
  BENCH_DISPATCH_IDLE_WINDOW_MS  one dispatch-idle window, ms (default 10 × BENCH_DURATION_MS:
                          30000, the default longest poll; 5000 in quick mode)
  BENCH_DISPATCH_IDLE_PROCESSES  processes the simulated workers run in (default 2)
  BENCH_LOG_WRITERS       writer counts log-ingest compares (default 1,4)
  BENCH_LOG_READERS       reader counts log-fanout compares (default 1,10,100,1000; fewer, e.g.
                          1,10,100, to scale it down)
  BENCH_LOG_READER_PROCESSES  processes log-fanout's readers are spread over (default 2)
  BENCH_LOG_FANOUT_COMPILED  1: log-fanout builds dist/ and runs the project's server compiled,
                          as npm start does (default 0: src/ under tsx, which adds some 50 MB of
                          RSS; the bare server runs under tsx either way)
  BENCH_LOG_FANOUT_IN_FLIGHT  batches log-fanout's writer may be ahead of the slowest reader
                          (default 2; 1: each batch alone, the latency of one fan-out)
  BENCH_COMMAND_STOPS     stops per target in command-latency (default 50)
  BENCH_WORKSPACE_REPEATS  cycles per target and client in workspaces (default 3; BENCH_REPEATS
                          does not apply: one isomorphic-git clone of the repository takes ~30 s)
  BENCH_POOL_TASKS        tasks per repeat and target in pool (default 50; 10 when
                          BENCH_DURATION_MS is under 1000, as in quick mode)
  BENCH_SERVER_NODE_ARGS  flags for the servers' node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  BENCH_H2LOAD_BASELINE   another checkout (built) whose server h2load measures as one more row
  FOREMAN_BENCH_DATABASE_URL  the PostgreSQL auth and dispatch-* create their databases on
                          (default postgres://postgres@127.0.0.1:5432/postgres)

Ctrl-C (or SIGTERM) stops the servers and removes their temporary folders (foreman-bench-*,
foreman-h2load-*, and workspaces' foreman-git-remote-* under $TMPDIR or /tmp), the simulated workers'
processes, and the databases of auth and dispatch-*, then exits 130 (143 for SIGTERM).
`;

/** A comma-separated list of whole numbers, e.g. BENCH_LOG_READERS=1,10,100. */
function envList(name: string, fallback: number[], min: number, max: number): number[] {
  const raw = process.env[name]?.trim();
  if (raw === undefined || raw === "") return fallback;
  const values = raw.split(",").map((v) => Number(v.trim()));
  if (values.some((v) => !Number.isInteger(v) || v < min || v > max)) {
    throw new UsageError(`${name} must be whole numbers from ${min} to ${max} separated by commas, got "${raw}"`);
  }
  return values;
}

/** A mistake in how the bench was called: printed without a stack, exit code 2. */
class UsageError extends Error {}

function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name]?.trim();
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

/** The one benchmark BENCH_ONLY names, or undefined for all. */
function readOnly(): string | undefined {
  const only = process.env.BENCH_ONLY?.trim();
  if (only === undefined || only === "") return undefined;
  if (!(BENCHMARKS as readonly string[]).includes(only)) {
    throw new UsageError(`BENCH_ONLY must be one of ${BENCHMARKS.join(", ")}, got "${only}"`);
  }
  return only;
}

/**
 * The command line takes --help (or -h) and nothing else: true when it asks for help (anywhere,
 * as with the foreman command's verbs); any other argument is a UsageError naming it.
 */
function readArgs(args: string[]): boolean {
  if (args.some((arg) => arg === "--help" || arg === "-h")) return true;
  const [arg] = args;
  if (arg !== undefined) {
    throw new UsageError(`unknown argument ${JSON.stringify(arg)} (settings are BENCH_* environment variables; see npm run bench -- --help)`);
  }
  return false;
}

const round = (n: number, digits = 0) => Number(n.toFixed(digits));

async function main(): Promise<number> {
  if (readArgs(process.argv.slice(2))) {
    process.stdout.write(HELP);
    return 0;
  }
  const options = {
    durationMs: envInt("BENCH_DURATION_MS", 3000, 100, 600_000),
    warmupMs: envInt("BENCH_WARMUP_MS", 1000, 0, 60_000),
    repeats: envInt("BENCH_REPEATS", 5, 1, 100),
    concurrency: envInt("BENCH_CONCURRENCY", 32, 1, 1000),
  };
  const watchChanges = envInt("BENCH_WATCH_CHANGES", 50, 1, 10_000);
  const workspaceRepeats = envInt("BENCH_WORKSPACE_REPEATS", 3, 1, 100);
  const dispatchWorkers = envInt("BENCH_DISPATCH_WORKERS", 10, 1, 1000);
  const dispatchJobs = process.env.BENCH_DISPATCH_JOBS?.trim() ? envInt("BENCH_DISPATCH_JOBS", 0, 1, 1_000_000) : undefined;
  const idleWorkers = envInt("BENCH_DISPATCH_IDLE_WORKERS", options.durationMs < 1000 ? 1000 : 10_000, 1, 100_000);
  const idleWindowMs = envInt("BENCH_DISPATCH_IDLE_WINDOW_MS", Math.min(600_000, options.durationMs * 10), 100, 600_000);
  const idleProcesses = envInt("BENCH_DISPATCH_IDLE_PROCESSES", 2, 1, 64);
  const logWriters = envList("BENCH_LOG_WRITERS", [1, 4], 1, 64);
  const logReaders = envList("BENCH_LOG_READERS", [1, 10, 100, 1000], 1, 10_000);
  const logReaderProcesses = envInt("BENCH_LOG_READER_PROCESSES", 2, 1, 64);
  const logFanoutCompiled = envInt("BENCH_LOG_FANOUT_COMPILED", 0, 0, 1) === 1;
  const logFanoutInFlight = envInt("BENCH_LOG_FANOUT_IN_FLIGHT", FANOUT_IN_FLIGHT, 1, 1000);
  const commandStops = envInt("BENCH_COMMAND_STOPS", 50, 1, 10_000);
  const poolTasks = envInt("BENCH_POOL_TASKS", options.durationMs < 1000 ? 10 : 50, 1, 10_000);
  const only = readOnly();
  cleanUpOnSignals();
  let errors = 0;
  const report = (benchmark: string, method: string, result: UnaryResult, table: string) => {
    console.log(table);
    console.log(
      JSON.stringify({
        benchmark,
        method,
        ...options,
        results: result.results.map((r) => ({
          target: r.protocol,
          rps_median: round(r.rpsMedian),
          rps_min: round(r.rpsMin),
          rps_max: round(r.rpsMax),
          p50_ms: round(r.p50Ms, 3),
          p99_ms: round(r.p99Ms, 3),
          server_cpu_us_per_call: round(r.serverCpuMicrosPerCall),
          client_cpu_us_per_call: round(r.clientCpuMicrosPerCall),
          server_core_share: round(r.serverCoreShare, 2),
          client_core_share: round(r.clientCoreShare, 2),
          other_core_share: round(r.otherCoreShare, 2),
          calls: r.calls,
          errors: r.errors,
        })),
      }),
    );
    if (result.errors > 0) console.error(`${benchmark}: ${result.errors} calls failed`);
    errors += result.errors;
  };
  if (only === undefined || only === "unary") {
    process.stderr.write(`unary: starting the server and measuring (progress on stderr)\n`);
    const unary = await runUnary(options);
    report("unary", "foreman.v1.WorkspaceService/GetWorkspace", unary, formatUnary(unary));
  }
  if (only === undefined || only === "h2load") {
    if (!h2loadAvailable()) {
      console.log("h2load: skipped, h2load is not installed (Debian: apt-get install nghttp2-client)");
    } else {
      process.stderr.write(`h2load: the project's server beside a bare connect-node server (progress on stderr)\n`);
      const result = await runH2load(options);
      console.log(formatH2load(result));
      console.log(
        JSON.stringify({
          benchmark: "h2load",
          method: "foreman.v1.WorkspaceService/GetWorkspace over connect-h2c",
          durationMs: options.durationMs,
          warmupMs: options.warmupMs,
          repeats: options.repeats,
          cpu_ratio_to_bare: round(result.ratio, 2),
          results: result.rows.map((r) => ({
            target: r.target,
            rps_median: round(r.rpsMedian),
            rps_min: round(r.rpsMin),
            rps_max: round(r.rpsMax),
            server_cpu_us_per_call: round(r.cpuMicrosPerCallMedian),
            server_cpu_us_per_call_min: round(r.cpuMicrosPerCallMin),
            server_cpu_us_per_call_max: round(r.cpuMicrosPerCallMax),
            calls: r.calls,
            failed: r.failed,
          })),
        }),
      );
      if (result.failed > 0) console.error(`h2load: ${result.failed} calls failed`);
      errors += result.failed;
    }
  }
  if (only === undefined || only === "auth") {
    process.stderr.write(`auth: starting single-user and multi-user servers and measuring (progress on stderr)\n`);
    const auth = await runAuth(options);
    report(
      "auth",
      "foreman.v1.WorkspaceService/GetWorkspace over connect-h2c",
      auth,
      formatUnary(auth, "auth cost: GetWorkspace over connect-h2c, no check (single-user) vs access JWT + login check", "server"),
    );
  }
  if (only === undefined || only === "watch") {
    process.stderr.write(`watch: starting servers with 10, 100 and 1000 WatchTasks streams (progress on stderr)\n`);
    const watchOptions = { sizes: [10, 100, 1000], changes: watchChanges, repeats: options.repeats };
    const results = await runWatch(watchOptions);
    console.log(formatWatch(results, watchOptions));
    console.log(
      JSON.stringify({
        benchmark: "watch",
        method: "foreman.v1.TaskService/WatchTasks",
        changes: watchOptions.changes,
        repeats: watchOptions.repeats,
        results: results.map((r) => ({
          streams: r.watchers,
          p50_ms: round(r.p50Ms, 2),
          p99_ms: round(r.p99Ms, 2),
          server_cpu_us_per_change: round(r.serverCpuMicrosPerChange),
          changes_per_s: round(r.changesPerSecond, 1),
          errors: r.errors,
        })),
      }),
    );
    const failed = results.reduce((sum, r) => sum + r.errors, 0);
    if (failed > 0) console.error(`watch: ${failed} streams failed`);
    errors += failed;
  }
  if (only === undefined || only === "hostile") {
    process.stderr.write(`hostile: the worst single requests, each against a fresh server (progress on stderr)\n`);
    const results = await runHostile();
    console.log(formatHostile(results));
    console.log(
      JSON.stringify({
        benchmark: "hostile",
        results: results.map((r) => ({
          request: r.name,
          request_bytes: r.requestBytes,
          status: r.status ?? null,
          response_bytes: r.responseBytes,
          duration_ms: round(r.durationMs),
          peak_rss_growth_mb: round(r.rssGrowthMb, 1),
          max_healthz_ms: round(r.maxHealthzMs),
          survived: r.survived,
        })),
      }),
    );
    const down = results.filter((r) => !r.survived || r.status === undefined).length;
    if (down > 0) console.error(`hostile: ${down} requests went unanswered or took the server down`);
    errors += down;
  }
  const spread = (s: Spread, digits: number) => ({ median: round(s.median, digits), min: round(s.min, digits), max: round(s.max, digits) });
  const dispatchOptions = { durationMs: options.durationMs, warmupMs: options.warmupMs, repeats: options.repeats };
  if (only === undefined || only === "dispatch-latency") {
    process.stderr.write(`dispatch-latency: ${dispatchWorkers} workers long-polling, tasks created one at a time (progress on stderr)\n`);
    const latencyOptions = { ...dispatchOptions, workers: dispatchWorkers };
    const pressure = cpuPressure();
    const results = await runDispatchLatency(latencyOptions);
    const cpuPressureShare = pressure.stop();
    console.log(formatDispatchLatency(results, latencyOptions));
    console.log(pressureNote(cpuPressureShare));
    console.log(
      JSON.stringify({
        benchmark: "dispatch-latency",
        method: "foreman.v1.TaskService/CreateUnitTask → foreman.v1.WorkerService/GetTask",
        ...latencyOptions,
        cpu_pressure: cpuPressureShare === undefined ? null : round(cpuPressureShare, 2),
        goal_p99_ms: LATENCY_GOAL_P99_MS,
        results: results.map((r) => ({
          target: r.target,
          p50_ms: spread(r.p50Ms, 3),
          p99_ms: spread(r.p99Ms, 3),
          max_ms: round(r.maxMs, 3),
          create_p50_ms: round(r.createP50Ms, 3),
          after_answer_p50_ms: round(r.afterAnswerP50Ms, 3),
          after_answer_p99_ms: round(r.afterAnswerP99Ms, 3),
          goal_met: r.p99Ms.median <= LATENCY_GOAL_P99_MS,
          tasks: r.tasks,
          errors: r.errors,
        })),
      }),
    );
    const failed = results.reduce((sum, r) => sum + r.errors, 0);
    if (failed > 0) console.error(`dispatch-latency: ${failed} calls failed`);
    errors += failed;
  }
  if (only === undefined || only === "dispatch-throughput") {
    process.stderr.write(`dispatch-throughput: 1, 10 and 100 workers draining pre-queued tasks, beside graphile-worker (progress on stderr)\n`);
    const throughputOptions = { ...dispatchOptions, concurrencies: [1, 10, 100], jobs: dispatchJobs };
    const pressure = cpuPressure();
    const results = await runDispatchThroughput(throughputOptions);
    const cpuPressureShare = pressure.stop();
    console.log(formatDispatchThroughput(results, throughputOptions));
    console.log(pressureNote(cpuPressureShare));
    console.log(
      JSON.stringify({
        benchmark: "dispatch-throughput",
        method: "foreman.v1.WorkerService/GetTask + ReportStatus RUNNING + ReportStatus SUCCEEDED",
        ...dispatchOptions,
        jobs: dispatchJobs ?? null,
        cpu_pressure: cpuPressureShare === undefined ? null : round(cpuPressureShare, 2),
        results: results.map((r) => ({
          target: r.target,
          workers: r.workers,
          jobs_per_s: spread(r.jobsPerSecond, 0),
          server_cpu_us_per_job: r.serverCpuMicrosPerJob === undefined ? null : round(r.serverCpuMicrosPerJob),
          client_cpu_us_per_job: round(r.clientCpuMicrosPerJob),
          jobs: r.jobs,
          errors: r.errors,
        })),
      }),
    );
    const failed = results.reduce((sum, r) => sum + r.errors, 0);
    if (failed > 0) console.error(`dispatch-throughput: ${failed} calls failed`);
    errors += failed;
  }
  if (only === undefined || only === "dispatch-idle") {
    process.stderr.write(`dispatch-idle: ${idleWorkers} simulated workers heartbeating and long-polling (progress on stderr)\n`);
    const idleOptions = { ...dispatchOptions, workers: idleWorkers, windowMs: idleWindowMs, processes: idleProcesses };
    const pressure = cpuPressure();
    const results = await runDispatchIdle(idleOptions);
    const cpuPressureShare = pressure.stop();
    console.log(formatDispatchIdle(results, idleOptions));
    console.log(pressureNote(cpuPressureShare));
    console.log(
      JSON.stringify({
        benchmark: "dispatch-idle",
        method: "foreman.v1.WorkerService/Heartbeat + GetTask (long poll)",
        ...idleOptions,
        cpu_pressure: cpuPressureShare === undefined ? null : round(cpuPressureShare, 2),
        results: results.map((r) => ({
          target: r.target,
          workers: r.workers,
          registered: r.registered,
          registration_ms: round(r.registrationMs),
          server_core_percent: spread(r.serverCpuPercent, 1),
          goal_met: idleGoalMet(r),
          rss_mb: round(r.rssMb),
          peak_rss_mb: round(r.peakRssMb),
          heartbeats_per_s: round(r.heartbeatsPerSecond),
          polls_per_s: round(r.pollsPerSecond),
          full_rate_calls_per_s: round(r.expectedCallsPerSecond),
          server_cpu_us_per_call: round(r.serverCpuMicrosPerCall),
          full_rate_core_percent: round(r.projectedCpuPercent),
          workers_processes_core_percent: round(r.clientCpuPercent),
          errors: r.errors,
        })),
      }),
    );
    const failed = results.reduce((sum, r) => sum + r.errors, 0);
    if (failed > 0) console.error(`dispatch-idle: ${failed} calls failed`);
    errors += failed;
  }
  const logOptions = { durationMs: options.durationMs, warmupMs: options.warmupMs, repeats: options.repeats };
  if (only === undefined || only === "log-ingest") {
    process.stderr.write(`log-ingest: ${logWriters.join(", ")} writers appending 50-line batches (progress on stderr)\n`);
    const results = await runLogIngest({ ...logOptions, writers: logWriters });
    console.log(formatLogIngest(results, logOptions));
    console.log(loadNote());
    console.log(
      JSON.stringify({
        benchmark: "log-ingest",
        method: "foreman.v1.WorkerService/AppendLogs",
        ...logOptions,
        results: results.map((r) => ({
          target: r.target,
          writers: r.writers,
          lines_per_s: spread(r.linesPerSecond, 0),
          server_cpu_us_per_line: round(r.serverCpuMicrosPerLine, 1),
          errors: r.errors,
        })),
      }),
    );
    const failed = results.reduce((sum, r) => sum + r.errors, 0);
    if (failed > 0) console.error(`log-ingest: ${failed} calls failed`);
    errors += failed;
  }
  if (only === undefined || only === "log-fanout") {
    process.stderr.write(`log-fanout: ${logReaders.join(", ")} StreamLog readers, beside a bare connect-node server (progress on stderr)\n`);
    const pressure = cpuPressure();
    const fanoutOptions = { ...logOptions, readers: logReaders, processes: logReaderProcesses, compiled: logFanoutCompiled, inFlight: logFanoutInFlight };
    const results = await runLogFanout(fanoutOptions);
    const cpuPressureShare = pressure.stop();
    console.log(formatLogFanout(results, fanoutOptions));
    console.log(loadNote());
    console.log(pressureNote(cpuPressureShare));
    console.log(
      JSON.stringify({
        benchmark: "log-fanout",
        method: "foreman.v1.WorkerService/AppendLogs → foreman.v1.SessionService/StreamLog",
        ...logOptions,
        reader_processes: logReaderProcesses,
        compiled: logFanoutCompiled,
        in_flight: logFanoutInFlight,
        cpu_pressure: cpuPressureShare === undefined ? null : round(cpuPressureShare, 2),
        results: results.map((r) => ({
          target: r.target,
          readers: r.readers,
          lines_per_s: spread(r.linesPerSecond, 0),
          p50_ms: spread(r.p50Ms, 2),
          p99_ms: spread(r.p99Ms, 2),
          peak_rss_mb: round(r.peakRssMb),
          server_cpu_percent: round(r.serverCpuPercent),
          readers_cpu_percent: round(r.readersCpuPercent),
          cpu_pressure: r.cpuPressure === undefined ? null : round(r.cpuPressure, 2),
          goal_met: fanoutGoals(r, results.find((b) => b.readers === r.readers && !b.target.startsWith("foreman"))).met ?? null,
          errors: r.errors,
        })),
      }),
    );
    const failed = results.reduce((sum, r) => sum + r.errors, 0);
    if (failed > 0) console.error(`log-fanout: ${failed} streams failed`);
    errors += failed;
  }
  if (only === undefined || only === "command-latency") {
    process.stderr.write(`command-latency: ${commandStops} stops per target (progress on stderr)\n`);
    const results = await runCommandLatency({ stops: commandStops });
    console.log(formatCommandLatency(results));
    console.log(loadNote());
    console.log(
      JSON.stringify({
        benchmark: "command-latency",
        method: "foreman.v1.SessionService/StopSession → foreman.v1.WorkerService/ReceiveCommands",
        stops: commandStops,
        results: results.map((r) => ({
          target: r.target,
          stops: r.stops,
          p50_ms: round(r.p50Ms, 2),
          p99_ms: round(r.p99Ms, 2),
          max_ms: round(r.maxMs, 2),
          stop_call_p50_ms: round(r.stopCallP50Ms, 2),
          goal_met: r.maxMs <= 1000,
          errors: r.errors,
        })),
      }),
    );
    const failed = results.reduce((sum, r) => sum + r.errors, 0);
    if (failed > 0) console.error(`command-latency: ${failed} calls failed`);
    errors += failed;
  }
  if (only === undefined || only === "workspaces") {
    process.stderr.write(`workspaces: a 5,000-file repository through Foreman and a plain git http-backend, ${workspaceRepeats} repeats (progress on stderr)\n`);
    const pressure = cpuPressure();
    const result = await runWorkspaces({ repeats: workspaceRepeats });
    const cpuPressureShare = pressure.stop();
    console.log(formatWorkspaces(result));
    console.log(loadNote());
    console.log(pressureNote(cpuPressureShare));
    console.log(
      JSON.stringify({
        benchmark: "workspaces",
        repeats: result.repeats,
        files: result.files,
        tree_bytes: result.treeBytes,
        pack_bytes: result.packBytes,
        result_files: result.resultFiles,
        cpu_pressure: cpuPressureShare === undefined ? null : round(cpuPressureShare, 2),
        results: result.rows.map((r) => ({
          step: r.step,
          client: r.client,
          target: r.target,
          ms: spread(r.ms, 1),
          fetch_ms: r.transferMs === undefined ? null : spread(r.transferMs, 1),
          bytes_down: r.downBytes,
          bytes_up: r.upBytes,
          server_cpu_ms: spread(r.serverCpuMs, 1),
          git_cpu_ms: spread(r.gitCpuMs, 1),
          client_stall_max_ms: r.maxStallMs === undefined ? null : round(r.maxStallMs),
          samples: r.samples,
        })),
      }),
    );
    errors += result.errors;
  }
  if (only === undefined || only === "pool") {
    process.stderr.write(`pool: ${POOL_WORKERS} local workers running \`echo hi\` tasks, ${options.repeats} × ${poolTasks} per target (progress on stderr)\n`);
    const poolOptions = { tasks: poolTasks, repeats: options.repeats };
    const pressure = cpuPressure();
    const results = await runPool(poolOptions);
    const cpuPressureShare = pressure.stop();
    console.log(formatPool(results, poolOptions));
    console.log(loadNote());
    console.log(pressureNote(cpuPressureShare));
    const optional = (s: Spread | undefined, digits: number) => (s === undefined ? null : spread(s, digits));
    console.log(
      JSON.stringify({
        benchmark: "pool",
        method: "foreman.v1.TaskService/CreateUnitTask → foreman.v1.SessionService/StreamLog (local pool, command agent)",
        ...poolOptions,
        workers: POOL_WORKERS,
        cpu_pressure: cpuPressureShare === undefined ? null : round(cpuPressureShare, 2),
        results: results.map((r) => ({
          target: r.target,
          first_line_p50_ms: spread(r.firstLine.p50, 1),
          first_line_p99_ms: spread(r.firstLine.p99, 1),
          first_line_min_ms: spread(r.firstLine.min, 1),
          first_line_max_ms: spread(r.firstLine.max, 1),
          agent_line_p50_ms: spread(r.agentLineP50, 1),
          create_p50_ms: optional(r.createP50, 2),
          session_ms: spread(r.sessionMs, 1),
          agent_ms: spread(r.agentMs, 1),
          overhead_ms: spread(r.overheadMs, 1),
          worker_cpu_ms_per_session: optional(r.workerCpuMs, 1),
          worker_children_cpu_ms_per_session: spread(r.childrenCpuMs, 1),
          server_cpu_ms_per_session: optional(r.serverCpuMs, 1),
          tasks: r.tasks,
          errors: r.errors,
        })),
      }),
    );
    if (results.some((r) => r.errors > 0)) console.error(`pool: ${results.reduce((sum, r) => sum + r.errors, 0)} tasks failed`);
    errors += results.reduce((sum, r) => sum + r.errors, 0);
  }
  if (errors > 0) return 1;
  return 0;
}

try {
  process.exitCode = await main();
} catch (error) {
  if (error instanceof UsageError) {
    console.error(`bench: ${error.message}`);
    process.exitCode = 2;
  } else if (interrupted() === undefined) {
    // After Ctrl-C the servers are being stopped under the benchmark: its errors then are noise.
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
    process.exitCode = 1;
    // A failed benchmark's servers and clients would keep the run waiting: end them.
    await cleanUpAfterFailure();
    process.exit(1);
  }
}
