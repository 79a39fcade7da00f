// Masking a log batch's lines: every value of the task's secrets that appears in them is
// replaced by MASK before the batch is stored or streamed. What counts as appearing:
//  - the value itself, in a line's text or payload (also JSON-escaped, as a payload holds it);
//  - the value split across consecutive lines of one stream in one batch (a terminal wraps a
//    long line; a worker cuts output into lines where it likes): each stream's texts are
//    searched joined, and each line keeps its part of the match masked;
//  - each line of a multi-line value (a PEM key prints line by line);
//  - its base64, standard and URL-safe, padded or not, at any of the three alignments it can
//    have inside a longer encoding (`Authorization: Basic base64(user:token)`): the characters
//    that depend on the value alone are masked.
// Values (and lines of values) shorter than MASK_MIN_LENGTH characters are not masked: they
// would match everywhere, and are no secret worth the name.
import type { LogLine } from "../model/logs.js";

export const MASK = "***";
export const MASK_MIN_LENGTH = 6;
/** The base64 of a value shorter than this many characters (after the alignment trim) is not searched for. */
const BASE64_MIN_LENGTH = 8;

/** What to search for, longest first, so that a longer match is not cut by a shorter one inside it. */
export function maskPatterns(values: readonly string[]): string[] {
  const patterns = new Set<string>();
  for (const value of values) {
    if (value.length < MASK_MIN_LENGTH) continue;
    const forms = [value, ...value.split(/\r?\n|\r/).filter((line) => line.length >= MASK_MIN_LENGTH)];
    for (const form of forms) {
      patterns.add(form);
      const escaped = JSON.stringify(form).slice(1, -1);
      if (escaped !== form) patterns.add(escaped);
    }
    for (const encoded of base64Cores(Buffer.from(value, "utf8"))) {
      patterns.add(encoded);
      patterns.add(encoded.replace(/\+/g, "-").replace(/\//g, "_"));
    }
  }
  return [...patterns].sort((a, b) => b.length - a.length);
}

/** The value's base64 at each alignment, without the characters shared with the bytes around it. */
function base64Cores(bytes: Buffer): string[] {
  const cores: string[] = [];
  for (let offset = 0; offset < 3; offset++) {
    const encoded = Buffer.concat([Buffer.alloc(offset), bytes]).toString("base64").replace(/=+$/, "");
    // Characters 0-1 (offset 1) or 0-2 (offset 2) carry the bytes before; the last one, unless
    // the bytes end a 3-byte group, carries the bytes after.
    const lead = [0, 2, 3][offset]!;
    const tail = (offset + bytes.length) % 3 === 0 ? 0 : 1;
    const core = encoded.slice(lead, encoded.length - tail);
    if (core.length >= BASE64_MIN_LENGTH) cores.push(core);
  }
  return cores;
}

/** The [start, end) ranges of `text` that any pattern covers, merged and in order. */
function coveredRanges(text: string, patterns: readonly string[]): [number, number][] {
  const ranges: [number, number][] = [];
  for (const p of patterns) {
    for (let at = text.indexOf(p); at !== -1; at = text.indexOf(p, at + 1)) ranges.push([at, at + p.length]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  return merged;
}

/** `text` with each range (offsets relative to `base`, clipped to the text) replaced by MASK. */
function replaceRanges(text: string, base: number, ranges: readonly [number, number][]): string {
  let out = "";
  let at = 0;
  for (const [s, e] of ranges) {
    const start = Math.max(s - base, 0);
    const end = Math.min(e - base, text.length);
    if (end <= 0 || start >= text.length || end <= start) continue;
    out += text.slice(at, start) + MASK;
    at = end;
  }
  return out + text.slice(at);
}

export function maskText(text: string, patterns: readonly string[]): string {
  return patterns.length === 0 ? text : replaceRanges(text, 0, coveredRanges(text, patterns));
}

/** The batch's lines masked (new objects; the input is not changed). */
export function maskLines(lines: readonly LogLine[], patterns: readonly string[]): LogLine[] {
  if (patterns.length === 0) return [...lines];
  const out = lines.map((l) => ({ ...l }));
  const byStream = new Map<string, LogLine[]>();
  for (const l of out) {
    const group = byStream.get(l.stream);
    if (group === undefined) byStream.set(l.stream, [l]);
    else group.push(l);
  }
  for (const group of byStream.values()) {
    const ranges = coveredRanges(group.map((l) => l.text).join(""), patterns);
    if (ranges.length === 0) continue;
    let base = 0;
    for (const l of group) {
      const length = l.text.length;
      l.text = replaceRanges(l.text, base, ranges);
      base += length;
    }
  }
  for (const l of out) {
    if (l.payload === null) continue;
    const masked = maskText(l.payload, patterns);
    // A value spanning JSON syntax could leave the text unreadable; the line's text remains.
    l.payload = masked === l.payload || isJsonObject(masked) ? masked : null;
  }
  return out;
}

export function isJsonObject(text: string): boolean {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}
