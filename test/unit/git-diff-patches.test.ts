// src/git/diff.ts filePatches: a page's patches from one git command, split per file, the same
// as reading each file on its own, whatever the paths hold (spaces, glob characters, quotes,
// non-ASCII), with renames, binary files, a type change and the per-file cut.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, renameSync, unlinkSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CUT_MARKER, changedFiles, filePatches, sectionSplitter, unifiedDiff } from "../../src/git/diff.js";

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

  it("splits a long stream wherever its chunks end, and holds no more than the cap of a huge file", { timeout: 60_000 }, async () => {
    const many = mkdtempSync(path.join(tmpdir(), "foreman-diff-many-"));
    const g = (...args: string[]) => execFileSync("git", ["-C", many, ...args], { env }).toString().trim();
    try {
      g("init", "-q", "-b", "main");
      writeFileSync(path.join(many, "seed.txt"), "seed\n");
      g("add", "-A");
      g("commit", "-q", "-m", "base");
      const from = g("rev-parse", "HEAD");
      // Patches of many sizes, so that the 64 KiB pipe chunks end within headers too; and one of 30 MB.
      let seed = 7;
      const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648);
      for (let i = 0; i < 120; i++) writeFileSync(path.join(many, `f${String(i).padStart(3, "0")}.txt`), "z".repeat(next() % 9000).replace(/(.{80})/g, "$1\n") + "\n");
      writeFileSync(path.join(many, "huge.txt"), `${"h".repeat(999)}\n`.repeat(30_000));
      g("add", "-A");
      g("commit", "-q", "-m", "head");
      const to = g("rev-parse", "HEAD");
      const gd = path.join(many, ".git");
      const files = await changedFiles(gd, from, to);
      expect(files).toHaveLength(121);
      const patches = await filePatches(gd, from, to, files, 20_000);
      for (const [i, file] of files.entries()) {
        expect(patches[i], file.path).toEqual(await unifiedDiff(gd, from, to, [file], { maxFileBytes: 20_000, maxTotalBytes: 100_000_000 }));
      }
      const huge = patches[files.findIndex((f) => f.path === "huge.txt")]!;
      expect(huge.cut).toBe(true);
      expect(Buffer.byteLength(huge.text)).toBe(20_000 + Buffer.byteLength(CUT_MARKER));
    } finally {
      rmSync(many, { recursive: true, force: true });
    }
  });

  it("splits the same wherever the stream's chunks end, even within a header", () => {
    const out = Buffer.from(
      "diff --git a/x b/x\nindex 1..2\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-diff --git a/no b/no\n+x\n" + "diff --git a/y b/y\nnew file mode 100644\n+" + "y".repeat(50) + "\ndiff --git a/z b/z\n+z",
    );
    const whole = sectionSplitter(40);
    whole.feed(out);
    const expected = whole.finish();
    expect(expected.map((s) => [s.header, s.cut])).toEqual([
      ["diff --git a/x b/x", true],
      ["diff --git a/y b/y", true],
      ["diff --git a/z b/z", false],
    ]);
    expect(expected[0]!.text).toBe(out.subarray(0, 40).toString() + CUT_MARKER);
    expect(expected[2]!.text).toBe("diff --git a/z b/z\n+z");
    for (let size = 1; size <= 25; size++) {
      const split = sectionSplitter(40);
      for (let i = 0; i < out.length; i += size) split.feed(out.subarray(i, i + size));
      expect(split.finish(), `chunks of ${size}`).toEqual(expected);
    }
  });
});
