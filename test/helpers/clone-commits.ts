// Commits made in the server's clone of a repository (a non-bare clone with no work tree files),
// with git's plumbing on a temporary index: a task branch that holds work before a worker can
// push any, for the tests of delivery.
import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { git } from "./git-remote.js";

/** A commit on refs/heads/<branch> of the clone at dir writing files (null deletes one); returns its id. */
export async function commitInClone(dir: string, branch: string, files: Record<string, string | null>, message = "A commit"): Promise<string> {
  const gitDir = path.join(dir, ".git");
  const base = ["--git-dir", gitDir];
  const parent = await git([...base, "rev-parse", "--verify", `refs/heads/${branch}`]);
  const index = path.join(os.tmpdir(), `foreman-index-${randomUUID()}`);
  const env = { GIT_INDEX_FILE: index };
  try {
    await git([...base, "read-tree", parent], { env });
    const lines: string[] = [];
    for (const [file, content] of Object.entries(files)) {
      if (content === null) {
        lines.push(`0 ${"0".repeat(40)}\t${file}`);
        continue;
      }
      const blob = await git([...base, "hash-object", "-w", "--stdin"], { input: content });
      lines.push(`100644 ${blob}\t${file}`);
    }
    await git([...base, "update-index", "--index-info"], { env, input: `${lines.join("\n")}\n` });
    const tree = await git([...base, "write-tree"], { env });
    const commit = await git([...base, "commit-tree", tree, "-p", parent, "-m", message]);
    await git([...base, "update-ref", `refs/heads/${branch}`, commit, parent]);
    return commit;
  } finally {
    await rm(index, { force: true });
  }
}
