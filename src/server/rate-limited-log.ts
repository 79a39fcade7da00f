// A log line that any client can cause (a protocol mistake, a stream cut short) must not let
// that client flood the log: at most `perWindow` such lines per window, then one line saying
// how many more there were.
import type { Logger } from "../logger.js";

export class RateLimitedLog {
  private windowStart = -Infinity;
  private written = 0;
  private suppressed = 0;

  constructor(
    private readonly logger: Logger,
    private readonly level: "warn" | "info" | "debug",
    private readonly perWindow = 10,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  log(fields: Record<string, unknown>, message: string): void {
    const now = this.now();
    if (now - this.windowStart >= this.windowMs) {
      if (this.suppressed > 0) {
        this.logger[this.level]({ suppressed: this.suppressed, window_s: this.windowMs / 1000 }, `${this.suppressed} more lines like "${message}" were not logged`);
      }
      this.windowStart = now;
      this.written = 0;
      this.suppressed = 0;
    }
    if (this.written < this.perWindow) {
      this.written++;
      this.logger[this.level](fields, message);
    } else {
      this.suppressed++;
    }
  }
}
