// The masking rules of core/log-masking.ts on their own: the value, split across lines, each
// line of a multi-line value, JSON-escaped, and its base64 at every alignment inside a longer
// encoding; short values are left alone.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { MASK_MIN_LENGTH, maskLines, maskPatterns, maskText } from "../../src/core/log-masking.js";
import type { LogLine } from "../../src/model/logs.js";

const out = (text: string, stream: LogLine["stream"] = "stdout"): LogLine => ({ stream, kind: "text", text, time: null, payload: null });

describe("log masking", () => {
  const secret = `s3cr3t-${randomBytes(12).toString("hex")}`;
  const patterns = maskPatterns([secret]);

  it("masks the value wherever it appears, and each occurrence", () => {
    expect(maskText(`a ${secret} b ${secret}${secret}`, patterns)).toBe("a *** b ***");
    expect(maskText("nothing here", patterns)).toBe("nothing here");
  });

  it("masks the base64 of the value at each of the three alignments inside a longer encoding, standard and URL-safe", () => {
    for (const prefix of ["", "u", "us", "use", "user:"]) {
      for (const suffix of ["", "x", "xy", "@host"]) {
        const encoded = Buffer.from(`${prefix}${secret}${suffix}`);
        for (const text of [encoded.toString("base64"), encoded.toString("base64url")]) {
          const masked = maskText(text, patterns);
          expect(masked, `${prefix}|${suffix}`).toContain("***");
          // What is left is the few characters that carry the bytes around it.
          expect(masked.replace("***", "").length, `${prefix}|${suffix}`).toBeLessThanOrEqual(Math.ceil(((prefix.length + suffix.length) * 4) / 3) + 6);
        }
      }
    }
  });

  it("masks a value split across consecutive lines of one stream, not across streams", () => {
    const lines = [out(`x ${secret.slice(0, 9)}`), out("between", "stderr"), out(`${secret.slice(9)} y`)];
    expect(maskLines(lines, patterns).map((l) => l.text)).toEqual(["x ***", "between", "*** y"]);
    const crossed = [out(`x ${secret.slice(0, 9)}`, "stdout"), out(`${secret.slice(9)} y`, "stderr")];
    expect(maskLines(crossed, patterns).map((l) => l.text)).toEqual(crossed.map((l) => l.text));
    // The input lines are not changed.
    expect(lines[0]!.text).toBe(`x ${secret.slice(0, 9)}`);
  });

  it("masks each line of a multi-line value, and a JSON-escaped value in a payload", () => {
    const middle = randomBytes(16).toString("hex");
    const pem = `-----BEGIN-----\n${middle}\n-----END-----`;
    expect(maskText(`printed: ${middle}`, maskPatterns([pem]))).toBe("printed: ***");
    const quoted = `pa"ss\\word-${randomBytes(4).toString("hex")}`;
    const [line] = maskLines([{ ...out("call"), kind: "tool_call", payload: JSON.stringify({ password: quoted }) }], maskPatterns([quoted]));
    expect(JSON.parse(line!.payload!)).toEqual({ password: "***" });
  });

  it(`leaves values shorter than ${MASK_MIN_LENGTH} characters alone`, () => {
    const short = "a".repeat(MASK_MIN_LENGTH - 1);
    expect(maskPatterns([short, ""])).toEqual([]);
    expect(maskText(`x ${short} y`, maskPatterns([short]))).toBe(`x ${short} y`);
    expect(maskText("x abcdef y", maskPatterns(["abcdef"]))).toBe("x *** y");
  });
});
