// GET /metrics in the Prometheus text format: RPCs answered and their durations by procedure
// and code, streams open now, and the process's memory and CPU. Procedures are the contract's,
// and every path that names none counts as procedure="unknown", so the label sets stay bounded.
import { Code } from "@connectrpc/connect";

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

interface Counter {
  labels: string;
  count: number;
}

interface Histogram {
  labels: string;
  counts: number[];
  sum: number;
  count: number;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

export class Metrics {
  /** By procedure, then code. */
  private readonly calls = new Map<string, Map<string, Counter>>();
  /** By procedure. */
  private readonly durations = new Map<string, Histogram>();
  private openStreams = 0;

  /** Records a finished call; code is a Connect code name in snake case ("ok", "not_found"). */
  observeCall(procedure: string, code: string, seconds: number): void {
    // The label strings are made once per procedure and code, not on every call.
    let byCode = this.calls.get(procedure);
    if (byCode === undefined) this.calls.set(procedure, (byCode = new Map()));
    let counter = byCode.get(code);
    if (counter === undefined) {
      byCode.set(code, (counter = { labels: `procedure="${escapeLabel(procedure)}",code="${escapeLabel(code)}"`, count: 0 }));
    }
    counter.count++;
    let h = this.durations.get(procedure);
    if (h === undefined) {
      this.durations.set(procedure, (h = { labels: `procedure="${escapeLabel(procedure)}"`, counts: BUCKETS.map(() => 0), sum: 0, count: 0 }));
    }
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) h.counts[i]!++;
    h.sum += seconds;
    h.count++;
  }

  streamOpened(): void {
    this.openStreams++;
  }

  streamClosed(): void {
    this.openStreams--;
  }

  /** The exposition, with gauges the server reads at scrape time. */
  render(gauges: { name: string; help: string; value: number }[] = []): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);

    metric("foreman_rpc_calls_total", "counter", "RPCs answered, by procedure and code.");
    for (const byCode of this.calls.values()) for (const c of byCode.values()) lines.push(`foreman_rpc_calls_total{${c.labels}} ${c.count}`);

    metric("foreman_rpc_duration_seconds", "histogram", "Time to answer an RPC (a stream: until it ended), by procedure.");
    for (const h of this.durations.values()) {
      BUCKETS.forEach((le, i) => lines.push(`foreman_rpc_duration_seconds_bucket{${h.labels},le="${le}"} ${h.counts[i]}`));
      lines.push(`foreman_rpc_duration_seconds_bucket{${h.labels},le="+Inf"} ${h.count}`);
      lines.push(`foreman_rpc_duration_seconds_sum{${h.labels}} ${h.sum}`);
      lines.push(`foreman_rpc_duration_seconds_count{${h.labels}} ${h.count}`);
    }

    metric("foreman_rpc_streams_open", "gauge", "Server streams open now.");
    lines.push(`foreman_rpc_streams_open ${this.openStreams}`);
    for (const g of gauges) {
      metric(g.name, "gauge", g.help);
      lines.push(`${g.name} ${g.value}`);
    }

    const cpu = process.cpuUsage();
    metric("process_cpu_seconds_total", "counter", "User and system CPU time of the server process.");
    lines.push(`process_cpu_seconds_total ${(cpu.user + cpu.system) / 1e6}`);
    metric("process_resident_memory_bytes", "gauge", "Resident memory of the server process.");
    lines.push(`process_resident_memory_bytes ${process.memoryUsage.rss()}`);
    return `${lines.join("\n")}\n`;
  }
}

/** Connect's code names as the wire spells them ("not_found"). */
export function codeName(code: Code | undefined): string {
  if (code === undefined) return "ok";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}
