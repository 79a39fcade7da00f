// git's branch-name rules, the one check task branches and default branches share.
import { describe, expect, it } from "vitest";
import { branchNameProblem } from "../../src/core/git-names.js";

describe("branchNameProblem", () => {
  it.each(["main", "develop", "feature/login-form", "release-1.2", "v1.0.0", "user/alice/fix_42", "a".repeat(255)])(
    "accepts %j",
    (name) => {
      expect(branchNameProblem(name)).toBeUndefined();
    },
  );

  it.each([
    ["a".repeat(256), /255/],
    ["-main", /start with -/],
    ["/main", /start with/],
    ["main/", /end with \//],
    ["main.", /end with "\."/],
    ["main.lock", /\.lock/],
    ["a..b", /"\.\."/],
    ["a//b", /"\/\/"/],
    ["a@{b", /@\{/],
    ["@", /@\{/],
    ["has space", /spaces/],
    ["tab\there", /single line/],
    ["nul\u0000", /control/],
    ["del\u007f", /control/],
    ["nel\u0085", /control/],
    ["line\u2028separator", /single line/],
    ["rlo\u202ename", /bidirectional/],
    ["a~b", /~/],
    ["a^b", /~/],
    ["a:b", /~/],
    ["a?b", /~/],
    ["a*b", /~/],
    ["a[b", /~/],
    ["a\\b", /~/],
    [".hidden", /start with "\."/],
    ["feature/.hidden", /start with "\."/],
  ])("refuses %j", (name, problem) => {
    const result = branchNameProblem(name);
    expect(result).toBeDefined();
    expect(result).toMatch(problem);
  });
});
