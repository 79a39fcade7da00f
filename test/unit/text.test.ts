// Pure unit tests of the shared text check: which characters any text refuses, which more a
// single-line text (a name, title, host name, version) refuses, and the cleaning of text that
// cannot be refused (a webhook payload's titles).
import { describe, expect, it } from "vitest";
import { escapeText, quote, textProblem, toSingleLine, truncate } from "../../src/core/text.js";

describe("textProblem", () => {
  it.each(["plain", "Ünïcödé and 日本語", "emoji 👩‍💻 with a joiner", "فارسی\u200cمتن", "a - b_c.d"])("accepts %j on one line", (value) => {
    expect(textProblem(value, { singleLine: true })).toBeUndefined();
  });

  it("lets multi-line text hold line breaks, tabs and bidi marks", () => {
    expect(textProblem("one\ntwo\r\nthree\tfour\u2028five\u2029six", { singleLine: false })).toBeUndefined();
    expect(textProblem("עברית \u200f and \u2067isolated\u2069", { singleLine: false })).toBeUndefined();
  });

  it.each([
    ["NUL", "\u0000"],
    ["bell", "\u0007"],
    ["escape", "\u001b"],
    ["DEL", "\u007f"],
    ["a C1 control (U+0080)", "\u0080"],
    ["NEL (U+0085)", "\u0085"],
    ["a C1 control (U+009B, CSI)", "\u009b"],
    ["the last C1 control (U+009F)", "\u009f"],
  ])("refuses %s in any text", (_label, c) => {
    for (const singleLine of [true, false]) {
      expect(textProblem(`bad${c}text`, { singleLine })).toMatch(/control characters/);
    }
  });

  it.each([
    ["a lone high surrogate", "\ud800"],
    ["a lone low surrogate", "\udc00"],
    ["surrogates in the wrong order", "\udc00\ud800"],
  ])("refuses %s in any text", (_label, c) => {
    for (const singleLine of [true, false]) {
      expect(textProblem(`bad${c}text`, { singleLine })).toMatch(/surrogate/);
    }
  });

  it.each([
    ["a line feed", "\n"],
    ["a carriage return", "\r"],
    ["a tab", "\t"],
    ["a line separator (U+2028)", "\u2028"],
    ["a paragraph separator (U+2029)", "\u2029"],
  ])("refuses %s on one line", (_label, c) => {
    expect(textProblem(`two${c}lines`, { singleLine: true })).toMatch(/single line/);
  });

  it.each([
    ["LRE (U+202A)", "\u202a"],
    ["RLE (U+202B)", "\u202b"],
    ["PDF (U+202C)", "\u202c"],
    ["LRO (U+202D)", "\u202d"],
    ["RLO (U+202E)", "\u202e"],
    ["LRI (U+2066)", "\u2066"],
    ["RLI (U+2067)", "\u2067"],
    ["FSI (U+2068)", "\u2068"],
    ["PDI (U+2069)", "\u2069"],
    ["LRM (U+200E)", "\u200e"],
    ["RLM (U+200F)", "\u200f"],
    ["ALM (U+061C)", "\u061c"],
  ])("refuses the bidi control %s on one line", (_label, c) => {
    expect(textProblem(`name${c}gnp.exe`, { singleLine: true })).toMatch(/bidirectional/);
  });
});

describe("toSingleLine", () => {
  it("keeps safe text as it is", () => {
    expect(toSingleLine("Fix the 日本語 title 👩‍💻")).toBe("Fix the 日本語 title 👩‍💻");
  });

  it("turns each run of refused characters into one space, and a lone surrogate into U+FFFD", () => {
    expect(toSingleLine("a\u0000\nb\u2028c\u202ed\u0085e\u200ff\tg \ud800 h")).toBe("a b c d e f g \ufffd h");
  });

  it("leaves nothing textProblem would refuse on one line", () => {
    const hostile = "x\u0000\u0007\u001b\u007f\u0080\u0085\u009f\u2028\u2029\u202a\u202e\u2066\u2069\u200e\u200f\u061c\t\r\n\ud800\udc00y\udbff";
    expect(textProblem(toSingleLine(hostile), { singleLine: true })).toBeUndefined();
  });
});

describe("showing text on one line", () => {
  it("escapes controls, line breaks, bidi controls and lone surrogates, and keeps the rest", () => {
    expect(escapeText("ok \ud800 \udc00 😀 a\nb\u0085\u202e\u2028 é")).toBe("ok \\ud800 \\udc00 😀 a\\u000ab\\u0085\\u202e\\u2028 é");
  });

  it("quotes a value escaped, with its quotes and backslashes, cut to its length", () => {
    expect(quote('a"b\\c\u0000')).toBe('"a\\"b\\\\c\\u0000"');
    expect(quote("x".repeat(100), 10)).toBe(`"${"x".repeat(9)}…"`);
  });

  it("never cuts a surrogate pair in two", () => {
    expect(truncate("ab😀cd", 4)).toBe("ab…");
    expect(truncate("abc😀d", 5)).toBe("abc…");
    expect(truncate("short", 5)).toBe("short");
  });
});
