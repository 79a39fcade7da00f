// The test git remote (test/helpers/git-remote.ts) is a real smart-HTTP remote: the git command
// and isomorphic-git clone from it and push to it, a basic-auth remote refuses wrong credentials,
// and a stopped, hanging or cut-off remote fails the way a real one would.
import fs from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import * as isogit from "isomorphic-git";
import http from "isomorphic-git/http/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cloneWithGit, git, startGitRemote, withCredentials, writeFiles, type GitRemote } from "../helpers/git-remote.js";

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "foreman-git-remote-test-"));
  dirs.push(dir);
  return dir;
}

let pub: GitRemote;
let priv: GitRemote;

beforeAll(async () => {
  pub = await startGitRemote();
  priv = await startGitRemote({ auth: true });
});

afterAll(async () => {
  await pub.close();
  await priv.close();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe("the test git remote", () => {
  it("serves a repository with a commit on its default branch to the git command, and takes a push", { timeout: 60_000 }, async () => {
    const url = await pub.createRepository("app", { defaultBranch: "trunk", files: { "a.txt": "one\n" } });
    const dir = await cloneWithGit(url, path.join(await tempDir(), "app"));
    expect(await readFile(path.join(dir, "a.txt"), "utf8")).toBe("one\n");
    expect(await git(["rev-parse", "--abbrev-ref", "HEAD"], { cwd: dir })).toBe("trunk");

    await writeFiles(dir, { "b.txt": "two\n" });
    await git(["add", "b.txt"], { cwd: dir });
    await git(["commit", "--quiet", "-m", "Add b"], { cwd: dir });
    await git(["push", "--quiet", "origin", "HEAD:refs/heads/feature"], { cwd: dir });
    const refs = await pub.refs("app");
    expect(refs.HEAD).toBe("ref: refs/heads/trunk");
    expect(refs["refs/heads/feature"]).toBe(await git(["rev-parse", "HEAD"], { cwd: dir }));
  });

  it("serves isomorphic-git: ls-refs with the HEAD symref, clone, and push", { timeout: 60_000 }, async () => {
    const url = await pub.createRepository("iso", { defaultBranch: "develop" });
    const second = await pub.commit("iso", { files: { "x.txt": "x\n" }, message: "Second" });
    const refs = await isogit.listServerRefs({ http, url, protocolVersion: 2, symrefs: true });
    expect(refs.find((r) => r.ref === "HEAD")?.target).toBe("refs/heads/develop");
    expect(refs.find((r) => r.ref === "refs/heads/develop")?.oid).toBe(second);

    const dir = await tempDir();
    await isogit.clone({ fs, http, dir, url });
    expect(await readFile(path.join(dir, "x.txt"), "utf8")).toBe("x\n");
    await writeFiles(dir, { "y.txt": "y\n" });
    await isogit.add({ fs, dir, filepath: "y.txt" });
    const oid = await isogit.commit({ fs, dir, message: "Add y", author: { name: "T", email: "t@example.com" } });
    await isogit.push({ fs, http, dir, remote: "origin", ref: "develop" });
    expect((await pub.refs("iso"))["refs/heads/develop"]).toBe(oid);
  });

  it("a basic-auth remote answers 401 without the right credentials, and serves and takes pushes with them", { timeout: 60_000 }, async () => {
    const url = await priv.createRepository("secret");
    const auth = priv.auth!;
    await expect(isogit.listServerRefs({ http, url, protocolVersion: 2 })).rejects.toMatchObject({ code: "HttpError", data: { statusCode: 401 } });
    await expect(
      isogit.listServerRefs({ http, url, protocolVersion: 2, onAuth: () => ({ username: auth.username, password: "wrong" }) }),
    ).rejects.toMatchObject({ data: { statusCode: 401 } });
    await expect(git(["ls-remote", url])).rejects.toThrow();
    const dir = await cloneWithGit(withCredentials(url, auth), path.join(await tempDir(), "secret"));
    await writeFiles(dir, { "c.txt": "c\n" });
    await git(["add", "c.txt"], { cwd: dir });
    await git(["commit", "--quiet", "-m", "Add c"], { cwd: dir });
    await git(["push", "--quiet", "origin", "trunk"], { cwd: dir });
    expect((await priv.refs("secret"))["refs/heads/trunk"]).toBe(await git(["rev-parse", "HEAD"], { cwd: dir }));
  });

  it("goes away: a cut-off answer fails a fetch, a hanging one never ends, a stopped remote refuses connections", { timeout: 60_000 }, async () => {
    const gone = await startGitRemote();
    try {
      const url = await gone.createRepository("r");
      gone.misbehave("cut-off");
      await expect(git(["clone", "--quiet", url, path.join(await tempDir(), "cut")])).rejects.toThrow();
      gone.misbehave("hang");
      const controller = new AbortController();
      const hung = fetch(`${url}/info/refs?service=git-upload-pack`, { signal: controller.signal });
      const late = await Promise.race([hung.then(() => "answered", () => "failed"), new Promise((r) => setTimeout(() => r("still waiting"), 300))]);
      expect(late).toBe("still waiting");
      controller.abort();
      await hung.catch(() => undefined);
      gone.misbehave("none");
      await expect(isogit.listServerRefs({ http, url, protocolVersion: 2 })).resolves.toBeDefined();
      await gone.stop();
      await expect(git(["ls-remote", url])).rejects.toThrow(/Failed to connect|Connection refused/i);
    } finally {
      await gone.close();
    }
  });
});
