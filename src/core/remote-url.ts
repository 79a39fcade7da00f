// Checks a git remote URL for form only (reachability is checked when the server clones it).
// Accepted: http(s)://host/path, ssh://[user@]host[:port]/path, git://host/path, scp-like
// user@host:path, and a folder on the server's machine (/abs/path or file:///abs/path, which
// only single-user mode takes). Credentials in the URL are refused: they would be stored and shown in plain
// text. The host is stored as git will connect to it: Unicode in its punycode form, a numeric
// IPv4 form (2130706433, 0x7f.1) as the dotted address it names, IPv6 in its short form.
import { domainToASCII } from "node:url";
import { textProblem } from "./text.js";

export type ProviderName = "github" | "gitlab" | "bitbucket" | "generic";

export interface ParsedRemote {
  /** The URL as stored: trimmed, with no trailing slash, its host in ASCII. */
  url: string;
  /** Lower-case ASCII; an IPv6 address in brackets. */
  host: string;
  /** The last path segment without ".git", a default repository name. */
  baseName: string;
}

const HOST = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$|^\[[0-9a-f:.]+\]$|^\d{1,3}(?:\.\d{1,3}){3}$/i;
const SCP_LIKE = /^([A-Za-z0-9._-]+)@([^:/\s]+):(?!\/\/)(\S+)$/;
// ssh would read a user name starting with "-" as an option.
const USER = /^[A-Za-z0-9._][A-Za-z0-9._-]*$/;
const USER_PROBLEM = "has a user name that is not letters, digits, '.', '_' and '-', or starts with \"-\"";

