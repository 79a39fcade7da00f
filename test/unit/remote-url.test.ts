// Pure unit tests of the remote URL rules: which git URLs are accepted and how they are
// stored, and the provider a host implies (git's branch-name rules are in git-names.test.ts).
import { describe, expect, it } from "vitest";
import { canonicalRemote, parseRemoteUrl, privateHostProblem, providerForHost, type ParsedRemote } from "../../src/core/remote-url.js";

describe("parseRemoteUrl accepts", () => {
  const good: [string, ParsedRemote][] = [
    // A folder on the server's machine (single-user mode only, core/repositories.ts): no host.
    ["/srv/git/repo.git", { url: "/srv/git/repo.git", host: "", baseName: "repo" }],
    ["file:///srv/git/repo.git", { url: "file:///srv/git/repo.git", host: "", baseName: "repo" }],
    ["/srv/git/Repo/", { url: "/srv/git/Repo", host: "", baseName: "Repo" }],
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
    // A host in Unicode is stored and shown in its ASCII (punycode) form, in every URL form.
    ["https://bücher.de/x/y.git", { url: "https://xn--bcher-kva.de/x/y.git", host: "xn--bcher-kva.de", baseName: "y" }],
    ["ssh://git@bücher.de:2222/x/y.git", { url: "ssh://git@xn--bcher-kva.de:2222/x/y.git", host: "xn--bcher-kva.de", baseName: "y" }],
    ["git://bücher.de/y", { url: "git://xn--bcher-kva.de/y", host: "xn--bcher-kva.de", baseName: "y" }],
    ["git@bücher.de:x/y.git", { url: "git@xn--bcher-kva.de:x/y.git", host: "xn--bcher-kva.de", baseName: "y" }],
    ["https://ＧｉｔＨｕｂ.com/acme/w.git", { url: "https://github.com/acme/w.git", host: "github.com", baseName: "w" }],
    // Numeric IPv4 forms and IPv6 are stored as the address they name, in every URL form.
    ["http://2130706433/x/r.git", { url: "http://127.0.0.1/x/r.git", host: "127.0.0.1", baseName: "r" }],
    ["ssh://0x7f.1/r", { url: "ssh://127.0.0.1/r", host: "127.0.0.1", baseName: "r" }],
    ["git@017700000001:x/r.git", { url: "git@127.0.0.1:x/r.git", host: "127.0.0.1", baseName: "r" }],
    ["https://[::FFFF:127.0.0.1]:8443/r", { url: "https://[::ffff:7f00:1]:8443/r", host: "[::ffff:7f00:1]", baseName: "r" }],
    // Percent-encoded characters a path may hold.
    ["https://github.com/acme/my%20lib.git", { url: "https://github.com/acme/my%20lib.git", host: "github.com", baseName: "my lib" }],
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
    ["file:// with a host", "file://server/srv/git/repo.git", /file:\/\/\/ URL/],
    ["'..' in a local path", "/srv/git/../etc/repo.git", /"\.\."/],
    ["'..' percent-encoded in a file:// URL", "file:///srv/%2e%2e/repo.git", /"\.\."/],
    ["the root folder", "/", /is required|must name/],
    ["a relative path", "srv/git/repo.git", /must be an http\(s\):\/\/, ssh:\/\/ or user@host:path git URL/],
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
    // Option injection: git and ssh would read a leading "-" as an option.
    ["a leading dash (scp-like)", "-u@github.com:fuzz/a.git", /must not start with "-"/],
    ["a leading dash (a bare option)", "-oProxyCommand=touch@x:y", /must not start with "-"/],
    ["an ssh user name that is an option", "ssh://-oProxyCommand=x@host.example/r.git", /user name/],
    ["a percent-encoded ssh user name that is an option", "ssh://%2Du@host.example/r.git", /user name/],
    ["a host that is an option", "git@-oProxyCommand:x/y.git", /host/],
    // Percent-encoded characters a path may not hold.
    ["%00 in a path", "https://github.com/acme/a%00b.git", /percent-encoded.*control/],
    ["%0a in a path", "https://github.com/acme/a%0ab.git", /percent-encoded.*single line/],
    ["%1b in a path", "ssh://git@host.example/a%1bb.git", /percent-encoded.*control/],
    ["%7f in a path", "git://host.example/a%7F", /percent-encoded.*control/],
    ["a percent-encoded C1 control (NEL) in a path", "https://github.com/acme/a%c2%85b.git", /percent-encoded.*control/],
    ["a percent-encoded bidi override in a path", "https://github.com/acme/%e2%80%aeb.git", /percent-encoded.*bidirectional/],
    // Hosts: written plainly, and valid however written.
    ["a percent-encoded host", "https://b%C3%BCcher.de/x/y.git", /host/],
    ["a host of five numbers", "ssh://1.2.3.4.5/x.git", /host/],
    ["an IPv4 number too large", "http://0x100000000/x.git", /host/],
    ["an IPv6 zone", "https://[fe80::1%25eth0]/x.git", /git URL|host/],
  ];

  it.each(bad)("%s", (_label, input, problem) => {
    const result = parseRemoteUrl(input);
    expect(typeof result).toBe("string");
    expect(result).toMatch(problem);
  });
});

