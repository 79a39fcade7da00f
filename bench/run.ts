// `npm run bench`: runs every benchmark and prints a table plus a one-line JSON summary each.
// Quick run: BENCH_DURATION_MS=500 BENCH_REPEATS=1 npm run bench; one benchmark: BENCH_ONLY=unary,
// h2load, auth, watch or hostile. Exits 1 if any call failed or a hostile request took the server down.
import { runAuth } from "./auth.js";
import { formatH2load, h2loadAvailable, runH2load } from "./h2load.js";
import { formatHostile, runHostile } from "./hostile.js";
import { formatWatch, runWatch } from "./watch.js";
import { formatUnary, runUnary, type UnaryResult } from "./unary.js";

function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name]?.trim();
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

const round = (n: number, digits = 0) => Number(n.toFixed(digits));

async function main(): Promise<number> {
  const options = {
    durationMs: envInt("BENCH_DURATION_MS", 3000, 100, 600_000),
    warmupMs: envInt("BENCH_WARMUP_MS", 1000, 0, 60_000),
    repeats: envInt("BENCH_REPEATS", 5, 1, 100),
    concurrency: envInt("BENCH_CONCURRENCY", 32, 1, 1000),
  };
  const only = process.env.BENCH_ONLY?.trim();
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
  if (only === undefined || only === "" || only === "unary") {
    process.stderr.write(`unary: starting the server and measuring (progress on stderr)\n`);
    const unary = await runUnary(options);
    report("unary", "foreman.v1.WorkspaceService/GetWorkspace", unary, formatUnary(unary));
  }
  if (only === undefined || only === "" || only === "h2load") {
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
  if (only === undefined || only === "" || only === "auth") {
    process.stderr.write(`auth: starting single-user and multi-user servers and measuring (progress on stderr)\n`);
    const auth = await runAuth(options);
    report(
      "auth",
      "foreman.v1.WorkspaceService/GetWorkspace over connect-h2c",
      auth,
      formatUnary(auth, "auth cost: GetWorkspace over connect-h2c, no check (single-user) vs access JWT + login check", "server"),
    );
  }
  if (only === undefined || only === "" || only === "watch") {
    process.stderr.write(`watch: starting servers with 10, 100 and 1000 WatchTasks streams (progress on stderr)\n`);
    const watchOptions = { sizes: [10, 100, 1000], changes: envInt("BENCH_WATCH_CHANGES", 50, 1, 10_000), repeats: options.repeats };
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
  if (only === undefined || only === "" || only === "hostile") {
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
  if (errors > 0) return 1;
  return 0;
}

try {
  process.exitCode = await main();
} catch (error) {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
}