/** Returns the parsed remote, or a description of what is wrong with it. */
export function parseRemoteUrl(raw: string): ParsedRemote | string {
  const input = raw.trim().replace(/\/+$/, "");
  if (input === "") return "is required";
  if (input.length > 2048) return "must be at most 2048 characters";
  if (/\s/.test(input)) return "must not contain whitespace";
  const problem = textProblem(input, { singleLine: true });
  if (problem !== undefined) return problem;
  // git and ssh would read it as an option (-u@host:path, -oProxyCommand=…).
  if (input.startsWith("-")) return 'must not start with "-"';
  if (input.startsWith("/") || /^file:/i.test(input)) return parseLocalPath(input);

  let writtenHost: string;
  /** Where writtenHost starts in input. */
  let hostStart: number;
  let path: string;
  const scp = SCP_LIKE.exec(input);
  if (scp !== null) {
    if (!USER.test(scp[1]!)) return USER_PROBLEM;
    writtenHost = scp[2]!;
    hostStart = scp[1]!.length + 1;
    path = scp[3]!;
  } else {
    let url: URL;
    try {
      url = new URL(input);
    } catch {
      return "must be an http(s)://, ssh:// or user@host:path git URL";
    }
    if (!["http:", "https:", "ssh:", "git:"].includes(url.protocol)) {
      const scheme = url.protocol.replace(/:$/, "");
      return `${scheme.length <= 16 ? `scheme ${scheme}` : "this scheme"} is not supported; use https, http, ssh or git`;
    }
    if (!/^[a-z][a-z0-9+.-]*:\/\/[^/\\]/i.test(input)) return "must be an http(s)://, ssh:// or user@host:path git URL";
    if (url.password !== "" || (url.username !== "" && url.protocol !== "ssh:")) {
      return "must not contain credentials; push credentials are configured on the server";
    }
    if (url.search !== "" || url.hash !== "" || /[?#]/.test(input)) return "must not have a query or fragment";
    if (url.username !== "") {
      let user: string;
      try {
        user = decodeURIComponent(url.username);
      } catch {
        return "has malformed percent-encoding";
      }
      if (!USER.test(user)) return USER_PROBLEM;
    }
    // The authority and path as written: URL parsing resolves "." and ".." segments (also %2e
    // and "\\" forms) away, which would hide them from the check below while the stored URL
    // keeps them, and it leaves the host of ssh:// and git:// URLs as written.
    const authorityStart = input.indexOf("//") + 2;
    const afterScheme = input.slice(authorityStart);
    const slash = afterScheme.search(/[/\\]/);
    const authority = slash === -1 ? afterScheme : afterScheme.slice(0, slash);
    const at = authority.lastIndexOf("@");
    const hostAndPort = authority.slice(at + 1);
    writtenHost = hostAndPort.startsWith("[") ? hostAndPort.slice(0, hostAndPort.indexOf("]") + 1) : hostAndPort.replace(/:\d*$/, "");
    hostStart = authorityStart + at + 1;
    try {
      path = decodeURIComponent(slash === -1 ? "" : afterScheme.slice(slash)).replace(/\\/g, "/");
    } catch {
      return "has malformed percent-encoding";
    }
    // git decodes the path: %00, %0a or an encoded bidi override would reach it, and the clone.
    const pathProblem = textProblem(path, { singleLine: true });
    if (pathProblem !== undefined) return `has a percent-encoded character a path may not hold: it ${pathProblem}`;
  }
  const host = asciiHost(writtenHost);
  if (host === undefined) return "has a host that is not a valid host name";
  const segments = path.split("/").filter((s) => s !== "");
  if (segments.length === 0) return "must name a repository path after the host";
  if (segments.some((s) => s === "." || s === "..")) return 'must not contain "." or ".." path segments';
  const baseName = segments[segments.length - 1]!.replace(/\.git$/, "");
  if (baseName === "") return "must name a repository path after the host";
  // Written otherwise than in case alone (Unicode, a numeric IPv4 form): store the ASCII form.
  const url = host === writtenHost.toLowerCase() ? input : input.slice(0, hostStart) + host + input.slice(hostStart + writtenHost.length);
  return { url, host, baseName };
}

/**
 * A folder on the server's machine, written as an absolute path or a file:/// URL: host "" (no
 * host), the URL as typed. Only single-user mode takes one (core/repositories.ts): the one user
 * owns the machine the server runs on.
 */
function parseLocalPath(input: string): ParsedRemote | string {
  let path: string;
  if (input.startsWith("/")) {
    path = input;
  } else {
    if (!/^file:\/\/\//i.test(input)) return "must be a file:/// URL (no host: it names a folder on the server's machine) or an absolute path";
    if (/[?#]/.test(input)) return "must not have a query or fragment";
    try {
      path = decodeURIComponent(input.slice("file://".length));
    } catch {
      return "has malformed percent-encoding";
    }
    const pathProblem = textProblem(path, { singleLine: true });
    if (pathProblem !== undefined) return `has a percent-encoded character a path may not hold: it ${pathProblem}`;
  }
  if (path.includes("\\")) return 'must not contain "\\" in a local path';
  const segments = path.split("/").filter((s) => s !== "");
  if (segments.length === 0) return "must name a repository folder, not /";
  if (segments.some((s) => s === "." || s === "..")) return 'must not contain "." or ".." path segments';
  const baseName = segments[segments.length - 1]!.replace(/\.git$/, "");
  if (baseName === "") return "must name a repository folder";
  return { url: input, host: "", baseName };
}

/** Whether a parsed remote is a folder on the server's machine (an absolute path or a file:/// URL). */
export function isLocalRemote(remote: ParsedRemote): boolean {
  return remote.host === "";
}

/** The absolute path a local remote names, its repeated slashes folded. */
export function localRemotePath(remote: ParsedRemote): string {
  const path = remote.url.startsWith("/") ? remote.url : decodeURIComponent(remote.url.slice("file://".length));
  return `/${path.split("/").filter((s) => s !== "").join("/")}`;
}

/** The host as git will connect to it, lower-case ASCII, or undefined when it is not a host. */
function asciiHost(written: string): string | undefined {
  // Some parsers decode percent-encoding in a host and others do not; no host needs it.
  if (written === "" || written.includes("%")) return undefined;
  // WHATWG host parsing (url.domainToASCII): punycode for Unicode, and the numeric IPv4 forms
  // that inet_aton (and so ssh and git) also read, written as the dotted address they name.
  const ascii = domainToASCII(written);
  return ascii !== "" && HOST.test(ascii) ? ascii : undefined;
}

/** Ports each scheme uses when none is written; an explicit default port names the same remote. */
const DEFAULT_PORTS: Record<string, string> = { "http:": "80", "https:": "443", "ssh:": "22", "git:": "9418" };
/** Hosts whose owner and repository names are case-insensitive: Acme/App is acme/app. */
const CASE_INSENSITIVE_HOSTS = new Set(["github.com", "www.github.com", "gitlab.com", "bitbucket.org"]);

/**
 * The one spelling of a remote that every other spelling of it shares, `host[:port]/path`: what
 * makes a repository unique in its workspace (a webhook then finds it once). The scheme and the
 * ssh user are left out (https://github.com/o/r, ssh://git@github.com/o/r and git@github.com:o/r
 * are one repository), and so are a port the scheme uses anyway, a trailing ".git", trailing and
 * repeated slashes and percent-encoding; the host is lower-case ASCII, and on the hosts that
 * ignore the case of names (github.com, gitlab.com, bitbucket.org) so is the path. Any other
 * port stays: two servers on one host are two remotes. Undefined for a URL parseRemoteUrl refuses.
 */
export function canonicalRemote(raw: string): string | undefined {
  const parsed = parseRemoteUrl(raw);
  if (typeof parsed === "string") return undefined;
  // A folder is itself: case, ".git" and all (x and x.git are two folders).
  if (isLocalRemote(parsed)) return `file://${localRemotePath(parsed)}`;
  let port = "";
  let path: string;
  const scp = SCP_LIKE.exec(parsed.url);
  if (scp !== null) {
    path = scp[3]!;
  } else {
    const url = new URL(parsed.url);
    port = url.port === DEFAULT_PORTS[url.protocol] ? "" : url.port;
    const afterScheme = parsed.url.slice(parsed.url.indexOf("//") + 2);
    const slash = afterScheme.search(/[/\\]/);
    path = decodeURIComponent(slash === -1 ? "" : afterScheme.slice(slash)).replace(/\\/g, "/");
  }
  let segments = path.split("/").filter((s) => s !== "");
  const last = segments[segments.length - 1]!.replace(/\.git$/, "");
  segments = [...segments.slice(0, -1), last];
  let key = segments.join("/");
  if (CASE_INSENSITIVE_HOSTS.has(parsed.host)) key = key.toLowerCase();
  return `${parsed.host}${port === "" ? "" : `:${port}`}/${key}`;
}

type AddressKind = "loopback" | "link-local" | "private" | "reserved";

const KIND_PROBLEM: Record<AddressKind, string> = {
  loopback: "points at the server itself (a loopback address)",
  "link-local": "points at a link-local address (such as a cloud metadata service)",
  private: "points at a private network address",
  reserved: "points at a reserved, unspecified or multicast address",
};

// [first address, prefix length, kind]
const IPV4_RANGES: [string, number, AddressKind][] = [
  ["0.0.0.0", 8, "reserved"], // "this network"
  ["10.0.0.0", 8, "private"],
  ["100.64.0.0", 10, "private"], // carrier-grade NAT
  ["127.0.0.0", 8, "loopback"],
  ["169.254.0.0", 16, "link-local"],
  ["172.16.0.0", 12, "private"],
  ["192.0.0.0", 24, "reserved"], // IETF protocol assignments
  ["192.168.0.0", 16, "private"],
  ["198.18.0.0", 15, "reserved"], // benchmarking
  ["224.0.0.0", 3, "reserved"], // multicast, reserved and broadcast: 224.0.0.0 and up
];

function ipv4Number(dotted: string): number {
  return dotted.split(".").reduce((n, part) => n * 256 + Number(part), 0);
}

function ipv4Kind(address: number): AddressKind | undefined {
  for (const [first, bits, kind] of IPV4_RANGES) {
    const size = 2 ** (32 - bits);
    if (Math.floor(address / size) === Math.floor(ipv4Number(first) / size)) return kind;
  }
  return undefined;
}

/** The eight 16-bit groups of an IPv6 address in brackets, as domainToASCII writes it (no dotted tail). */
function ipv6Groups(host: string): number[] {
  const [head = "", tail] = host.slice(1, -1).split("::");
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((g) => parseInt(g, 16)));
  const before = parse(head);
  const after = tail === undefined ? [] : parse(tail);
  return [...before, ...Array<number>(8 - before.length - after.length).fill(0), ...after];
}

function ipv6Kind(g: number[]): AddressKind | undefined {
  const first = g[0]!;
  if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return "loopback";
  if ((first & 0xffc0) === 0xfe80) return "link-local";
  if ((first & 0xffc0) === 0xfec0 || (first & 0xfe00) === 0xfc00) return "private"; // site-local, unique local
  if ((first & 0xff00) === 0xff00) return "reserved"; // multicast
  // An IPv4 address inside: compatible (::a.b.c.d, also ::), mapped (::ffff:a.b.c.d),
  // translated (::ffff:0:a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::).
  const zero = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  const [g0, g1, g2, g4, g5, g6, g7] = [g[0]!, g[1]!, g[2]!, g[4]!, g[5]!, g[6]!, g[7]!];
  if (zero(0, 4) && ((g4 === 0 && (g5 === 0 || g5 === 0xffff)) || (g4 === 0xffff && g5 === 0))) return ipv4Kind(g6 * 65536 + g7);
  if (g0 === 0x64 && g1 === 0xff9b && zero(2, 6)) return ipv4Kind(g6 * 65536 + g7);
  if (g0 === 0x2002) return ipv4Kind(g1 * 65536 + g2);
  return undefined;
}

/**
 * Whether a host (as parseRemoteUrl returns it) names the server itself, a link-local or private
 * network, or a reserved address: a server that fetches such a remote could be made to reach
 * what only it can reach (cloud metadata at 169.254.169.254, a port on 127.0.0.1). Only the host
 * as written is checked. A name is not resolved here, since what it resolves to when the server
 * fetches may differ from now (DNS rebinding): the fetch itself must check the address it
 * connects to.
 */
export function privateHostProblem(host: string): string | undefined {
  let kind: AddressKind | undefined;
  if (host === "localhost" || host.endsWith(".localhost")) kind = "loopback";
  else if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) kind = ipv4Kind(ipv4Number(host));
  else if (host.startsWith("[")) kind = ipv6Kind(ipv6Groups(host));
  return kind === undefined ? undefined : KIND_PROBLEM[kind];
}

export function providerForHost(host: string): ProviderName {
  if (host === "github.com" || host.endsWith(".github.com")) return "github";
  if (host === "gitlab.com" || host.endsWith(".gitlab.com")) return "gitlab";
  if (host === "bitbucket.org") return "bitbucket";
  return "generic";
}
