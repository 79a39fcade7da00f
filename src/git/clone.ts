// The server's own copy of a repository: a clone with no work tree files (isomorphic-git,
// noCheckout), its remote's branches under refs/remotes/origin/. Made whole or not at all (cloned
// into a folder beside it, then renamed into place), fetched with pruning, removed with its folder.
// Credentials travel in an Authorization header for each exchange and are never written to the
// clone (its .git/config holds the URL only, which has none).
import fs from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import path from "node:path";
import * as isogit from "isomorphic-git";
import { authorization, withDeadline, type RemoteOptions } from "./remote.js";

export interface SyncResult {
  /** Whether this call made the clone (else it fetched into the one there). */
  cloned: boolean;
  /** The remote's branches after the sync: name → commit id. */
  branches: Map<string, string>;
}

async function exists(dir: string): Promise<boolean> {
  try {
    return (await stat(path.join(dir, ".git", "config"))).isFile();
  } catch {
    return false;
  }
}

/**
 * Makes a clone beside dir with `clone` and moves it into place: whole or not at all, for only a
 * clone whose every answer came whole is moved. False when another clone into the same folder (a
 * server that was stopping, on the same data folder) finished first: that one is kept, for the
 * caller to fetch into. A leftover is removed with the clone (removeClone) if this fails.
 */
export async function cloneIntoPlace(dir: string, clone: (aside: string) => Promise<unknown>): Promise<boolean> {
  const aside = `${dir}.cloning-${randomBytes(6).toString("hex")}`;
  try {
    await clone(aside);
    try {
      await rename(aside, dir);
      return true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error;
      return false;
    }
  } finally {
    await rm(aside, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
  }
}

/**
 * Clones url into dir when dir holds no clone, else fetches into it (every branch, pruned). The
 * deadline in options is an idle one: the remote may take long, but not stall. Throws RemoteError.
 */
export async function syncClone(dir: string, url: string, options: RemoteOptions): Promise<SyncResult> {
  const headers = authorization(options.credentials);
  const bounded = { ...options, idle: true };
  let cloned = !(await exists(dir));
  if (cloned) {
    await fs.promises.mkdir(path.dirname(dir), { recursive: true, mode: 0o700 });
    cloned = await cloneIntoPlace(dir, (aside) =>
      withDeadline(bounded, (http) => isogit.clone({ fs, http, dir: aside, url, headers, noCheckout: true, noTags: true })),
    );
  }
  if (!cloned) {
    // A fetch that fails (an answer cut off where isomorphic-git had stopped reading included)
    // leaves the branches as they were: objects it wrote are unreferenced, and harmless.
    const before = await remoteBranches(dir);
    try {
      await withDeadline(bounded, (http) => isogit.fetch({ fs, http, dir, remote: "origin", headers, prune: true, tags: false, singleBranch: false }));
    } catch (error) {
      await restoreBranches(dir, before);
      throw error;
    }
  }
  return { cloned, branches: await remoteBranches(dir) };
}

async function restoreBranches(dir: string, before: Map<string, string>): Promise<void> {
  const now = await remoteBranches(dir);
  for (const name of now.keys()) {
    if (!before.has(name)) await isogit.deleteRef({ fs, dir, ref: `refs/remotes/origin/${name}` });
  }
  for (const [name, oid] of before) {
    if (now.get(name) !== oid) await isogit.writeRef({ fs, dir, ref: `refs/remotes/origin/${name}`, value: oid, force: true });
  }
}

/** The clone's copy of the remote's branches (refs/remotes/origin/*), name → commit id. */
export async function remoteBranches(dir: string): Promise<Map<string, string>> {
  const branches = new Map<string, string>();
  for (const name of await isogit.listBranches({ fs, dir, remote: "origin" })) {
    if (name === "HEAD") continue;
    branches.set(name, await isogit.resolveRef({ fs, dir, ref: `refs/remotes/origin/${name}` }));
  }
  return branches;
}

/** Removes a clone and anything a clone into it left beside it. */
export async function removeClone(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  const parent = path.dirname(dir);
  const prefix = `${path.basename(dir)}.cloning-`;
  let names: string[] = [];
  try {
    names = await fs.promises.readdir(parent);
  } catch {
    return;
  }
  for (const name of names) if (name.startsWith(prefix)) await rm(path.join(parent, name), { recursive: true, force: true, maxRetries: 3 });
}
