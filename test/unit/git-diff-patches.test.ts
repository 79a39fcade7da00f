// src/git/diff.ts filePatches: a page's patches from one git command, split per file, the same
// as reading each file on its own, whatever the paths hold (spaces, glob characters, quotes,
// non-ASCII), with renames, binary files, a type change and the per-file cut.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, renameSync, unlinkSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CUT_MARKER, changedFiles, filePatches, unifiedDiff } from "../../src/git/diff.js";

const dir = mkdtempSync(path.join(tmpdir(), "foreman-diff-patches-"));
const env = { ...process.env, GIT_CONFIG_GLOBAL: "/dev/null", GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" };
const git = (...args: string[]) => execFileSync("git", ["-C", dir, ...args], { env }).toString().trim();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("filePatches", () => {
  git("init", "-q", "-b", "main");
  const names = ["with space.txt", "star*.txt", "starX.txt", 'quo"te.txt', "ümlaut.txt", "type.txt", ":(top)magic.txt", "moved.txt", "big.txt"];
  for (const name of names) writeFileSync(path.join(dir, name), `${name} one\nsame\nsame\nsame\nsame\n`);
  git("add", "-A");
  git("commit", "-q", "-m", "base");
  const base = git("rev-parse", "HEAD");
  for (const name of names) writeFileSync(path.join(dir, name), `${name} two\nsame\nsame\nsame\nsame\n`);
  unlinkSync(path.join(dir, "type.txt"));
  symlinkSync("starX.txt", path.join(dir, "type.txt"));
  writeFileSync(path.join(dir, "moved.txt"), "moved.txt one\nsame\nsame\nsame\nsame\n");
  renameSync(path.join(dir, "moved.txt"), path.join(dir, "now here.txt"));
  writeFileSync(path.join(dir, "big.txt"), "y\n".repeat(10_000));
  writeFileSync(path.join(dir, "blob.bin"), Buffer.from([0, 1, 2, 0, 255]));
  git("add", "-A");
  git("commit", "-q", "-m", "head");
  const head = git("rev-parse", "HEAD");
  const gitDir = path.join(dir, ".git");

  it("gives each file's patch as reading it alone does, in the order given, with one command for the plain paths", async () => {
    const files = await changedFiles(gitDir, base, head);
    expect(files.map((f) => [f.path, f.status])).toContainEqual(["now here.txt", "renamed"]);
    const patches = await filePatches(gitDir, base, head, files, 4000);
    expect(patches).toHaveLength(files.length);
    for (const [i, file] of files.entries()) {
      const alone = await unifiedDiff(gitDir, base, head, [file], { maxFileBytes: 4000, maxTotalBytes: 1_000_000 });
      expect(patches[i], file.path).toEqual(alone);
    }
    const of = (p: string) => patches[files.findIndex((f) => f.path === p)]!;
    // A glob character is a character: star*.txt's patch is its own only.
    expect(of("star*.txt").text).toContain("+star*.txt two");
    expect(of("star*.txt").text).not.toContain("starX.txt");
    expect(of(":(top)magic.txt").text).toContain("+:(top)magic.txt two");
    expect(of('quo"te.txt').text).toContain('+quo"te.txt two');
    expect(of("ümlaut.txt").text).toContain("+ümlaut.txt two");
    expect(of("now here.txt").text).toContain("rename from moved.txt");
    expect(of("type.txt").text).toContain("deleted file mode");
    expect(of("type.txt").text).toContain("new file mode 120000");
    expect(of("blob.bin").text).toBe("diff --git a/blob.bin b/blob.bin\nBinary file blob.bin differs (not shown)\n");
    expect(of("big.txt")).toMatchObject({ cut: true });
    expect(of("big.txt").text.endsWith(CUT_MARKER)).toBe(true);
    expect(patches.filter((p) => p.cut)).toHaveLength(1);
  });
});
