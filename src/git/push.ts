// Delivering a task branch of the server's clone to its remote (issue 18, "Review and delivery"):
// a push of a local branch with isomorphic-git (credentials in the Authorization header of each
// request, as fetches send them, never written to .git/config), and the commit a merge mode makes
// on top of the remote's base branch as the clone last fetched it: a merge commit, one squashed
// commit, or the branch's commits replayed (a rebase). isomorphic-git's merge needs a work tree
// and has no rebase, so merges are computed with the git command (`git merge-tree --write-tree`,
// git 2.38+: a real three-way merge that writes only objects), never through a shell, with no
// user or system git configuration read. A merge that conflicts writes no ref and is an error
// naming the conflicting files.
//
// Errors here carry no credential: a refused push says what the remote said, with whatever in
// its words could be a credential taken out.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import * as isogit from "isomorphic-git";
import { authorization, withDeadline, type RemoteOptions } from "./remote.js";
import { gitEnv } from "./command.js";

export type MergeMode = "merge" | "squash" | "rebase";

export interface Identity {
  name: string;
  email: string;
}

/** The merge of a task branch into the base branch conflicts: nothing was written or pushed. */
export class MergeConflictError extends Error {
  constructor(
    readonly mode: MergeMode,
    readonly files: string[],
  ) {
    super(`the branch does not ${mode === "rebase" ? "rebase" : "merge"} cleanly onto the base branch: ${files.length === 0 ? "conflicting changes" : `conflicts in ${files.join(", ")}`}`);
    this.name = "MergeConflictError";
  }
}

export type PushRefusal =
  /** The remote's branch holds commits the pushed one does not: it moved on since the last fetch. */
  | "not-fast-forward"
  /** The remote answered and refused the update (a hook, a protected branch, a rule). */
  | "declined";

/** The remote refused to update the branch. The message says what it said, with no credential in it. */
export class PushRefusedError extends Error {
  constructor(
    readonly refusal: PushRefusal,
    readonly remoteBranch: string,
    message: string,
  ) {
    super(message);
    this.name = "PushRefusedError";
  }
}

export interface PushResult {
  /** The commit the remote's branch now points at. */
  commit: string;
  /** False when the remote's branch was at that commit already (nothing was sent). */
  updated: boolean;
}

/** Most characters of the remote's own words kept in an error. */
const REMOTE_WORDS_MAX = 300;

/**
 * Pushes `localRef` (a full ref of the clone at dir, e.g. refs/heads/foreman/x-1) to the remote's
 * refs/heads/<remoteBranch>, as a fast-forward only. Updates the clone's refs/remotes/origin/<remoteBranch>
 * when the remote took it. Throws RemoteError (no answer, auth, …) or PushRefusedError.
 */
export async function pushRef(dir: string, url: string, localRef: string, remoteBranch: string, options: RemoteOptions): Promise<PushResult> {
  const commit = await isogit.resolveRef({ fs, dir, ref: localRef });
  const headers = authorization(options.credentials);
  const messages: string[] = [];
  const notFastForward = `the remote's branch ${remoteBranch} has commits the pushed one does not (not a fast-forward; fetch, then deliver again)`;
  // Refusals are answers, not failures of the exchange: they come back as values, thrown after.
  const outcome = await withDeadline({ ...options, idle: true }, async (http): Promise<{ updated: boolean; refusal?: PushRefusal; said?: string }> => {
    // What the remote's branch is now: a push of what it has already sends nothing.
    const refs = await isogit.listServerRefs({ http, url, headers, forPush: true, protocolVersion: 1 });
    const current = refs.find((r) => r.ref === `refs/heads/${remoteBranch}`)?.oid;
    if (current === commit) return { updated: false };
    if (current !== undefined && !(await contains(dir, commit, current))) return { updated: false, refusal: "not-fast-forward" };
    try {
      await isogit.push({
        fs,
        http,
        dir,
        url,
        remote: "origin",
        ref: localRef,
        remoteRef: `refs/heads/${remoteBranch}`,
        headers,
        force: false,
        onMessage: (line) => {
          if (messages.length < 20) messages.push(line);
        },
      });
      return { updated: true };
    } catch (error) {
      const e = error as { code?: string; data?: { result?: { refs?: Record<string, { ok: boolean; error?: string }> } } };
      if (e.code === "PushRejectedError") return { updated: false, refusal: "not-fast-forward" };
      if (e.code !== "GitPushError") throw error;
      const said = Object.values(e.data?.result?.refs ?? {})
        .filter((r) => !r.ok)
        .map((r) => r.error ?? "")
        .join("; ");
      return { updated: false, refusal: /non-fast-forward|fetch first|fast.forward/i.test(said) ? "not-fast-forward" : "declined", said };
    }
  });
  if (outcome.refusal === "not-fast-forward" && outcome.said === undefined) throw new PushRefusedError("not-fast-forward", remoteBranch, notFastForward);
  if (outcome.refusal !== undefined) {
    const words = [outcome.said ?? "", ...messages.map((m) => m.replace(/^remote:\s*/, ""))].filter((w) => w.trim() !== "").join(" | ");
    const said = cleanWords(words, options);
    throw new PushRefusedError(outcome.refusal, remoteBranch, `the remote refused to update its branch ${remoteBranch}${said === "" ? "" : `; it said: ${said}`}`);
  }
  return { commit, updated: outcome.updated };
}

