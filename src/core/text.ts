// The one check of the characters text from a client may hold. Names, titles, host names and
// versions are single-line: they show up in lists, terminals and log lines, where a line break,
// a control character or a bidi override would garble the line or disguise one name as another
// ("invoice\u202Eexe.pdf"). Multi-line text (descriptions, prompts) may hold line breaks, tabs and
// bidi marks, which right-to-left writing needs.

// C0 controls except tab, line feed and carriage return; DEL; C1 controls (U+0080–U+009F,
// NEL U+0085 among them), which terminals act on.
// eslint-disable-next-line no-control-regex -- control characters are what this refuses
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;
// Unpaired UTF-16 surrogates: not Unicode text, and not storable as UTF-8.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
// What ends or splits a line: tab, line feed, carriage return, line and paragraph separators.
const LINE_BREAK = /[\t\n\r\u2028\u2029]/;
// Bidi embeddings, overrides and isolates, and the invisible direction marks (LRM, RLM, ALM).
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

/** What is wrong with the characters of value, or undefined when nothing is. */
export function textProblem(value: string, opts: { singleLine: boolean }): string | undefined {
  if (CONTROL.test(value)) return "must not contain control characters";
  if (LONE_SURROGATE.test(value)) return "must not contain unpaired surrogates";
  if (opts.singleLine && LINE_BREAK.test(value)) return "must be a single line without tabs";
  if (opts.singleLine && BIDI.test(value)) return "must not contain bidirectional control characters";
  return undefined;
}

// The same sets, to replace or escape rather than refuse.
// eslint-disable-next-line no-control-regex -- control characters are what this replaces
const NOT_ON_ONE_LINE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const NOT_SINGLE_LINE = new RegExp(`${NOT_ON_ONE_LINE.source}+`, "g");
const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, "g");
const UNSAFE = new RegExp(`${NOT_ON_ONE_LINE.source}|${LONE_SURROGATE.source}`, "g");
const UNSAFE_OR_QUOTE = new RegExp(`${NOT_ON_ONE_LINE.source}|${LONE_SURROGATE.source}|["\\\\]`, "g");

/**
 * Text that cannot be refused (it comes from a third party, such as a webhook payload) made
 * single-line: each run of characters textProblem refuses there becomes one space, and an
 * unpaired surrogate U+FFFD.
 */
export function toSingleLine(value: string): string {
  return value.replace(NOT_SINGLE_LINE, " ").replace(LONE_SURROGATES, "\ufffd");
}

/** Cuts text to at most max characters (UTF-16 units, never splitting a pair), marking the cut. */
export function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  if (/[\ud800-\udbff]/.test(text[end - 1] ?? "")) end--;
  return `${text.slice(0, end)}…`;
}

function escapeChar(c: string): string {
  return c === '"' || c === "\\" ? `\\${c}` : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
}

/**
 * Text escaped to show on one line as it is: what would garble or disguise the line (controls,
 * line breaks, bidi controls) and unpaired surrogates (which also make encodeURIComponent, and
 * so a gRPC status message, throw) become \uXXXX; the rest is kept.
 */
export function escapeText(text: string): string {
  return text.replace(UNSAFE, escapeChar);
}

/**
 * A value from a request, for an error message or a log line: escaped, cut to max characters
 * and in double quotes. Input is never shown any other way.
 */
export function quote(value: string, max = 64): string {
  return `"${truncate(value, max).replace(UNSAFE_OR_QUOTE, escapeChar)}"`;
}
