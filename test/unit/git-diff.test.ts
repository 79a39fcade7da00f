import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, renameSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CUT_MARKER, changedFiles, unifiedDiff } from "../../src/git/diff.js";

const dir = mkdtempSync(path.join(tmpdir(), "foreman-diff-"));
const env = { ...process.env, GIT_CONFIG_GLOBAL: "/dev/null", GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" };
const git = (...args: string[]) => execFileSync("git", ["-C", dir, ...args], { env }).toString().trim();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("git diff", () => {
  git("init", "-q", "-b", "main");
  writeFileSync(path.join(dir, "keep.txt"), "one\ntwo\n");
  writeFileSync(path.join(dir, "gone.txt"), "bye\n");
  writeFileSync(path.join(dir, "old-name.txt"), "a\nb\nc\nd\ne\nf\n");
  git("add", "-A");
  git("commit", "-q", "-m", "base");
  const base = git("rev-parse", "HEAD");
  writeFileSync(path.join(dir, "keep.txt"), "one\nTWO\nthree\n");
  unlinkSync(path.join(dir, "gone.txt"));
  renameSync(path.join(dir, "old-name.txt"), path.join(dir, "new-name.txt"));
  writeFileSync(path.join(dir, "image.bin"), Buffer.from([0, 1, 2, 0, 255, 0]));
  writeFileSync(path.join(dir, "big.txt"), "x".repeat(100) + "\n".repeat(1) + "y\n".repeat(5000));
  git("add", "-A");
  git("commit", "-q", "-m", "head");
  const head = git("rev-parse", "HEAD");
  const gitDir = path.join(dir, ".git");

  it("lists files with statuses and stats", async () => {
    const files = await changedFiles(gitDir, base, head);
    expect(files.map((f) => [f.path, f.status, f.additions, f.deletions, f.binary])).toEqual([
      ["big.txt", "added", 5001, 0, false],
      ["gone.txt", "deleted", 0, 1, false],
      ["image.bin", "added", 0, 0, true],
      ["keep.txt", "modified", 2, 1, false],
      ["new-name.txt", "renamed", 0, 0, false],
    ]);
    expect(files[4]!.oldPath).toBe("old-name.txt");
  });

  it("gives the unified diff, bounded, binary named not dumped", async () => {
    const files = await changedFiles(gitDir, base, head);
    const { text, cut } = await unifiedDiff(gitDir, base, head, files, { maxFileBytes: 2000, maxTotalBytes: 100_000 });
    expect(cut).toBe(true);
    expect(text).toContain("+TWO");
    expect(text).toContain("Binary file image.bin differs (not shown)");
    expect(text).toContain("rename from old-name.txt");
    expect(text).toContain(CUT_MARKER);
    expect(text.length).toBeLessThan(10_000);
  });
});
