// `npm start` and `npm run migrate` build first; the build is incremental (tsc -b with its build
// info under dist/), so that a start with nothing changed skips it. This checks, on a tiny
// project under the repository's own package.json and tsconfig files, that the build still
// rebuilds after a change, and skips only when nothing changed (by tsc's own account, not a clock).
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");
const run = promisify(execFile);

describe("npm run build", () => {
  let dir: string;
  const source = () => path.join(dir, "src", "hello.ts");
  const output = () => path.join(dir, "dist", "src", "hello.js");
  const build = async (...args: string[]) => (await run("npm", ["run", "build", "--silent", "--", ...args], { cwd: dir })).stdout;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "foreman-build-"));
    for (const file of ["package.json", "tsconfig.json", "tsconfig.build.json"]) await copyFile(path.join(ROOT, file), path.join(dir, file));
    await symlink(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
    await mkdir(path.join(dir, "src"));
    await writeFile(source(), 'export const greeting = "hello";\n');
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("is what npm start and npm run migrate run first", async () => {
    const { scripts } = JSON.parse(await readFile(path.join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
    expect(scripts.start).toMatch(/^npm run build --silent && node dist\/src\/cli\/main\.js serve$/);
    expect(scripts.migrate).toMatch(/^npm run build --silent && node dist\/src\/cli\/main\.js migrate$/);
  });

  it("skips when nothing changed, and rebuilds after a change", async () => {
    await build();
    expect(await readFile(output(), "utf8")).toContain('"hello"');
    expect(await build("--verbose")).toMatch(/Project 'tsconfig\.build\.json' is up to date/);

    await writeFile(source(), 'export const greeting = "hello again";\n');
    // Past the build info for certain, whatever the file system's timestamp granularity.
    const info = await stat(path.join(dir, "dist", "tsconfig.build.tsbuildinfo"));
    const later = new Date(info.mtimeMs + 2000);
    await utimes(source(), later, later);
    expect(await build("--verbose")).toMatch(/is out of date/);
    expect(await readFile(output(), "utf8")).toContain('"hello again"');
    expect(await build("--verbose")).toMatch(/is up to date/);
  });
});
