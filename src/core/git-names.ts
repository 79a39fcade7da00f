// The one check of a git branch name: what `git check-ref-format --branch` takes, plus a length
// bound. Task branches and a repository's default branch both become git arguments.
import { textProblem } from "./text.js";

// What git refuses in a ref name besides the characters textProblem refuses (controls, tabs,
// line breaks), and a space.
const GIT_SPECIAL = /[ ~^:?*[\\]/;

/** What is wrong with a branch name, or undefined when nothing is. */
export function branchNameProblem(name: string): string | undefined {
  if (name.length > 255) return "must be at most 255 characters";
  if (name.startsWith("-") || name.startsWith("/") || name.endsWith("/")) return "must not start with - or /, nor end with /";
  if (name.endsWith(".") || name.endsWith(".lock")) return 'must not end with "." or ".lock"';
  if (name.includes("..") || name.includes("//") || name.includes("@{") || name === "@") {
    return 'must not contain "..", "//" or "@{"';
  }
  const problem = textProblem(name, { singleLine: true });
  if (problem !== undefined) return problem;
  if (GIT_SPECIAL.test(name)) return "must not contain spaces or any of ~^:?*[\\";
  if (name.split("/").some((part) => part.startsWith("."))) return 'no part may start with "."';
  return undefined;
}
