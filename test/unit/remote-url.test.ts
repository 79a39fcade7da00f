// Pure unit tests of the remote URL rules: which git URLs are accepted and how they are
// stored, the provider a host implies, and git's branch-name rules.
import { describe, expect, it } from "vitest";
import { branchNameProblem, parseRemoteUrl, providerForHost, type ParsedRemote } from "../../src/core/remote-url.js";

describe("parseRemoteUrl accepts", () => {
  const good: [string, ParsedRemote][] = [
    [
      "https://github.com/acme/widgets.git",
      { url: "https://github.com/acme/widgets.git", host: "github.com", baseName: "widgets" },
    ],
    ["https://github.com/acme/widgets", { url: "https://github.com/acme/widgets", host: "github.com", baseName: "widgets" }],
    [
      "http://127.0.0.1:8418/git/local.git",
      { url: "http://127.0.0.1:8418/git/local.git", host: "127.0.0.1", baseName: "local" },
    ],
    ["ssh://git@host.example:22/x.git", { url: "ssh://git@host.example:22/x.git", host: "host.example", baseName: "x" }],
    ["ssh://host.example/srv/git/y", { url: "ssh://host.example/srv/git/y", host: "host.example", baseName: "y" }],
    ["git@github.com:org/repo.git", { url: "git@github.com:org/repo.git", host: "github.com", baseName: "repo" }],
    ["git://example.org/project.git", { url: "git://example.org/project.git", host: "example.org", baseName: "project" }],
    ["https://[::1]:8443/r.git", { url: "https://[::1]:8443/r.git", host: "[::1]", baseName: "r" }],
    // Trimmed, trailing slashes dropped, host lower-cased for provider matching.
    [
      "  https://GitLab.com/group/sub/proj/  ",
      { url: "https://GitLab.com/group/sub/proj", host: "gitlab.com", baseName: "proj" },
    ],
    ["git@GitHub.com:Org/Repo.git", { url: "git@GitHub.com:Org/Repo.git", host: "github.com", baseName: "Repo" }],
    // Dots inside a segment are fine; only whole "." or ".." segments are refused.
    [
      "https://github.com/acme/my.lib..v2.git",
      { url: "https://github.com/acme/my.lib..v2.git", host: "github.com", baseName: "my.lib..v2" },
    ],
  ];

  it.each(good)("%j", (input, expected) => {
    expect(parseRemoteUrl(input)).toEqual(expected);
  });

  it("accepts a URL of exactly 2048 characters", () => {
    const prefix = "https://github.com/acme/";
    const input = prefix + "a".repeat(2048 - prefix.length);
    expect(input).toHaveLength(2048);
    const parsed = parseRemoteUrl(input);
    expect(typeof parsed).toBe("object");
    expect((parsed as ParsedRemote).url).toBe(input);
  });
});

describe("parseRemoteUrl refuses", () => {
  const bad: [label: string, input: string, problem: RegExp][] = [
    ["empty", "", /required/],
    ["whitespace only", " \t\n ", /required/],
    ["whitespace inside", "https://github.com/acme/my repo.git", /whitespace/],
    ["a password in an https URL", "https://user:secret@github.com/acme/widgets.git", /credentials/],
    ["a token as user name in an https URL", "https://ghp_abc123@github.com/acme/widgets.git", /credentials/],
    ["a password in an ssh URL", "ssh://git:secret@github.com/acme/widgets.git", /credentials/],
    ["file://", "file:///srv/git/repo.git", /scheme file is not supported/],
    ["ftp://", "ftp://example.com/repo.git", /scheme ftp is not supported/],
    ["not a URL", "just-some-words", /git URL/],
    ["a relative path", "../repo.git", /git URL/],
    ["no path", "https://github.com", /repository path/],
    ["only a slash as path", "https://github.com/", /repository path/],
    ["an scp-like URL without a path", "git@github.com:", /git URL/],
    ["only .git as the last segment", "https://github.com/acme/.git", /repository path/],
    ["'..' in an https path", "https://github.com/acme/../widgets.git", /"\.\."/],
    ["'.' in an https path", "https://github.com/acme/./widgets.git", /"\.\."/],
    ["percent-encoded '..' in an https path", "https://github.com/acme/%2e%2e/widgets.git", /"\.\."/],
    ["'..' written with backslashes", "https://github.com\\acme\\..\\widgets.git", /"\.\."/],
    ["a scheme without //", "https:github.com/acme/widgets.git", /git URL/],
    ["'..' in an ssh path", "ssh://git@host.example/srv/../etc/repo.git", /"\.\."/],
    ["'..' in an scp-like path", "git@github.com:../etc/repo.git", /"\.\."/],
    ["a query string", "https://github.com/acme/widgets.git?ref=main", /query/],
    ["an empty query string", "https://github.com/acme/widgets.git?", /query/],
    ["a fragment", "https://github.com/acme/widgets.git#main", /fragment/],
    ["an invalid host", "https://exa_mple.com/acme/widgets.git", /host/],
    ["a control character", "https://github.com/acme/wid\u0000gets.git", /control/],
    ["an escape character", "git@github.com:acme/wid\u001bgets.git", /control/],
    ["a C1 control character", "https://github.com/acme/wid\u009bgets.git", /control/],
    ["a bidi override", "https://github.com/acme/\u202etegdiw.git", /bidirectional/],
    ["a line separator", "git@github.com:acme/wid\u2028gets.git", /whitespace/],
    ["malformed percent-encoding", "https://github.com/acme/%zz.git", /percent/],
    ["over 2048 characters", "https://github.com/acme/" + "a".repeat(2048), /2048/],
  ];

  it.each(bad)("%s", (_label, input, problem) => {
    const result = parseRemoteUrl(input);
    expect(typeof result).toBe("string");
    expect(result).toMatch(problem);
  });
});

describe("providerForHost", () => {
  it.each([
    ["github.com", "github"],
    ["api.github.com", "github"],
    ["gitlab.com", "gitlab"],
    ["code.gitlab.com", "gitlab"],
    ["bitbucket.org", "bitbucket"],
    ["127.0.0.1", "generic"],
    ["git.example.com", "generic"],
    // Look-alikes are not the real hosts.
    ["notgithub.com", "generic"],
    ["github.com.evil.example", "generic"],
    ["mygitlab.com", "generic"],
    ["bitbucket.org.example", "generic"],
  ])("%s -> %s", (host, provider) => {
    expect(providerForHost(host)).toBe(provider);
  });

  it("works on the host parseRemoteUrl returns, whatever the case written", () => {
    const parsed = parseRemoteUrl("git@GITHUB.COM:acme/widgets.git") as ParsedRemote;
    expect(providerForHost(parsed.host)).toBe("github");
  });
});

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
    ["tab\there", /control/],
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
