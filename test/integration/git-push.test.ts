// Delivery's git layer (src/git/push.ts) against a real git remote (test/helpers/git-remote.ts):
// a task branch of the server's clone pushed upstream (fast-forward only, credentials in headers
// only), the merge modes onto the base branch, conflicts named, refusals told as the remote said them.
import { randomUUID } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTaskBranch } from "../../src/git/branches.js";
import { syncClone } from "../../src/git/clone.js";
import { MergeConflictError, PushRefusedError, mergeOntoBase, pushLocalRef, pushRef } from "../../src/git/push.js";
import { RemoteError } from "../../src/git/remote.js";
import { git, startGitRemote, type GitRemote } from "../helpers/git-remote.js";
import { commitInClone } from "../helpers/clone-commits.js";

const committer = { name: "Foreman", email: "foreman@localhost" };

describe("pushing and merging task branches", () => {
  let remote: GitRemote;
  let priv: GitRemote;
  let tmp: string;
  const opts = { timeoutMs: 10_000 };

  beforeAll(async () => {
    remote = await startGitRemote();
    priv = await startGitRemote({ auth: { username: "robot", password: `pw-${randomUUID()}` } });
    tmp = await mkdtemp(path.join(os.tmpdir(), "foreman-git-push-"));
  }, 60_000);

  afterAll(async () => {
    await remote?.close();
    await priv?.close();
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  });

  /** A repository on the remote, the server's clone of it, and a task branch with commits. */
  async function setup(name: string, files: Record<string, string>[] = [{ "work.txt": "work\n" }], r: GitRemote = remote) {
    const url = await r.createRepository(name, { defaultBranch: "main", files: { "README.md": "# r\n", "shared.txt": "one\ntwo\nthree\n" } });
    const dir = path.join(tmp, name);
    await syncClone(dir, url, { ...opts, credentials: r.auth });
    await createTaskBranch(dir, "foreman/t-1", "main");
    const commits: string[] = [];
    for (const [i, f] of files.entries()) commits.push(await commitInClone(dir, "foreman/t-1", f, `Task commit ${i + 1}`));
    return { url, dir, commits };
  }

  it("pushes a task branch, and a second push of the same commit sends nothing", async () => {
    const { url, dir, commits } = await setup("plain", [{ "a.txt": "a\n" }, { "b.txt": "b\n" }]);
    const first = await pushRef(dir, url, "refs/heads/foreman/t-1", "foreman/t-1", opts);
    expect(first).toEqual({ commit: commits[1], updated: true });
    expect((await remote.refs("plain"))["refs/heads/foreman/t-1"]).toBe(commits[1]);
    expect(await git(["--git-dir", path.join(dir, ".git"), "rev-parse", "refs/remotes/origin/foreman/t-1"])).toBe(commits[1]);
    expect(await pushRef(dir, url, "refs/heads/foreman/t-1", "foreman/t-1", opts)).toEqual({ commit: commits[1], updated: false });
    // More work on the branch: a fast-forward.
    const third = await commitInClone(dir, "foreman/t-1", { "c.txt": "c\n" }, "Third");
    expect((await pushRef(dir, url, "refs/heads/foreman/t-1", "foreman/t-1", opts)).updated).toBe(true);
    expect((await remote.refs("plain"))["refs/heads/foreman/t-1"]).toBe(third);
  }, 60_000);

  it("refuses to overwrite a remote branch that diverged (not a fast-forward), naming it", async () => {
    const { url, dir, commits } = await setup("diverged");
    const other = await remote.commit("diverged", { branch: "foreman/t-1", from: "main", files: { "other.txt": "x\n" } });
    const error = await pushRef(dir, url, "refs/heads/foreman/t-1", "foreman/t-1", opts).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PushRefusedError);
    expect((error as PushRefusedError).refusal).toBe("not-fast-forward");
    expect((error as Error).message).toContain("foreman/t-1");
    expect((await remote.refs("diverged"))["refs/heads/foreman/t-1"]).toBe(other);
    // Fetched: still not a fast-forward (the commit is known now, and not an ancestor).
    await syncClone(dir, url, opts);
    await expect(pushRef(dir, url, "refs/heads/foreman/t-1", "foreman/t-1", opts)).rejects.toMatchObject({ refusal: "not-fast-forward" });
    expect(commits).toHaveLength(1);
  }, 60_000);

  it("tells what a hook that declined said", async () => {
    const { url, dir } = await setup("hooked");
    const hook = path.join(remote.gitDir("hooked"), "hooks", "pre-receive");
    await writeFile(hook, "#!/bin/sh\necho 'branch protected by policy 42' >&2\nexit 1\n");
    await chmod(hook, 0o755);
    const error = await pushRef(dir, url, "refs/heads/foreman/t-1", "foreman/t-1", opts).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PushRefusedError);
    expect((error as PushRefusedError).refusal).toBe("declined");
    expect((error as Error).message).toContain("pre-receive hook declined");
    expect((error as Error).message).toContain("branch protected by policy 42");
    expect((await remote.refs("hooked"))["refs/heads/foreman/t-1"]).toBeUndefined();
  }, 60_000);

  it("pushes with credentials in headers only; refused credentials and a stopped remote are RemoteErrors", async () => {
    const { url, dir, commits } = await setup("private", undefined, priv);
    await expect(pushRef(dir, url, "refs/heads/foreman/t-1", "foreman/t-1", opts)).rejects.toMatchObject({ problem: "auth" });
    const wrong = { username: "robot", password: "wrong-password" };
    const refused = await pushRef(dir, url, "refs/heads/foreman/t-1", "foreman/t-1", { ...opts, credentials: wrong }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RemoteError);
    expect(String((refused as Error).message)).not.toContain("wrong-password");
    await pushRef(dir, url, "refs/heads/foreman/t-1", "foreman/t-1", { ...opts, credentials: priv.auth });
    expect((await priv.refs("private"))["refs/heads/foreman/t-1"]).toBe(commits[0]);
    const config = await readFile(path.join(dir, ".git", "config"), "utf8");
    expect(config).not.toContain(priv.auth!.password);
    expect(config).not.toContain(Buffer.from(`robot:${priv.auth!.password}`).toString("base64"));

    const gone = await startGitRemote();
    const goneUrl = await gone.createRepository("gone", { defaultBranch: "main" });
    const goneDir = path.join(tmp, "gone");
    await syncClone(goneDir, goneUrl, opts);
    await createTaskBranch(goneDir, "foreman/t-1", "main");
    await commitInClone(goneDir, "foreman/t-1", { "x.txt": "x\n" }, "x");
    await gone.close();
    await expect(pushRef(goneDir, goneUrl, "refs/heads/foreman/t-1", "foreman/t-1", opts)).rejects.toMatchObject({ problem: "unreachable" });
  }, 60_000);

  it("merges: a merge commit of the branch into the base as fetched, idempotent once delivered", async () => {
    const { url, dir, commits } = await setup("merge");
    const moved = await remote.commit("merge", { branch: "main", files: { "upstream.txt": "u\n" } });
    await syncClone(dir, url, opts);
    const r = await mergeOntoBase(dir, { mode: "merge", branch: commits[0]!, base: "refs/remotes/origin/main", message: "Merge task\n", committer });
    expect(r.alreadyThere).toBe(false);
    const parents = (await git(["--git-dir", path.join(dir, ".git"), "rev-list", "--parents", "-n", "1", r.commit])).split(" ").slice(1);
    expect(parents).toEqual([moved, commits[0]]);
    const files = (await git(["--git-dir", path.join(dir, ".git"), "ls-tree", "--name-only", r.commit])).split("\n");
    expect(files).toEqual(expect.arrayContaining(["upstream.txt", "work.txt", "README.md"]));
    await dirRef(dir, r.commit);
    await pushRef(dir, url, "refs/foreman/deliver", "main", opts);
    expect((await remote.refs("merge"))["refs/heads/main"]).toBe(r.commit);
    await syncClone(dir, url, opts);
    expect(await mergeOntoBase(dir, { mode: "merge", branch: commits[0]!, base: "refs/remotes/origin/main", message: "Merge task\n", committer })).toEqual({ commit: r.commit, alreadyThere: true });
  }, 60_000);

  it("squashes: one commit on the base with the branch's changes, idempotent once delivered", async () => {
    const { url, dir, commits } = await setup("squash", [{ "a.txt": "a\n" }, { "b.txt": "b\n" }]);
    const moved = await remote.commit("squash", { branch: "main", files: { "upstream.txt": "u\n" } });
    await syncClone(dir, url, opts);
    const r = await mergeOntoBase(dir, { mode: "squash", branch: commits[1]!, base: "refs/remotes/origin/main", message: "Squashed task\n", committer });
    const gitDir = path.join(dir, ".git");
    expect((await git(["--git-dir", gitDir, "rev-list", "--parents", "-n", "1", r.commit])).split(" ").slice(1)).toEqual([moved]);
    expect(await git(["--git-dir", gitDir, "log", "-1", "--format=%s", r.commit])).toBe("Squashed task");
    expect((await git(["--git-dir", gitDir, "ls-tree", "--name-only", r.commit])).split("\n")).toEqual(expect.arrayContaining(["a.txt", "b.txt", "upstream.txt"]));
    await dirRef(dir, r.commit);
    await pushRef(dir, url, "refs/foreman/deliver", "main", opts);
    await syncClone(dir, url, opts);
    expect(await mergeOntoBase(dir, { mode: "squash", branch: commits[1]!, base: "refs/remotes/origin/main", message: "Squashed task\n", committer })).toEqual({ commit: r.commit, alreadyThere: true });
  }, 60_000);

  it("rebases: each commit replayed on the base with its author and message", async () => {
    const { url, dir, commits } = await setup("rebase", [{ "a.txt": "a\n" }, { "shared.txt": "one\ntwo\nthree\nfour\n" }]);
    const moved = await remote.commit("rebase", { branch: "main", files: { "shared.txt": "zero\none\ntwo\nthree\n" } });
    await syncClone(dir, url, opts);
    const r = await mergeOntoBase(dir, { mode: "rebase", branch: commits[1]!, base: "refs/remotes/origin/main", message: "unused\n", committer });
    const gitDir = path.join(dir, ".git");
    const log = (await git(["--git-dir", gitDir, "log", "--format=%s|%an|%cn|%P", `${moved}..${r.commit}`])).split("\n");
    expect(log).toHaveLength(2);
    expect(log[0]!.split("|").slice(0, 3)).toEqual(["Task commit 2", "Test Author", "Foreman"]);
    expect(log[1]!.split("|")).toEqual(["Task commit 1", "Test Author", "Foreman", moved]);
    expect(await git(["--git-dir", gitDir, "show", `${r.commit}:shared.txt`])).toBe("zero\none\ntwo\nthree\nfour");
    await dirRef(dir, r.commit);
    await pushRef(dir, url, "refs/foreman/deliver", "main", opts);
    await syncClone(dir, url, opts);
    expect((await mergeOntoBase(dir, { mode: "rebase", branch: commits[1]!, base: "refs/remotes/origin/main", message: "x\n", committer })).alreadyThere).toBe(true);
  }, 60_000);

  it("refuses a merge that conflicts, naming the files, in every mode", async () => {
    const { url, dir, commits } = await setup("conflict", [{ "shared.txt": "one\nTWO (task)\nthree\n", "mine.txt": "m\n" }]);
    await remote.commit("conflict", { branch: "main", files: { "shared.txt": "one\nTWO (upstream)\nthree\n" } });
    await syncClone(dir, url, opts);
    for (const mode of ["merge", "squash", "rebase"] as const) {
      const error = await mergeOntoBase(dir, { mode, branch: commits[0]!, base: "refs/remotes/origin/main", message: "m\n", committer }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MergeConflictError);
      expect((error as MergeConflictError).files).toEqual(["shared.txt"]);
      expect((error as Error).message).toContain("shared.txt");
    }
  }, 60_000);

  it("pushes to a folder on the server's machine with the git command, fast-forward only, telling a hook's refusal", async () => {
    const { dir, commits } = await setup("folder");
    const folder = remote.gitDir("folder");
    expect(await pushLocalRef(dir, folder, "refs/heads/foreman/t-1", "foreman/t-1", 10_000)).toEqual({ commit: commits[0], updated: true });
    expect((await remote.refs("folder"))["refs/heads/foreman/t-1"]).toBe(commits[0]);
    expect(await git(["--git-dir", path.join(dir, ".git"), "rev-parse", "refs/remotes/origin/foreman/t-1"])).toBe(commits[0]);
    expect(await pushLocalRef(dir, folder, "refs/heads/foreman/t-1", "foreman/t-1", 10_000)).toEqual({ commit: commits[0], updated: false });
    await remote.commit("folder", { branch: "foreman/t-1", files: { "other.txt": "o\n" } });
    await expect(pushLocalRef(dir, folder, "refs/heads/foreman/t-1", "foreman/t-1", 10_000)).rejects.toMatchObject({ refusal: "not-fast-forward" });
    const hook = path.join(folder, "hooks", "pre-receive");
    await writeFile(hook, "#!/bin/sh\necho 'folder frozen' >&2\nexit 1\n");
    await chmod(hook, 0o755);
    const error = await pushLocalRef(dir, folder, "refs/heads/foreman/t-1", "other-branch", 10_000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PushRefusedError);
    expect((error as PushRefusedError).refusal).toBe("declined");
    expect((error as Error).message).toContain("folder frozen");
    expect((error as Error).message).not.toContain(folder);
    expect((await remote.refs("folder"))["refs/heads/other-branch"]).toBeUndefined();
  }, 60_000);

  async function dirRef(dir: string, commit: string): Promise<void> {
    await git(["--git-dir", path.join(dir, ".git"), "update-ref", "refs/foreman/deliver", commit]);
  }
});