describe("privateHostProblem", () => {
  const hostOf = (url: string) => (parseRemoteUrl(url) as ParsedRemote).host;

  it.each([
    ["http://127.0.0.1/x", /loopback/],
    ["http://127.255.0.9/x", /loopback/],
    ["https://[::1]/x", /loopback/],
    ["https://[0:0:0:0:0:0:0:1]/x", /loopback/],
    ["http://localhost/x", /loopback/],
    ["http://LOCALHOST:8080/x", /loopback/],
    ["http://api.localhost/x", /loopback/],
    ["git@localhost:x/y.git", /loopback/],
    ["ssh://git@localhost/x", /loopback/],
    ["http://169.254.169.254/latest/meta-data", /link-local/],
    ["https://[fe80::1]/x", /link-local/],
    ["https://[febf::1]/x", /link-local/],
    ["http://10.1.2.3/x", /private/],
    ["http://172.16.0.1/x", /private/],
    ["http://172.31.255.255/x", /private/],
    ["http://192.168.1.1/x", /private/],
    ["http://100.64.0.1/x", /private/],
    ["http://100.127.255.255/x", /private/],
    ["https://[fc00::1]/x", /private/],
    ["https://[fd12:3456::1]/x", /private/],
    ["http://0.0.0.0/x", /reserved/],
    ["http://0/x", /reserved/],
    ["https://[::]/x", /reserved/],
    ["http://224.0.0.1/x", /reserved/],
    ["http://255.255.255.255/x", /reserved/],
    ["https://[ff02::1]/x", /reserved/],
    // The numeric forms WHATWG URL (and inet_aton, which ssh and git use) read as 127.0.0.1.
    ["http://2130706433/x", /loopback/],
    ["http://0x7f000001/x", /loopback/],
    ["http://017700000001/x", /loopback/],
    ["http://0x7f.1/x", /loopback/],
    ["http://127.1/x", /loopback/],
    ["ssh://2130706433/x", /loopback/],
    ["git://0x7f.1/x", /loopback/],
    ["git@2130706433:x/y.git", /loopback/],
    // IPv4 inside IPv6: mapped, compatible, NAT64 and 6to4.
    ["https://[::ffff:127.0.0.1]/x", /loopback/],
    ["https://[::ffff:a9fe:a9fe]/x", /link-local/],
    ["https://[::10.0.0.1]/x", /private/],
    ["https://[64:ff9b::a00:1]/x", /private/],
    ["https://[2002:7f00:1::]/x", /loopback/],
  ])("refuses %s", (url, problem) => {
    expect(privateHostProblem(hostOf(url))).toMatch(problem);
  });

  it.each([
    "https://github.com/a/b",
    "git@github.com:a/b.git",
    "http://8.8.8.8/x",
    "http://172.15.255.255/x",
    "http://172.32.0.1/x",
    "http://100.63.255.255/x",
    "http://100.128.0.1/x",
    "http://169.253.0.1/x",
    "http://192.167.1.1/x",
    "https://[2606:4700::1111]/x",
    "https://[::ffff:8.8.8.8]/x",
    "http://localhost.example.com/x",
    "http://mylocalhost/x",
  ])("allows %s", (url) => {
    expect(privateHostProblem(hostOf(url))).toBeUndefined();
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

describe("canonicalRemote", () => {
  it("gives every spelling of one GitHub repository one key", () => {
    const spellings = [
      "https://github.com/acme/widgets.git",
      "https://github.com/acme/widgets",
      "https://github.com/acme/widgets/",
      "https://github.com/acme/widgets.git/",
      "  https://GitHub.COM/Acme/Widgets.git ",
      "http://github.com/acme/widgets",
      "https://github.com:443/acme/widgets",
      "https://github.com//acme//widgets",
      "https://github.com/acme/%77idgets",
      "git@github.com:acme/widgets.git",
      "git@GITHUB.com:ACME/widgets",
      "ssh://git@github.com/acme/widgets.git",
      "ssh://git@github.com:22/Acme/Widgets",
      "ssh://github.com/acme/widgets/",
      "git://github.com/acme/widgets.git",
      "https://ＧｉｔＨｕｂ.com/acme/widgets.git",
    ];
    for (const spelling of spellings) expect(canonicalRemote(spelling), spelling).toBe("github.com/acme/widgets");
  });

  it("keeps apart what may be different remotes", () => {
    const distinct = [
      "https://github.com/acme/widgets",
      "https://github.com/acme/widgets2",
      "https://github.com/other/widgets",
      "https://gitlab.com/acme/widgets",
      // Off the hosts known to ignore case, the case of a path counts.
      "https://git.example.com/Acme/Widgets",
      "https://git.example.com/acme/widgets",
      // Another port is another server.
      "http://127.0.0.1:8080/r.git",
      "http://127.0.0.1:8081/r.git",
      "ssh://git@github.com:2222/acme/widgets",
      "https://github.com/acme/widgets/sub",
    ];
    const keys = distinct.map((url) => canonicalRemote(url));
    expect(new Set(keys).size).toBe(distinct.length);
  });

  it("keys a host in lower-case ASCII, drops default ports and keeps others", () => {
    expect(canonicalRemote("https://Git.Example.com:443/x/y.git")).toBe("git.example.com/x/y");
    expect(canonicalRemote("http://127.0.0.1:80/r.git")).toBe("127.0.0.1/r");
    expect(canonicalRemote("http://127.0.0.1:8418/git/local.git")).toBe("127.0.0.1:8418/git/local");
    expect(canonicalRemote("https://[::1]:8443/r.git")).toBe("[::1]:8443/r");
    expect(canonicalRemote("http://2130706433/x/r.git")).toBe("127.0.0.1/x/r");
    expect(canonicalRemote("https://bücher.de/x/y.git")).toBe("xn--bcher-kva.de/x/y");
    expect(canonicalRemote("ssh://git@host.example:22/x.git")).toBe(canonicalRemote("git@host.example:x.git"));
  });

  it("is undefined for a URL parseRemoteUrl refuses", () => {
    expect(canonicalRemote("")).toBeUndefined();
    expect(canonicalRemote("file://host/tmp/x")).toBeUndefined();
    expect(canonicalRemote("https://user:pw@github.com/a/b")).toBeUndefined();
  });
});

describe("local remotes", () => {
  it("key a folder by its path, with its case and its .git", () => {
    expect(canonicalRemote("/srv/git/repo.git")).toBe("file:///srv/git/repo.git");
    expect(canonicalRemote("file:///srv/git/repo.git")).toBe("file:///srv/git/repo.git");
    expect(canonicalRemote("/srv//git/repo.git/")).toBe("file:///srv/git/repo.git");
    expect(canonicalRemote("file:///srv/git/%72epo.git")).toBe("file:///srv/git/repo.git");
    expect(canonicalRemote("/srv/git/repo")).not.toBe(canonicalRemote("/srv/git/repo.git"));
    expect(canonicalRemote("/srv/git/Repo.git")).not.toBe(canonicalRemote("/srv/git/repo.git"));
  });
});
