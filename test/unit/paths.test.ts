// Pure unit tests of the path rules: a repository name may not be a path to another folder,
// git's own folder or an option, and pathSegment turns any value into one safe folder name.
import path from "node:path";
import { describe, expect, it } from "vitest";
import { cloneDir, pathSegment } from "../../src/core/paths.js";
import { repositoryNameProblem } from "../../src/core/repositories.js";

describe("repositoryNameProblem", () => {
  it.each(["widgets", ".github", ".dotfiles", "a.git", "my_repo-v2.0", "v1..2", "x-", "X".repeat(100)])("accepts %j", (name) => {
    expect(repositoryNameProblem(name)).toBeUndefined();
  });

  it.each([
    ["", /required/],
    [".", /"\."/],
    ["..", /"\."/],
    ["....", /only dots/],
    [".git", /"\.git"/],
    [".Git", /"\.git"/],
    ["-rf", /option/],
    ["--upload-pack=touch", /letters, digits/],
    ["--help", /option/],
    ["a/b", /letters, digits/],
    ["a\\b", /letters, digits/],
    ["ü", /letters, digits/],
    ["x".repeat(101), /100/],
  ])("refuses %j", (name, problem) => {
    expect(repositoryNameProblem(name)).toMatch(problem);
  });
});

describe("pathSegment", () => {
  it("keeps an id as it is", () => {
    expect(pathSegment("0190a4c8-7d1e-7abc-8def-0123456789ab")).toBe("0190a4c8-7d1e-7abc-8def-0123456789ab");
  });

  it.each([".", "..", ".git", "-rf", "--help", "a/../../etc", "C:\\x", "NUL\u0000", "Ünï", "%2e%2e", "A", "~root", " "])(
    "makes %j one segment that is no path elsewhere, no option and no dot name",
    (value) => {
      const segment = pathSegment(value);
      expect(segment).toMatch(/^[a-z0-9_%][a-z0-9_%-]*$/);
      expect(path.basename(segment)).toBe(segment);
      expect([".", "..", ".git"]).not.toContain(segment);
    },
  );

  it("never maps two values to one segment, even on a case-insensitive file system", () => {
    const values = ["a", "A", "%41", "-a", "%2da", ".", "%2e", "_", "ü", "u\u0308"];
    const segments = values.map((v) => pathSegment(v).toLowerCase());
    expect(new Set(segments).size).toBe(values.length);
  });

  it("refuses what it cannot encode faithfully", () => {
    expect(() => pathSegment("")).toThrow();
    expect(() => pathSegment("\ud800")).toThrow();
    expect(() => pathSegment("x".repeat(256))).toThrow();
  });
});

describe("cloneDir", () => {
  it("puts a clone under the data folder, keyed by the repository id", () => {
    const id = "0190a4c8-7d1e-7abc-8def-0123456789ab";
    expect(cloneDir("/srv/foreman/data", id)).toBe(path.join("/srv/foreman/data", "repositories", id));
  });

  it("takes only a repository id, never a name", () => {
    for (const notAnId of ["widgets", "..", "-rf", "../0190a4c8-7d1e-7abc-8def-0123456789ab"]) {
      expect(() => cloneDir("/srv/foreman/data", notAnId)).toThrow();
    }
  });
});
