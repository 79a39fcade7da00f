// Diffs between two commits of the server's clone, read with the git command (isomorphic-git has
// no diff), never through a shell, with no user or system git configuration. Bounded: each file's
// patch and the whole answer are cut at a byte limit with a marker; binary files are named only.
import { execFile, spawn } from "node:child_process";
import { gitEnv } from "./command.js";

export type FileStatus = "added" | "modified" | "deleted" | "renamed";

export interface ChangedFile {
  path: string;
  /** Set when the file was renamed. */
  oldPath: string;
  status: FileStatus;
  additions: number;
  deletions: number;
  binary: boolean;
}

export interface DiffBounds {
  /** Bytes of one file's patch before it is cut. */
  maxFileBytes: number;
  /** Bytes of the whole unified diff of one answer before it is cut. */
  maxTotalBytes: number;
}

export const CUT_MARKER = "\n[... diff cut: larger than the server's limit ...]\n";

const COMMIT = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

const GIT_ENV = gitEnv();

function gitArgs(gitDir: string, args: string[]): string[] {
  // Paths are paths, never patterns or magic (a file named "*.txt" or ":(top)x").
  return [`--git-dir=${gitDir}`, "--literal-pathspecs", "-c", "core.quotePath=false", ...args];
}

function git(gitDir: string, args: string[], timeoutMs = 60_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile(
      "git",
      gitArgs(gitDir, args),
      {
        encoding: "buffer",
        env: GIT_ENV,
        timeout: timeoutMs,
        killSignal: "SIGKILL",
        maxBuffer: 512 * 1024 * 1024,
      },
      (error, stdout) => (error === null ? resolve(stdout) : reject(new Error(`git ${args[0]} failed`))),
    );
  });
}

function checkCommits(base: string, head: string): void {
  if (!COMMIT.test(base) || !COMMIT.test(head)) throw new Error("commits must be full object ids");
}

/** Every file changed from base to head, in path order, with status and line stats. */
export async function changedFiles(gitDir: string, base: string, head: string): Promise<ChangedFile[]> {
  checkCommits(base, head);
  const out = (await git(gitDir, ["diff", "--no-color", "--no-ext-diff", "-M", "--numstat", "--raw", "-z", base, head, "--"])).toString("utf8");
  const parts = out.split("\0");
  const files: ChangedFile[] = [];
  let i = 0;
  // --raw entries come first (":meta\0path[\0path2]\0"), then --numstat ("a\td\tpath\0" or "a\td\t\0old\0new\0").
  while (i < parts.length && parts[i]!.startsWith(":")) {
    const letter = parts[i]!.split(" ")[4]![0]!;
    if (letter === "R" || letter === "C") {
      files.push({ path: parts[i + 2]!, oldPath: parts[i + 1]!, status: letter === "R" ? "renamed" : "added", additions: 0, deletions: 0, binary: false });
      i += 3;
    } else {
      const status: FileStatus = letter === "A" ? "added" : letter === "D" ? "deleted" : "modified";
      files.push({ path: parts[i + 1]!, oldPath: "", status, additions: 0, deletions: 0, binary: false });
      i += 2;
    }
  }
  let n = 0;
  while (i < parts.length && parts[i] !== "" && n < files.length) {
    const [a, d, p] = parts[i]!.split("\t");
    const file = files[n]!;
    if (a === "-") file.binary = true;
    else {
      file.additions = Number(a);
      file.deletions = Number(d);
    }
    i += p === "" ? 3 : 1;
    n += 1;
  }
  return files.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}

/** A header line git writes, and a patch's other lines never start with (they start with ' ', '+', '-', '@' or '\\'). */
const HEADER = "diff --git ";
const HEADER_BYTES = Buffer.from(HEADER);

