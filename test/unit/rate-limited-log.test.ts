import { describe, expect, it } from "vitest";
import { createLogger } from "../../src/logger.js";
import { RateLimitedLog } from "../../src/server/rate-limited-log.js";

describe("RateLimitedLog", () => {
  it("writes at most perWindow lines a window, then says how many it dropped", () => {
    const lines: { level: number; msg: string; suppressed?: number }[] = [];
    const logger = createLogger("trace", { write: (l: string) => void lines.push(JSON.parse(l) as never) });
    let now = 0;
    const log = new RateLimitedLog(logger, "warn", 3, 1000, () => now);
    for (let i = 0; i < 10; i++) log.log({ i }, "stream cut short");
    expect(lines.map((l) => l.msg)).toEqual(["stream cut short", "stream cut short", "stream cut short"]);
    expect(lines.every((l) => l.level === 40)).toBe(true);
    now = 1000;
    log.log({ i: 10 }, "stream cut short");
    expect(lines[3]).toMatchObject({ level: 40, suppressed: 7 });
    expect(lines[4]).toMatchObject({ msg: "stream cut short" });
    now = 2500;
    log.log({}, "stream cut short");
    // Nothing was dropped in the last window: no summary line.
    expect(lines).toHaveLength(6);
  });
});
