// Checks a git remote URL for form only (reachability is checked when the server clones it).
// Accepted: http(s)://host/path, ssh://[user@]host[:port]/path and scp-like user@host:path.
// Credentials in the URL are refused: they would be stored and shown in plain text.

import { textProblem } from "./text.js";

export type ProviderName = "github" | "gitlab" | "bitbucket" | "generic";

export interface ParsedRemote {
  /** The URL as stored: trimmed, with no trailing slash. */
  url: string;
  host: string;
  /** The last path segment without ".git", a default repository name. */
  baseName: string;
}

const HOST = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$|^\[[0-9a-f:.]+\]$|^\d{1,3}(?:\.\d{1,3}){3}$/i;
const SCP_LIKE = /^([A-Za-z0-9._-]+)@([^:/\s]+):(?!\/\/)(\S+)$/;

/** Returns the parsed remote, or a description of what is wrong with it. */
export function parseRemoteUrl(raw: string): ParsedRemote | string {
  const input = raw.trim().replace(/\/+$/, "");
  if (input === "") return "is required";
  if (input.length > 2048) return "must be at most 2048 characters";
  if (/\s/.test(input)) return "must not contain whitespace";
  const problem = textProblem(input, { singleLine: true });
  if (problem !== undefined) return problem;

  let host: string;
  let path: string;
  const scp = SCP_LIKE.exec(input);
  if (scp !== null) {
    host = scp[2]!;
    path = scp[3]!;
  } else {
    let url: URL;
    try {
      url = new URL(input);
    } catch {
      return "must be an http(s)://, ssh:// or user@host:path git URL";
    }
    if (!["http:", "https:", "ssh:", "git:"].includes(url.protocol)) {
      return `scheme ${url.protocol.replace(/:$/, "")} is not supported; use https, http, ssh or git`;
    }
    if (!/^[a-z][a-z0-9+.-]*:\/\/[^/\\]/i.test(input)) return "must be an http(s)://, ssh:// or user@host:path git URL";
    if (url.password !== "" || (url.username !== "" && url.protocol !== "ssh:")) {
      return "must not contain credentials; push credentials are configured on the server";
    }
    if (url.search !== "" || url.hash !== "" || /[?#]/.test(input)) return "must not have a query or fragment";
    host = url.hostname;
    // The path as written: URL parsing resolves "." and ".." segments (also %2e and "\\"
    // forms) away, which would hide them from the check below while the stored URL keeps them.
    const afterScheme = input.slice(input.indexOf("//") + 2);
    const slash = afterScheme.search(/[/\\]/);
    try {
      path = decodeURIComponent(slash === -1 ? "" : afterScheme.slice(slash)).replace(/\\/g, "/");
    } catch {
      return "has malformed percent-encoding";
    }
  }
  if (!HOST.test(host)) return `host "${host}" is not a valid host name`;
  const segments = path.split("/").filter((s) => s !== "");
  if (segments.length === 0) return "must name a repository path after the host";
  if (segments.some((s) => s === "." || s === "..")) return 'must not contain "." or ".." path segments';
  const baseName = segments[segments.length - 1]!.replace(/\.git$/, "");
  if (baseName === "") return "must name a repository path after the host";
  return { url: input, host: host.toLowerCase(), baseName };
}

export function providerForHost(host: string): ProviderName {
  if (host === "github.com" || host.endsWith(".github.com")) return "github";
  if (host === "gitlab.com" || host.endsWith(".gitlab.com")) return "gitlab";
  if (host === "bitbucket.org") return "bitbucket";
  return "generic";
}

/** git check-ref-format rules for a branch name; returns what is wrong, or undefined. */
export function branchNameProblem(name: string): string | undefined {
  if (name.length > 255) return "must be at most 255 characters";
  if (name.startsWith("-") || name.startsWith("/") || name.endsWith("/")) return "must not start with - or /, nor end with /";
  if (name.endsWith(".") || name.endsWith(".lock")) return 'must not end with "." or ".lock"';
  if (name.includes("..") || name.includes("//") || name.includes("@{") || name === "@") {
    return 'must not contain "..", "//" or "@{"';
  }
  // eslint-disable-next-line no-control-regex -- control characters are what this rejects
  if (/[\u0000-\u0020\u007f~^:?*[\\]/.test(name)) return "must not contain spaces, control characters or any of ~^:?*[\\";
  const problem = textProblem(name, { singleLine: true });
  if (problem !== undefined) return problem;
  if (name.split("/").some((part) => part.startsWith("."))) return 'no part may start with "."';
  return undefined;
}