/** A path git writes as it is in a patch's header (with core.quotePath off): no quoting character in it. */
function plainPath(p: string): boolean {
  // eslint-disable-next-line no-control-regex
  return !/["\\\x00-\x1f\x7f]/.test(p);
}

function binaryPatch(file: ChangedFile): string {
  return `diff --git a/${file.oldPath || file.path} b/${file.path}\nBinary file ${file.path} differs (not shown)\n`;
}

function cutPatch(patch: string, maxFileBytes: number): { text: string; cut: boolean } {
  if (Buffer.byteLength(patch) <= maxFileBytes) return { text: patch, cut: false };
  return { text: Buffer.from(patch).subarray(0, maxFileBytes).toString("utf8").replace(/\uFFFD$/, "") + CUT_MARKER, cut: true };
}

/** One file's part of git diff's output: its header line and at most cap + 1 bytes of it (more: it was longer). */
interface Section {
  chunks: Buffer[];
  size: number;
}

/**
 * Splits git diff's output at each file's header as it arrives (fed in chunks that may end
 * anywhere), keeping at most cap + 1 bytes of each file's part: memory stays bounded by the
 * page, whatever a file holds. finish() gives each part's header line (without the newline)
 * and text, cut at cap with CUT_MARKER.
 */
export function sectionSplitter(cap: number): { feed(chunk: Buffer): void; finish(): { header: string; text: string; cut: boolean }[] } {
  const sections: Section[] = [];
  // The start of a line that may be a header, when a chunk ended within its first bytes.
  let pending: Buffer | undefined;
  let lineStart = true;
  const keep = (part: Buffer) => {
    const section = sections[sections.length - 1];
    if (section === undefined || section.size > cap) return;
    const take = part.subarray(0, cap + 1 - section.size);
    section.chunks.push(Buffer.from(take));
    section.size += take.length;
  };
  return {
    feed(chunk) {
      const buf = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
      pending = undefined;
      let i = 0;
      while (i < buf.length) {
        if (lineStart) {
          const rest = buf.length - i;
          if (rest < HEADER_BYTES.length && buf.subarray(i).equals(HEADER_BYTES.subarray(0, rest))) {
            pending = Buffer.from(buf.subarray(i));
            return;
          }
          if (buf.subarray(i, i + HEADER_BYTES.length).equals(HEADER_BYTES)) sections.push({ chunks: [], size: 0 });
        }
        const newline = buf.indexOf(10, i);
        const end = newline === -1 ? buf.length : newline + 1;
        keep(buf.subarray(i, end));
        lineStart = newline !== -1;
        i = end;
      }
    },
    finish() {
      if (pending !== undefined) keep(pending);
      pending = undefined;
      return sections.map((section) => {
        const bytes = Buffer.concat(section.chunks);
        const newline = bytes.indexOf(10);
        const header = bytes.subarray(0, newline === -1 ? bytes.length : newline).toString("utf8");
        const cut = section.size > cap;
        const text = cut ? bytes.subarray(0, cap).toString("utf8").replace(/\uFFFD$/, "") + CUT_MARKER : bytes.toString("utf8");
        return { header, text, cut };
      });
    },
  };
}

/** Runs git diff through a sectionSplitter. */
function diffSections(gitDir: string, args: string[], cap: number, timeoutMs = 60_000): Promise<{ header: string; text: string; cut: boolean }[]> {
  return new Promise((resolve, reject) => {
    const child = spawn("git", gitArgs(gitDir, args), { env: GIT_ENV, stdio: ["ignore", "pipe", "ignore"] });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const splitter = sectionSplitter(cap);
    child.stdout.on("data", (chunk: Buffer) => splitter.feed(chunk));
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(splitter.finish());
      else reject(new Error(`git ${args[0]} failed`));
    });
  });
}

function diffArgs(base: string, head: string, files: ChangedFile[]): string[] {
  const paths = [...new Set(files.flatMap((f) => (f.oldPath !== "" ? [f.oldPath, f.path] : [f.path])))];
  return ["diff", "--no-color", "--no-ext-diff", "-M", base, head, "--", ...paths];
}

/**
 * Each named file's patch (binary files named only), in the order given, each cut at
 * maxFileBytes with CUT_MARKER: one git command for all of them, split at each file's header
 * as it streams (no more than maxFileBytes of a file is held); a file whose header is not found
 * as expected (a path git quotes) is read on its own.
 */
export async function filePatches(gitDir: string, base: string, head: string, files: ChangedFile[], maxFileBytes: number): Promise<{ text: string; cut: boolean }[]> {
  checkCommits(base, head);
  const text = files.filter((f) => !f.binary);
  const join = (sections: { header: string; text: string; cut: boolean }[]) => {
    const byHeader = new Map<string, { text: string; cut: boolean }>();
    for (const s of sections) {
      // A file whose type changed has two patches under one header (deleted, then added).
      const before = byHeader.get(s.header);
      byHeader.set(s.header, before === undefined ? { text: s.text, cut: s.cut } : { text: before.text + s.text, cut: before.cut || s.cut });
    }
    return byHeader;
  };
  const byHeader = text.length > 0 ? join(await diffSections(gitDir, diffArgs(base, head, text), maxFileBytes)) : new Map<string, { text: string; cut: boolean }>();
  const patches: { text: string; cut: boolean }[] = [];
  for (const file of files) {
    if (file.binary) {
      patches.push({ text: binaryPatch(file), cut: false });
      continue;
    }
    const from = file.oldPath || file.path;
    let patch = plainPath(from) && plainPath(file.path) ? byHeader.get(`${HEADER}a/${from} b/${file.path}`) : undefined;
    if (patch === undefined) {
      const alone = await diffSections(gitDir, diffArgs(base, head, [file]), maxFileBytes);
      patch = { text: alone.map((s) => s.text).join(""), cut: alone.some((s) => s.cut) };
    }
    patches.push(patch.cut ? patch : cutPatch(patch.text, maxFileBytes));
  }
  return patches;
}

/** The unified diff of the named files (at most a page of them), each and all cut at the bounds. */
export async function unifiedDiff(gitDir: string, base: string, head: string, files: ChangedFile[], bounds: DiffBounds): Promise<{ text: string; cut: boolean }> {
  checkCommits(base, head);
  let text = "";
  let cut = false;
  for (const file of files) {
    const paths = file.oldPath !== "" ? [file.oldPath, file.path] : [file.path];
    const whole = file.binary ? binaryPatch(file) : (await git(gitDir, ["diff", "--no-color", "--no-ext-diff", "-M", base, head, "--", ...paths])).toString("utf8");
    const { text: patch, cut: fileCut } = cutPatch(whole, bounds.maxFileBytes);
    cut ||= fileCut;
    if (Buffer.byteLength(text) + Buffer.byteLength(patch) > bounds.maxTotalBytes) {
      text += CUT_MARKER;
      cut = true;
      break;
    }
    text += patch;
  }
  return { text, cut };
}
