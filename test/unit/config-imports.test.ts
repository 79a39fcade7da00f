// Reading the configuration is something the CLI does too, so src/config.ts must load no server
// code: no auth/, core/, store/, db/ or server/ module, and no database driver.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");

it("src/config.ts loads no server code", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "foreman-imports-"));
  try {
    const file = path.join(dir, "imports.txt");
    const run = spawnSync(
      process.execPath,
      ["--import", "tsx", "--import", "./test/helpers/record-imports.mjs", "--input-type=module", "-e", 'await import("./src/config.ts");'],
      { cwd: ROOT, env: { ...process.env, FOREMAN_TEST_IMPORTS_FILE: file }, encoding: "utf8" },
    );
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    const modules = readFileSync(file, "utf8")
      .split("\n")
      .filter((line) => line.startsWith("file://"))
      .map((url) => path.relative(ROOT, new URL(url).pathname));
    expect(modules).toContain("src/config.ts");
    expect(modules.filter((m) => /^src\/(auth|core|store|db|server|api)\//.test(m) || /^node_modules\/(kysely|pg|better-sqlite3|pino)\//.test(m))).toEqual([]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
