// git's branch-name rules, the one check task branches and default branches share.
import { describe, expect, it } from "vitest";
import { branchNameProblem } from "../../src/core/git-names.js";
import { defaultBranchName } from "../../src/core/task-branches.js";

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

describe("defaultBranchName", () => {
  const id = "01890a5d-ac96-774b-bcce-b302099a8057";
  it.each([
    ["Fix the login redirect", "foreman/fix-the-login-redirect-099a8057"],
    ["Crème brûlée: résumé über naïve", "foreman/creme-brulee-resume-uber-naive-099a8057"],
    ["  --Add /healthz!!  ", "foreman/add-healthz-099a8057"],
    ["修复登录", "foreman/099a8057"],
    ["", "foreman/099a8057"],
    // Whole words up to 40 characters; a first word longer than that is cut.
    ["one two three four five six seven eight nine ten", "foreman/one-two-three-four-five-six-seven-eight-099a8057"],
    ["x".repeat(60), `foreman/${"x".repeat(40)}-099a8057`],
  ])("makes %j into %j, a valid branch name", (title, expected) => {
    const name = defaultBranchName(title, id);
    expect(name).toBe(expected);
    expect(branchNameProblem(name)).toBeUndefined();
  });
});
