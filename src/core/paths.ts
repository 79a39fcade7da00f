// Paths the server builds under its data folder. A repository's clone will live in
// <data folder>/repositories/<repository id>: keyed by the id the server made, never by the
// repository's name or remote URL, which a client chose. Any other value that must become part
// of a path goes through pathSegment first.
import path from "node:path";
import { isUuid } from "./validation.js";

/** Longest segment most file systems take (255 bytes). */
const MAX_SEGMENT_BYTES = 255;

/**
 * One folder or file name made from any text, reversibly: lower-case letters, digits and "_"
 * stay; every other byte of its UTF-8 becomes %xx in lower-case hex, upper-case letters too (so
 * the segment is all lower-case, and two values never share a folder on a case-insensitive file
 * system), and so do "." (no ".", ".." or ".git") and a leading "-" (never an option to a
 * command). Throws on text it cannot encode faithfully.
 */
export function pathSegment(value: string): string {
  if (value === "") throw new Error("a path segment must not be empty");
  const bytes = Buffer.from(value, "utf8");
  // A lone surrogate would become U+FFFD, the same segment as another value.
  if (bytes.toString("utf8") !== value) throw new Error("a path segment must be well-formed Unicode");
  let segment = "";
  for (const [i, byte] of bytes.entries()) {
    const c = String.fromCharCode(byte);
    const keep = /[a-z0-9_]/.test(c) || (c === "-" && i > 0);
    segment += keep ? c : `%${byte.toString(16).padStart(2, "0")}`;
  }
  if (segment.length > MAX_SEGMENT_BYTES) throw new Error(`a path segment must be at most ${MAX_SEGMENT_BYTES} bytes once encoded`);
  return segment;
}

/**
 * Where a repository's clone lives. Only the repository's id names it; the later git code runs
 * git in this folder and passes client-chosen values (URLs, branch names) after "--" or as
 * checked values, never as the folder's name.
 */
export function cloneDir(dataDir: string, repositoryId: string): string {
  if (!isUuid(repositoryId)) throw new Error("a clone folder is named by a repository id (a UUID)");
  return path.join(dataDir, "repositories", pathSegment(repositoryId));
}
