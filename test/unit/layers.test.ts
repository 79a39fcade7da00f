// The layers eslint.config.js enforces (its layer() rules), shown on small sources at virtual
// paths in each folder: every forbidden import is a no-restricted-imports error, and the
// arrows the design allows pass clean. The cases must cover every pattern the config lists
// for each folder, so a new rule without a case here fails.
import { fileURLToPath, pathToFileURL } from "node:url";
import { ESLint, type Linter } from "eslint";
import { beforeAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

interface Case {
  /** A file in the folder the rule is for. */
  file: string;
  /** The pattern in eslint.config.js (a glob group, or a RegExp's source) the import breaks. */
  pattern: string;
  specifier: string;
}

const WORKER_FOLDERS = "^(\\.\\.\\/)+(server|db|store|core|model|api|auth|git|cli)(\\/|$)";
const WORKER_LOGGER = "^(\\.\\.\\/)+logger\\.js$";

/** One wrong-way import per pattern of every folder's layer rule. */
const WRONG: Case[] = [
  { file: "src/api/x.ts", pattern: "../store/**", specifier: "../store/tasks.js" },
  { file: "src/api/x.ts", pattern: "../db/**", specifier: "../db/database.js" },
  { file: "src/api/x.ts", pattern: "../server/**", specifier: "../server/server.js" },
  { file: "src/api/x.ts", pattern: "../cli/**", specifier: "../cli/main.js" },
  { file: "src/api/x.ts", pattern: "kysely", specifier: "kysely" },
  { file: "src/api/x.ts", pattern: "pg", specifier: "pg" },
  { file: "src/api/x.ts", pattern: "better-sqlite3", specifier: "better-sqlite3" },

  { file: "src/core/x.ts", pattern: "../api/**", specifier: "../api/tasks.js" },
  { file: "src/core/x.ts", pattern: "../server/**", specifier: "../server/server.js" },
  { file: "src/core/x.ts", pattern: "../cli/**", specifier: "../cli/main.js" },

  { file: "src/store/x.ts", pattern: "../core/**", specifier: "../core/tasks.js" },
  { file: "src/store/x.ts", pattern: "../api/**", specifier: "../api/tasks.js" },
  { file: "src/store/x.ts", pattern: "../server/**", specifier: "../server/server.js" },
  { file: "src/store/x.ts", pattern: "../auth/**", specifier: "../auth/opaque-token.js" },
  { file: "src/store/x.ts", pattern: "../cli/**", specifier: "../cli/main.js" },

  { file: "src/model/x.ts", pattern: "../**", specifier: "../core/tasks.js" },
  { file: "src/model/x.ts", pattern: "./**", specifier: "./users.js" },
  { file: "src/model/x.ts", pattern: "kysely", specifier: "kysely" },

  { file: "src/auth/x.ts", pattern: "../core/**", specifier: "../core/logins.js" },
  { file: "src/auth/x.ts", pattern: "../model/**", specifier: "../model/users.js" },
  { file: "src/auth/x.ts", pattern: "../api/**", specifier: "../api/auth.js" },
  { file: "src/auth/x.ts", pattern: "../server/**", specifier: "../server/interceptor.js" },
  { file: "src/auth/x.ts", pattern: "../store/**", specifier: "../store/users.js" },
  { file: "src/auth/x.ts", pattern: "../db/**", specifier: "../db/database.js" },
  { file: "src/auth/x.ts", pattern: "../cli/**", specifier: "../cli/main.js" },

  { file: "src/git/x.ts", pattern: "../core/**", specifier: "../core/tasks.js" },
  { file: "src/git/x.ts", pattern: "../model/**", specifier: "../model/tasks.js" },
  { file: "src/git/x.ts", pattern: "../api/**", specifier: "../api/tasks.js" },
  { file: "src/git/x.ts", pattern: "../server/**", specifier: "../server/server.js" },
  { file: "src/git/x.ts", pattern: "../store/**", specifier: "../store/tasks.js" },
  { file: "src/git/x.ts", pattern: "../db/**", specifier: "../db/database.js" },
  { file: "src/git/x.ts", pattern: "../auth/**", specifier: "../auth/oidc.js" },
  { file: "src/git/x.ts", pattern: "../cli/**", specifier: "../cli/main.js" },

  { file: "src/db/x.ts", pattern: "../core/**", specifier: "../core/tasks.js" },
  { file: "src/db/x.ts", pattern: "../model/**", specifier: "../model/tasks.js" },
  { file: "src/db/x.ts", pattern: "../api/**", specifier: "../api/tasks.js" },
  { file: "src/db/x.ts", pattern: "../server/**", specifier: "../server/server.js" },
  { file: "src/db/x.ts", pattern: "../store/**", specifier: "../store/tasks.js" },
  { file: "src/db/x.ts", pattern: "../auth/**", specifier: "../auth/oidc.js" },
  { file: "src/db/x.ts", pattern: "../cli/**", specifier: "../cli/main.js" },

  { file: "migrations/x.ts", pattern: "../src/**", specifier: "../src/db/dialect.js" },

  { file: "src/cli/x.ts", pattern: "../server/**", specifier: "../server/server.js" },
  { file: "src/cli/x.ts", pattern: "../db/**", specifier: "../db/database.js" },
  { file: "src/cli/x.ts", pattern: "../store/**", specifier: "../store/tasks.js" },
  { file: "src/cli/x.ts", pattern: "../core/**", specifier: "../core/tasks.js" },
  { file: "src/cli/x.ts", pattern: "../model/**", specifier: "../model/tasks.js" },
  { file: "src/cli/x.ts", pattern: "../api/**", specifier: "../api/routes.js" },
  { file: "src/cli/x.ts", pattern: "../auth/**", specifier: "../auth/oidc.js" },
  { file: "src/cli/x.ts", pattern: "../logger.js", specifier: "../logger.js" },
  { file: "src/cli/x.ts", pattern: "kysely", specifier: "kysely" },
  { file: "src/cli/x.ts", pattern: "pg", specifier: "pg" },
  { file: "src/cli/x.ts", pattern: "better-sqlite3", specifier: "better-sqlite3" },
  { file: "src/cli/x.ts", pattern: "pino", specifier: "pino" },

  { file: "src/client/x.ts", pattern: "../server/**", specifier: "../server/server.js" },
  { file: "src/client/x.ts", pattern: "../db/**", specifier: "../db/database.js" },
  { file: "src/client/x.ts", pattern: "../store/**", specifier: "../store/tasks.js" },
  { file: "src/client/x.ts", pattern: "../core/**", specifier: "../core/tasks.js" },
  { file: "src/client/x.ts", pattern: "../model/**", specifier: "../model/tasks.js" },
  { file: "src/client/x.ts", pattern: "../api/**", specifier: "../api/routes.js" },
  { file: "src/client/x.ts", pattern: "../auth/**", specifier: "../auth/oidc.js" },
  { file: "src/client/x.ts", pattern: "../git/**", specifier: "../git/remote.js" },
  { file: "src/client/x.ts", pattern: "../cli/**", specifier: "../cli/main.js" },
  { file: "src/client/x.ts", pattern: "../worker/**", specifier: "../worker/agent-process.js" },
  { file: "src/client/x.ts", pattern: "../logger.js", specifier: "../logger.js" },
  { file: "src/client/x.ts", pattern: "kysely", specifier: "kysely" },
  { file: "src/client/x.ts", pattern: "pg", specifier: "pg" },
  { file: "src/client/x.ts", pattern: "better-sqlite3", specifier: "better-sqlite3" },
  { file: "src/client/x.ts", pattern: "pino", specifier: "pino" },

  { file: "src/providers/x.ts", pattern: "../worker/**", specifier: "../worker/daemon.js" },
  { file: "src/providers/x.ts", pattern: "../core/**", specifier: "../core/tasks.js" },
  { file: "src/providers/x.ts", pattern: "../api/**", specifier: "../api/routes.js" },
  { file: "src/providers/x.ts", pattern: "../store/**", specifier: "../store/tasks.js" },
  { file: "src/providers/x.ts", pattern: "../db/**", specifier: "../db/database.js" },
  { file: "src/providers/x.ts", pattern: "../server/**", specifier: "../server/server.js" },
  { file: "src/providers/x.ts", pattern: "../cli/**", specifier: "../cli/main.js" },
  { file: "src/providers/x.ts", pattern: "../auth/**", specifier: "../auth/oidc.js" },
  { file: "src/providers/x.ts", pattern: "../git/**", specifier: "../git/remote.js" },
  { file: "src/providers/x.ts", pattern: "../model/**", specifier: "../model/tasks.js" },

  // The worker daemon's rule is a RegExp, so that worker/agents/ is held to it at any depth.
  { file: "src/worker/x.ts", pattern: WORKER_FOLDERS, specifier: "../core/tasks.js" },
  { file: "src/worker/x.ts", pattern: WORKER_LOGGER, specifier: "../logger.js" },
  { file: "src/worker/x.ts", pattern: "kysely", specifier: "kysely" },
  { file: "src/worker/x.ts", pattern: "pg", specifier: "pg" },
  { file: "src/worker/x.ts", pattern: "better-sqlite3", specifier: "better-sqlite3" },
  { file: "src/worker/agents/x.ts", pattern: WORKER_FOLDERS, specifier: "../../core/tasks.js" },
  { file: "src/worker/agents/x.ts", pattern: WORKER_LOGGER, specifier: "../../logger.js" },
  { file: "src/worker/agents/x.ts", pattern: "kysely", specifier: "kysely" },
  { file: "src/worker/agents/x.ts", pattern: "pg", specifier: "pg" },
  { file: "src/worker/agents/x.ts", pattern: "better-sqlite3", specifier: "better-sqlite3" },
];

/** Every folder the worker may not reach, at any depth of ../ (the same folders as one pattern). */
const WORKER_REACHES = ["../server/server.js", "../db/database.js", "../store/tasks.js", "../model/tasks.js", "../api/routes.js", "../auth/oidc.js", "../git/remote.js", "../cli/main.js", "../../core/tasks.js", "../../cli/args.js", "../../logger.js"];

/** What each folder's rule says, so an error is seen to come from that folder's rule. */
const MESSAGES: Record<string, string> = {
  "src/api/": "api/ reaches the database only through core/",
  "src/core/": "core/ knows nothing of the API or the server",
  "src/store/": "store/ holds SQL only",
  "src/model/": "model/ is a leaf",
  "src/auth/": "auth/ is tokens and OIDC only",
  "src/git/": "git/ is repository operations only",
  "src/db/": "db/ is the connection and the migrator",
  "migrations/": "migrations/ is the schema history",
  "src/cli/": "the CLI's client verbs import only gen/, client/, worker/ and cli/",
  "src/client/": "client/ is the shared client of the CLI and the worker",
  "src/providers/": "providers/ start worker daemons by their command line",
  "src/worker/": "the worker daemon is a client of the public API",
  "src/worker/agents/": "the worker daemon is a client of the public API",
};

/** Arrows that point down, as the design has them: these must lint clean. */
const RIGHT: Omit<Case, "pattern">[] = [
  { file: "src/api/x.ts", specifier: "../core/tasks.js" },
  { file: "src/api/x.ts", specifier: "../model/tasks.js" },
  { file: "src/core/x.ts", specifier: "../store/tasks.js" },
  { file: "src/core/x.ts", specifier: "../auth/oidc.js" },
  { file: "src/core/x.ts", specifier: "../git/remote.js" },
  { file: "src/git/x.ts", specifier: "isomorphic-git" },
  { file: "src/core/x.ts", specifier: "../model/tasks.js" },
  { file: "src/store/x.ts", specifier: "../model/tasks.js" },
  { file: "src/store/x.ts", specifier: "../db/database.js" },
  { file: "src/store/x.ts", specifier: "kysely" },
  { file: "src/server/x.ts", specifier: "../api/tasks.js" },
  { file: "src/db/x.ts", specifier: "../../migrations/index.js" },
  { file: "src/db/x.ts", specifier: "kysely" },
  { file: "migrations/x.ts", specifier: "kysely" },
  { file: "src/cli/x.ts", specifier: "../../gen/foreman/v1/auth_pb.js" },
  { file: "src/cli/x.ts", specifier: "./client.js" },
  { file: "src/cli/x.ts", specifier: "../config.js" },
  // The server's own verbs load the server.
  { file: "src/cli/serve.ts", specifier: "../server/server.js" },
  { file: "src/cli/serve.ts", specifier: "../db/database.js" },
  { file: "src/worker/x.ts", specifier: "../../gen/foreman/v1/worker_pb.js" },
  { file: "src/worker/x.ts", specifier: "../client/client.js" },
  { file: "src/cli/x.ts", specifier: "../client/client.js" },
  { file: "src/cli/x.ts", specifier: "../worker/daemon.js" },
  { file: "src/client/x.ts", specifier: "../../gen/foreman/v1/auth_pb.js" },
  { file: "src/providers/x.ts", specifier: "node:child_process" },
  { file: "src/cli/serve.ts", specifier: "../providers/local.js" },
  { file: "src/worker/agents/x.ts", specifier: "../agent-process.js" },
  { file: "src/worker/agents/x.ts", specifier: "../../../gen/foreman/v1/worker_pb.js" },
];

/** A small source that imports the specifier and uses what it imports, so no other rule fires. */
const source = (specifier: string, typeOnly = false) =>
  `import ${typeOnly ? "type " : ""}{ thing } from ${JSON.stringify(specifier)};\nexport type Thing = typeof thing;\n`;

let eslint: ESLint;

beforeAll(() => {
  eslint = new ESLint({ cwd: ROOT });
});

async function lint(file: string, code: string): Promise<Linter.LintMessage[]> {
  const [result] = await eslint.lintText(code, { filePath: file });
  return result!.messages;
}

/** The patterns eslint.config.js forbids for a file, as `pattern` names them in the cases. */
async function forbiddenFor(file: string): Promise<string[]> {
  const config = (await eslint.calculateConfigForFile(file)) as Linter.Config;
  const rule = config.rules?.["no-restricted-imports"];
  if (!Array.isArray(rule)) return [];
  const { patterns } = rule[1] as { patterns: { group?: string[]; regex?: string }[] };
  return patterns.flatMap((p) => p.group ?? (p.regex === undefined ? [] : [p.regex]));
}

/** A file in each folder eslint.config.js gives a no-restricted-imports rule (`src/api/**` → src/api/x.ts). */
async function layeredFiles(): Promise<string[]> {
  const { default: configs } = (await import(pathToFileURL(`${ROOT}eslint.config.js`).href)) as { default: Linter.Config[] };
  return configs.filter((c) => c.rules?.["no-restricted-imports"] !== undefined).flatMap((c) => (c.files ?? []).map((glob) => String(glob).replace(/\*\*$/, "x.ts")));
}

describe("the layers eslint.config.js enforces", () => {
  it("has a wrong-way case here for every pattern of every folder's rule", async () => {
    const layered = await layeredFiles();
    expect(layered.length).toBeGreaterThanOrEqual(7);
    const files = [...new Set([...layered, ...WRONG.map((c) => c.file), ...RIGHT.map((c) => c.file)])];
    for (const file of files) {
      const cases = WRONG.filter((c) => c.file === file).map((c) => c.pattern);
      expect(cases.sort(), file).toEqual((await forbiddenFor(file)).sort());
    }
  });

  it.each(WRONG.map((c) => [c.file, c.specifier, c] as const))("%s importing %s is a no-restricted-imports error", async (_f, _s, c) => {
    const messages = await lint(c.file, source(c.specifier));
    expect(messages.map((m) => [m.ruleId, m.severity])).toEqual([["no-restricted-imports", 2]]);
    expect(messages[0]!.message).toContain(c.specifier);
    expect(messages[0]!.message).toContain(MESSAGES[c.file.replace(/x\.ts$/, "")]);
  });

  it.each(WORKER_REACHES)("src/worker/agents/x.ts importing %s is refused at any depth", async (specifier) => {
    const messages = await lint("src/worker/agents/x.ts", source(specifier));
    expect(messages.map((m) => [m.ruleId, m.severity])).toEqual([["no-restricted-imports", 2]]);
    expect(messages[0]!.message).toContain(MESSAGES["src/worker/"]);
  });

  it("catches a type-only import the same way", async () => {
    const messages = await lint("src/api/x.ts", source("../store/tasks.js", true));
    expect(messages.map((m) => m.ruleId)).toEqual(["no-restricted-imports"]);
  });

  it.each(RIGHT.map((c) => [c.file, c.specifier] as const))("%s importing %s lints clean", async (file, specifier) => {
    expect(await lint(file, source(specifier))).toEqual([]);
  });
});
