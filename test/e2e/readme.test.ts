// The README's promise, as a user meets it: in a copy of the checkout (its files as git sees
// them, with this checkout's node_modules standing in for `npm ci`, which CI runs on its clean
// clone before this suite), the start command's `npm start` builds and serves with its embedded
// defaults and local pool, and the README's first-task block, run by bash exactly as written,
// files a task, follows its log, shows its diff and approves it, and the branch reaches the
// repository. Only the port is set, so that the test cannot collide with a server of the machine.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../helpers/worker-processes.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const run = promisify(execFile);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The shell block that follows the marker comment naming this test. */
function blockAfterMarker(readme: string): string {
  const marker = readme.indexOf("<!-- test/e2e/readme.test.ts runs this block");
  if (marker === -1) throw new Error("README.md has no block marked for test/e2e/readme.test.ts");
  const match = /```sh\n([\s\S]*?)```/.exec(readme.slice(marker));
  if (match === null) throw new Error("no ```sh block after the marker");
  return match[1]!;
}

/** What .gitignore keeps out of a copy when the checkout is not a git repository. */
const IGNORED_TOP = new Set([".git", "node_modules", "dist", "data", ".foreman", "coverage"]);

/**
 * A copy of the checkout's files, with node_modules linked: the files git lists (tracked and new)
 * in a git checkout; in a copy without .git (scripts/with-node24.sh makes one) the tree less what
 * .gitignore names.
 */
async function copyOfCheckout(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "foreman-readme-"));
  const listed = await run("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 }).then(
    ({ stdout }) => stdout,
    () => undefined,
  );
  if (listed === undefined) {
    await cp(ROOT, dir, {
      recursive: true,
      filter: (from) => {
        const relative = path.relative(ROOT, from);
        return relative === "" || (!IGNORED_TOP.has(relative.split(path.sep)[0]!) && !relative.endsWith(".log"));
      },
    });
  } else {
    for (const file of listed.split("\0").filter((f) => f !== "" && !f.startsWith("node_modules/"))) {
      const to = path.join(dir, file);
      await mkdir(path.dirname(to), { recursive: true });
      await cp(path.join(ROOT, file), to).catch((error: NodeJS.ErrnoException) => {
        // A file git lists but the work tree deleted.
        if (error.code !== "ENOENT") throw error;
      });
    }
  }
  await symlink(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  return dir;
}

async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/healthz`)).status === 200;
  } catch {
    return false;
  }
}

describe("the README", () => {
  let dir: string;
  let server: ChildProcess | undefined;
  let output = "";
  let url: string;

  beforeAll(async () => {
    dir = await copyOfCheckout();
  }, 120_000);

  afterAll(async () => {
    if (server?.pid !== undefined && server.exitCode === null) {
      // npm, its shell and the server are one process group.
      process.kill(-server.pid, "SIGTERM");
      await new Promise((resolve) => server!.once("exit", resolve));
    }
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("starts with its start command and runs its first task as written", { timeout: 300_000 }, async () => {
    const readme = await readFile(path.join(ROOT, "README.md"), "utf8");
    expect(readme).toContain("```sh\nnpm ci && npm start\n```");
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FOREMAN_") && k !== "DATABASE_URL"));
    server = spawn("npm", ["start"], { cwd: dir, env: { ...env, FOREMAN_PORT: String(port) }, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    server.stdout!.setEncoding("utf8").on("data", (d: string) => (output += d));
    server.stderr!.setEncoding("utf8").on("data", (d: string) => (output += d));
    // The first start compiles the TypeScript, which takes a while on a busy machine.
    const deadline = Date.now() + 240_000;
    while (!(await healthy(url))) {
      if (server.exitCode !== null || Date.now() > deadline) throw new Error(`npm start did not serve at ${url}:\n${output}`);
      await sleep(250);
    }

    const block = blockAfterMarker(readme);
    const example = spawn("bash", ["-e", "-o", "pipefail", "-c", block], { cwd: dir, env: { ...env, FOREMAN_URL: url }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    example.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    example.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    const code = await new Promise<number | null>((resolve) => example.once("exit", (c) => resolve(c)));
    expect(code, `the README's first task failed:\n${out}\n${err}\nserver:\n${output.slice(-4000)}`).toBe(0);
    // The log's agent line, the diff's file, the approval, and the branch in the repository.
    expect(out).toMatch(/runs attempt 1 with command/);
    expect(out).toMatch(/hello\.txt/);
    expect(out).toMatch(/approved/i);
    expect(out).toMatch(/^[0-9a-f]{7,} .*echo hello > hello\.txt/m);
  });
});
