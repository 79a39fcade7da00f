// The arguments of the daily verbs (task, logs, diff, ...), read as strictly as args.ts reads
// the others, with what those need beside it: flags that take no value (--json, -f), short
// names, and positionals that may be left out. main.ts loads it only for those verbs.
import { parseArgs } from "node:util";
import { UsageError } from "./errors.js";

export interface VerbGrammar {
  /** Options that take a value. */
  options?: readonly string[];
  /** Options that take none (--json); present, possibly empty, on every verb read here. */
  flags: readonly string[];
  /** One-letter names of options or flags, e.g. { f: "follow" }. */
  short?: Readonly<Record<string, string>>;
  /** Required positionals, in order. */
  positionals?: readonly string[];
  /** Positionals that may follow the required ones. */
  optional?: readonly string[];
}

export interface VerbArgs {
  values: Record<string, string | undefined>;
  flags: Record<string, boolean>;
  positionals: string[];
}

const HELP_FLAGS = ["-h", "--help"];

/** The arguments read by grammar, or "help" when they ask for help. */
export function readVerbArgs(args: string[], grammar: VerbGrammar): VerbArgs | "help" {
  const valued = grammar.options ?? [];
  const flags = grammar.flags;
  const required = grammar.positionals ?? [];
  const most = required.length + (grammar.optional ?? []).length;
  const end = args.indexOf("--");
  if ((end === -1 ? args : args.slice(0, end)).some((a) => HELP_FLAGS.includes(a) || a.startsWith("--help="))) return "help";

  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {};
  for (const name of valued) options[name] = { type: "string" };
  for (const name of flags) options[name] = { type: "boolean" };
  for (const [letter, name] of Object.entries(grammar.short ?? {})) if (options[name]) options[name].short = letter;

  const { tokens } = parseArgs({ args, options, allowPositionals: true, strict: false, tokens: true });
  const positionals = tokens.flatMap((t) => (t.kind === "positional" ? [t.value] : []));
  if (positionals.includes("help")) return "help";

  const known = (name: string) => valued.includes(name) || flags.includes(name);
  const unknown = tokens.flatMap((t) => (t.kind === "option" && !known(t.name) ? [`'${t.rawName}'`] : []));
  if (unknown.length > 0) throw new UsageError(`unknown option${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}`);
  for (const t of tokens) {
    if (t.kind !== "option") continue;
    if (flags.includes(t.name)) {
      if (t.inlineValue) throw new UsageError(`option '${t.rawName}' takes no value`);
      continue;
    }
    if (t.value === undefined) throw new UsageError(`option '${t.rawName}' needs a value`);
    if (!t.inlineValue && t.value.startsWith("-") && t.value !== "-") {
      throw new UsageError(`option '${t.rawName}' needs a value (for one that starts with '-', write ${t.rawName}=${t.value})`);
    }
  }
  const extra = positionals.slice(most).map((p) => `'${p}'`);
  if (extra.length > 0) throw new UsageError(`unexpected argument${extra.length > 1 ? "s" : ""} ${extra.join(", ")}`);
  if (positionals.length < required.length) throw new UsageError(`missing ${required.slice(positionals.length).join(" ")}`);

  const values: Record<string, string | undefined> = {};
  const set: Record<string, boolean> = Object.fromEntries(flags.map((name) => [name, false]));
  for (const t of tokens) {
    if (t.kind !== "option") continue;
    if (flags.includes(t.name)) set[t.name] = true;
    else values[t.name] = t.value;
  }
  return { values, flags: set, positionals };
}
