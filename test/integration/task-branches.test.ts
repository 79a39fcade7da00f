// Task branches in the server's clone (src/git/branches.ts), against a real git remote
// (test/helpers/git-remote.ts): made from the clone's copy of the base branch, an existing one left alone.
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { branchHead, createTaskBranch, deleteTaskBranch } from "../../src/git/branches.js";
import { syncClone } from "../../src/git/clone.js";
import { git, startGitRemote, type GitRemote } from "../helpers/git-remote.js";

describe("task branches in the server's clone", () => {
  let remote: GitRemote;
  let dir: string;
  let tmp: string;

  beforeAll(async () => {
    remote = await startGitRemote();
    tmp = await mkdtemp(path.join(os.tmpdir(), "foreman-task-branches-"));
    dir = path.join(tmp, "clone");
  }, 60_000);

  afterAll(async () => {
    await remote?.close();
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  });

  it("starts a branch at the fetched base branch's head and refuses a name in use, here or upstream", async () => {
    const url = await remote.createRepository("repo", { defaultBranch: "main" });
    const dev = await remote.commit("repo", { branch: "dev", files: { "dev.txt": "dev\n" } });
    await syncClone(dir, url, { timeoutMs: 10_000 });
    const main = (await remote.refs("repo"))["refs/heads/main"];

    const a = await createTaskBranch(dir, "foreman/a-1", "main");
    expect(a).toEqual({ baseCommit: main, created: true });
    expect(await branchHead(dir, "foreman/a-1")).toBe(main);
    expect((await git(["-C", dir, "rev-parse", "refs/heads/foreman/a-1"])).trim()).toBe(main);

    const b = await createTaskBranch(dir, "foreman/b-2", "dev");
    expect(b).toEqual({ created: true, baseCommit: dev });

    // Given again after the base moved on: the branch keeps its commit.
    await remote.commit("repo", { branch: "main", files: { "x.txt": "x\n" } });
    await syncClone(dir, url, { timeoutMs: 10_000 });
    const again = await createTaskBranch(dir, "foreman/a-1", "main");
    expect(again).toEqual({ created: false, reason: "exists" });
    expect(await branchHead(dir, "foreman/a-1")).toBe(main);

    expect(await createTaskBranch(dir, "foreman/c-3", "no-such-branch")).toEqual({ created: false, reason: "no-base" });
    expect(await branchHead(dir, "foreman/c-3")).toBeUndefined();

    // A branch the remote has: an approval would push over it.
    expect(await createTaskBranch(dir, "dev", "main")).toEqual({ created: false, reason: "exists-upstream" });
    expect(await branchHead(dir, "dev")).toBeUndefined();

    await deleteTaskBranch(dir, "foreman/a-1");
    expect(await branchHead(dir, "foreman/a-1")).toBeUndefined();
    await deleteTaskBranch(dir, "foreman/a-1");
  }, 60_000);
});