/** The remote's words, one line, bounded, with anything of the credentials in them taken out. */
function cleanWords(text: string, options: Pick<RemoteOptions, "credentials">): string {
  let out = [...text].map((ch) => (ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f ? " " : ch)).join("").replace(/\s+/g, " ").trim();
  const c = options.credentials;
  if (c !== undefined) {
    const secrets = [c.password, c.username, Buffer.from(`${c.username}:${c.password}`, "utf8").toString("base64")].filter((s) => s.length >= 3);
    for (const secret of secrets.sort((a, b) => b.length - a.length)) out = out.split(secret).join("[redacted]");
    if (c.password !== "" && c.password.length < 3) out = out.split(c.password).join("[redacted]");
  }
  // An Authorization or a URL with a user in it, whatever it holds.
  out = out.replace(/(authorization:?\s*)(basic|bearer)\s+\S+/gi, "$1$2 [redacted]").replace(/(\w+:\/\/)[^/@\s]+@/g, "$1[redacted]@");
  return out.length > REMOTE_WORDS_MAX ? `${out.slice(0, REMOTE_WORDS_MAX)}…` : out;
}

// ---------------------------------------------------------------------------------------------
// Merges, with the git command.

interface GitRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs git on the clone's git folder; exit codes in `ok` are answers, any other a failure. */
function git(dir: string, args: string[], options: { input?: string; env?: Record<string, string>; ok?: number[]; timeoutMs?: number } = {}): Promise<GitRun> {
  const ok = options.ok ?? [0];
  return new Promise((resolve, reject) => {
    const child = execFile(
      "git",
      [`--git-dir=${path.join(dir, ".git")}`, ...args],
      { env: gitEnv(options.env), timeout: options.timeoutMs ?? 120_000, killSignal: "SIGKILL", maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof (error as { code?: unknown }).code === "number" ? ((error as { code: number }).code) : -1;
        if (ok.includes(code)) return resolve({ code, stdout, stderr });
        reject(new Error(`git ${args[0]} failed${code === -1 ? "" : ` (exit ${code})`}`));
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

const COMMIT_ID = /^[0-9a-f]{40}$/;

async function revParse(dir: string, rev: string): Promise<string> {
  const out = (await git(dir, ["rev-parse", "--verify", "--quiet", `${rev}^{commit}`])).stdout.trim();
  if (!COMMIT_ID.test(out)) throw new Error("not a commit");
  return out;
}

async function treeOf(dir: string, commit: string): Promise<string> {
  return (await git(dir, ["rev-parse", "--verify", `${commit}^{tree}`])).stdout.trim();
}

/** Whether `ancestor` is reachable from `commit` (or is it). */
async function contains(dir: string, commit: string, ancestor: string): Promise<boolean> {
  if (commit === ancestor) return true;
  const known = await git(dir, ["cat-file", "-e", `${ancestor}^{commit}`], { ok: [0, 1, 128] });
  if (known.code !== 0) return false;
  return (await git(dir, ["merge-base", "--is-ancestor", ancestor, commit], { ok: [0, 1] })).code === 0;
}

/** The tree of merging `theirs` into `ours` (their merge base as git finds it), or the conflicting files. */
async function mergeTrees(dir: string, ours: string, theirs: string): Promise<{ tree: string } | { conflicts: string[] }> {
  const out = await git(dir, ["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs], { ok: [0, 1] });
  const parts = out.stdout.split("\0");
  const tree = parts[0]!.trim();
  if (out.code === 0) return { tree };
  const files = [...new Set(parts.slice(1).filter((p) => p !== ""))].sort();
  return { conflicts: files };
}

interface CommitFields {
  tree: string;
  parents: string[];
  message: string;
  author?: { name: string; email: string; date: string } | undefined;
  committer: Identity;
}

async function commitTree(dir: string, c: CommitFields): Promise<string> {
  const env: Record<string, string> = {
    GIT_COMMITTER_NAME: c.committer.name,
    GIT_COMMITTER_EMAIL: c.committer.email,
    GIT_AUTHOR_NAME: c.author?.name ?? c.committer.name,
    GIT_AUTHOR_EMAIL: c.author?.email ?? c.committer.email,
    ...(c.author === undefined ? {} : { GIT_AUTHOR_DATE: c.author.date }),
  };
  const out = await git(dir, ["commit-tree", c.tree, ...c.parents.flatMap((p) => ["-p", p]), "-F", "-"], { env, input: c.message });
  return out.stdout.trim();
}

/** A commit's author (name, email, date as git writes it) and message. */
async function readCommit(dir: string, commit: string): Promise<{ author: { name: string; email: string; date: string } | undefined; message: string; parents: string[] }> {
  const raw = (await git(dir, ["cat-file", "commit", commit])).stdout;
  const split = raw.indexOf("\n\n");
  const header = split === -1 ? raw : raw.slice(0, split);
  const message = split === -1 ? "" : raw.slice(split + 2);
  const parents: string[] = [];
  let author: { name: string; email: string; date: string } | undefined;
  for (const line of header.split("\n")) {
    if (line.startsWith("parent ")) parents.push(line.slice(7).trim());
    const m = /^author (.*) <([^>]*)> (\d+ [+-]\d{4})$/.exec(line);
    if (m !== null) author = { name: m[1]!, email: m[2]!, date: `@${m[3]!}` };
  }
  return { author, message, parents };
}

export interface MergeRequest {
  mode: MergeMode;
  /** The task branch's commit. */
  branch: string;
  /** The base branch's commit on the remote, as fetched. */
  base: string;
  /** The message of a merge commit or a squashed commit (a rebase keeps each commit's own). */
  message: string;
  committer: Identity;
}

export interface MergeResult {
  /** The commit the base branch is to point at: `base` itself when it holds the branch's changes already. */
  commit: string;
  /** Whether the base holds the branch's work already (a delivery done before): nothing to push. */
  alreadyThere: boolean;
}

/**
 * The commit that puts the task branch's work on top of the base: a merge commit (parents base
 * and branch), one squashed commit (the merged tree, parent base), or the branch's commits since
 * it left the base replayed on it one by one (merge commits skipped, each commit's author and
 * message kept; a branch that starts at the base's head is taken as it is, a fast-forward).
 * Writes objects only, no ref. Throws MergeConflictError naming the files.
 */
export async function mergeOntoBase(dir: string, r: MergeRequest): Promise<MergeResult> {
  const branch = await revParse(dir, r.branch);
  const base = await revParse(dir, r.base);
  if (await contains(dir, base, branch)) return { commit: base, alreadyThere: true };
  // A branch that starts at the base's head: a rebase is a fast-forward to it, its commits as they are.
  if (r.mode === "rebase" && (await contains(dir, branch, base))) return { commit: branch, alreadyThere: false };
  const merged = await mergeTrees(dir, base, branch);
  if ("conflicts" in merged) throw new MergeConflictError(r.mode, merged.conflicts);
  // The base has the branch's changes already (a squash or a rebase delivered before).
  if (merged.tree === (await treeOf(dir, base))) return { commit: base, alreadyThere: true };
  switch (r.mode) {
    case "merge":
      return { commit: await commitTree(dir, { tree: merged.tree, parents: [base, branch], message: r.message, committer: r.committer }), alreadyThere: false };
    case "squash":
      return { commit: await commitTree(dir, { tree: merged.tree, parents: [base], message: r.message, committer: r.committer }), alreadyThere: false };
    case "rebase":
      return { commit: await replay(dir, base, branch, r.committer), alreadyThere: false };
  }
}

/**
 * Replays the commits of `branch` that `base` does not have onto base, oldest first. Each is a
 * three-way merge of its own change (its first parent → it) into the tip so far: computed with
 * merge-tree on two scratch commits sharing one root that holds the parent's tree, which makes
 * that tree their merge base (git 2.39 has no --merge-base). A commit whose change the tip
 * has already is dropped, as git rebase drops it.
 */
async function replay(dir: string, base: string, branch: string, committer: Identity): Promise<string> {
  const list = (await git(dir, ["rev-list", "--reverse", "--topo-order", "--no-merges", `${base}..${branch}`])).stdout.split("\n").filter((l) => COMMIT_ID.test(l));
  const scratch: Identity = { name: "foreman", email: "foreman@localhost" };
  const fixed = { name: scratch.name, email: scratch.email, date: "@0 +0000" };
  let tip = base;
  for (const commit of list) {
    const c = await readCommit(dir, commit);
    const parentTree = c.parents[0] === undefined ? await emptyTree(dir) : await treeOf(dir, c.parents[0]);
    const tipTree = await treeOf(dir, tip);
    const root = await commitTree(dir, { tree: parentTree, parents: [], message: "scratch\n", author: fixed, committer: scratch });
    const ours = await commitTree(dir, { tree: tipTree, parents: [root], message: "scratch\n", author: fixed, committer: scratch });
    const theirs = await commitTree(dir, { tree: await treeOf(dir, commit), parents: [root], message: "scratch\n", author: fixed, committer: scratch });
    const merged = await mergeTrees(dir, ours, theirs);
    if ("conflicts" in merged) throw new MergeConflictError("rebase", merged.conflicts);
    if (merged.tree === tipTree) continue;
    tip = await commitTree(dir, { tree: merged.tree, parents: [tip], message: c.message, author: c.author, committer });
  }
  return tip;
}

async function emptyTree(dir: string): Promise<string> {
  return (await git(dir, ["hash-object", "-t", "tree", "-w", "--stdin"], { input: "" })).stdout.trim();
}

/** The commit a ref of the clone (a full name) points at, or undefined when there is none. */
export async function refCommit(dir: string, ref: string): Promise<string | undefined> {
  return isogit.resolveRef({ fs, dir, ref }).catch(() => undefined);
}

/** Points the clone's ref (a full ref name) at commit; used for a merge result about to be pushed. */
export async function writeLocalRef(dir: string, ref: string, commit: string): Promise<void> {
  await isogit.writeRef({ fs, dir, ref, value: commit, force: true });
}

export async function deleteLocalRef(dir: string, ref: string): Promise<void> {
  await isogit.deleteRef({ fs, dir, ref }).catch(() => undefined);
}


/**
 * Like pushRef, for a remote that is a folder on the server's machine (single-user mode only),
 * with the git command: the folder is an absolute path, and no configuration but the clone's is read.
 */
export async function pushLocalRef(dir: string, folder: string, localRef: string, remoteBranch: string, timeoutMs: number): Promise<PushResult> {
  const commit = await revParse(dir, localRef);
  const target = `refs/heads/${remoteBranch}`;
  const current = (await git(dir, ["ls-remote", "--", folder, target])).stdout.split("\t")[0]?.trim();
  if (current === commit) return { commit, updated: false };
  if (current !== undefined && current !== "" && !(await contains(dir, commit, current))) {
    throw new PushRefusedError("not-fast-forward", remoteBranch, `the remote's branch ${remoteBranch} has commits the pushed one does not (not a fast-forward; fetch, then deliver again)`);
  }
  const out = await git(dir, ["push", "--porcelain", "--", folder, `${commit}:${target}`], { ok: [0, 1], timeoutMs });
  if (out.code !== 0) {
    const line = out.stdout.split("\n").find((l) => l.startsWith("!")) ?? "";
    // The remote's own words (a hook's) come as "remote: …" lines; git's others name the folder, which is not repeated.
    const remoteLines = out.stderr.split("\n").filter((l) => l.startsWith("remote: ")).map((l) => l.slice("remote: ".length)).slice(0, 20);
    const said = cleanWords([line.split("\t").slice(2).join(" "), ...remoteLines].filter((w) => w.trim() !== "").join(" | "), {});
    throw new PushRefusedError(/non-fast-forward|fetch first/.test(said) ? "not-fast-forward" : "declined", remoteBranch, `the remote refused to update its branch ${remoteBranch}${said === "" ? "" : `; it said: ${said}`}`);
  }
  await isogit.writeRef({ fs, dir, ref: `refs/remotes/origin/${remoteBranch}`, value: commit, force: true });
  return { commit, updated: true };
}
