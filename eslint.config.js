// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

/** Files matching `files` (but not `except`) may not import what `forbidden` matches (globs, or a RegExp). */
function layer(files, forbidden, message, except = []) {
  const patterns = forbidden.map((f) => (f instanceof RegExp ? { regex: f.source, message } : { group: [f], message }));
  return [{ files: [files], ignores: except, rules: { "no-restricted-imports": ["error", { patterns }] } }];
}

export default tseslint.config(
  { ignores: ["dist/", "gen/", "node_modules/", "coverage/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-console": "error",
    },
  },
  // The layers (DESIGN.md): server → api → core → store → db, with auth beside core. An arrow
  // that runs back up fails the lint.
  ...layer("src/api/**", ["../store/**", "../db/**", "../server/**", "../cli/**", "kysely", "pg", "better-sqlite3"], "api/ reaches the database only through core/"),
  ...layer("src/core/**", ["../api/**", "../server/**", "../cli/**"], "core/ knows nothing of the API or the server"),
  ...layer("src/store/**", ["../core/**", "../api/**", "../server/**", "../auth/**", "../cli/**"], "store/ holds SQL only; the rules live in core/"),
  // The domain's types and transitions, which core/ rules by and store/ builds: a leaf below both.
  ...layer("src/model/**", ["../**", "./**", "kysely"], "model/ is a leaf: the domain's types, importing nothing"),
  ...layer("src/auth/**", ["../core/**", "../model/**", "../api/**", "../server/**", "../store/**", "../db/**", "../cli/**"], "auth/ is tokens and OIDC only and imports no domain code"),
  // git operations (isomorphic-git): below core/, beside store/; the rules and errors stay in core/.
  ...layer("src/git/**", ["../core/**", "../model/**", "../api/**", "../server/**", "../store/**", "../db/**", "../auth/**", "../cli/**"], "git/ is repository operations only and imports no domain code"),
  ...layer("src/db/**", ["../core/**", "../model/**", "../api/**", "../server/**", "../store/**", "../auth/**", "../cli/**"], "db/ is the connection and the migrator"),
  ...layer("migrations/**", ["../src/**"], "migrations/ is the schema history; src/db/ imports it, not the other way"),
  // The client verbs talk to a server through gen/ and client/; only cli/serve.ts (serve,
  // migrate) loads the server, so `foreman whoami` starts without kysely or a database driver.
  ...layer(
    "src/cli/**",
    ["../server/**", "../db/**", "../store/**", "../core/**", "../model/**", "../api/**", "../auth/**", "../logger.js", "kysely", "pg", "better-sqlite3", "pino"],
    "the CLI's client verbs import only gen/, client/, worker/ and cli/ (cli/serve.ts is the server's verbs)",
    ["src/cli/serve.ts"],
  ),
  // Worker providers start `foreman worker` (local processes; later Docker containers): they
  // know the command line, not the daemon's code or the domain.
  ...layer(
    "src/providers/**",
    ["../worker/**", "../core/**", "../api/**", "../store/**", "../db/**", "../server/**", "../cli/**", "../auth/**", "../git/**", "../model/**"],
    "providers/ start worker daemons by their command line; they import neither worker/ nor core/",
  ),
  // The shared client (transport, stored login) of the CLI and the worker: gen/ only.
  ...layer(
    "src/client/**",
    ["../server/**", "../db/**", "../store/**", "../core/**", "../model/**", "../api/**", "../auth/**", "../git/**", "../cli/**", "../worker/**", "../logger.js", "kysely", "pg", "better-sqlite3", "pino"],
    "client/ is the shared client of the CLI and the worker: it imports gen/ only",
  ),
  // The worker daemon is a client like the CLI; from worker/agents/ the same folders are ../../,
  // hence the RegExp for any depth.
  ...layer(
    "src/worker/**",
    [/^(\.\.\/)+(server|db|store|core|model|api|auth|git|cli)(\/|$)/, /^(\.\.\/)+logger\.js$/, "kysely", "pg", "better-sqlite3"],
    "the worker daemon is a client of the public API: it imports gen/ and client/ only",
  ),
  {
    // Entry points and benchmarks print to the terminal on purpose.
    files: ["src/cli/**", "bench/**", "test/**"],
    rules: { "no-console": "off" },
  },
);
