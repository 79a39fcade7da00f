// A verb's arguments, read strictly: -h, --help or a bare `help` anywhere asks for its help;
// an unknown option, a missing value or an argument too many is a UsageError naming it.
import { parseArgs } from "node:util";
import { UsageError } from "./errors.js";

export interface Grammar {
  /** The verb's options; each takes a value. */
  options?: readonly string[];
  /** The names of its positional arguments, each required (e.g. ["ID"]). */
  positionals?: readonly string[];
}

export interface Parsed {
  values: Record<string, string | undefined>;
  positionals: string[];
}

const HELP_FLAGS = ["-h", "--help"];

/** The arguments read by grammar, or "help" when they ask for help. */
export function readArgs(args: string[], grammar: Grammar): Parsed | "help" {
  const names = grammar.options ?? [];
  const wanted = grammar.positionals ?? [];
  // Before `--`, a help flag wins even where it would be taken as another option's value
  // (`--name --help`); a bare `help` counts only as a positional, so `--name help` is a name.
  const end = args.indexOf("--");
  if ((end === -1 ? args : args.slice(0, end)).some((a) => HELP_FLAGS.includes(a) || a.startsWith("--help="))) return "help";
  const options = Object.fromEntries(names.map((name) => [name, { type: "string" as const }]));
  const { tokens } = parseArgs({ args, options, allowPositionals: true, strict: false, tokens: true });
  const positionals = tokens.flatMap((t) => (t.kind === "positional" ? [t.value] : []));
  if (positionals.includes("help")) return "help";

  const unknown = tokens.flatMap((t) => (t.kind === "option" && !names.includes(t.name) ? [`'${t.rawName}'`] : []));
  if (unknown.length > 0) throw new UsageError(`unknown option${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}`);
  for (const t of tokens) {
    if (t.kind !== "option") continue;
    if (t.value === undefined) throw new UsageError(`option '${t.rawName}' needs a value`);
    // Strict parseArgs refuses `--ttl -5` as ambiguous; say how to mean it.
    if (!t.inlineValue && t.value.startsWith("-")) {
      throw new UsageError(`option '${t.rawName}' needs a value (for one that starts with '-', write ${t.rawName}=${t.value})`);
    }
  }
  const extra = positionals.slice(wanted.length).map((p) => `'${p}'`);
  if (extra.length > 0) throw new UsageError(`unexpected argument${extra.length > 1 ? "s" : ""} ${extra.join(", ")}`);
  if (positionals.length < wanted.length) throw new UsageError(`missing ${wanted.slice(positionals.length).join(" ")}`);

  // Everything strict parsing refuses was refused above, with its name; this reads the values.
  const parsed = parseArgs({ args, options, allowPositionals: wanted.length > 0, strict: true });
  return { values: parsed.values as Record<string, string | undefined>, positionals: parsed.positionals };
}
