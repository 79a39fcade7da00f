// GitHub webhook deliveries as GitHub sends them: a JSON body signed with HMAC-SHA256 under
// the webhook secret (X-Hub-Signature-256), an event name and a delivery id, POSTed with fetch.
import { createHmac, randomUUID } from "node:crypto";

export function sign(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

export interface DeliveryOptions {
  event: string;
  payload: unknown;
  /** Signs the body with this secret; undefined sends no signature (unless signature is given). */
  secret?: string;
  /** Sent as is instead of a computed signature. */
  signature?: string;
  /** Defaults to a fresh UUID. */
  deliveryId?: string;
  /** Sent instead of JSON.stringify(payload). */
  rawBody?: string;
  contentType?: string;
  method?: string;
  /** Headers left out. */
  omit?: string[];
}

export interface DeliveryResult {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
  deliveryId: string;
}

export async function deliver(baseUrl: string, options: DeliveryOptions): Promise<DeliveryResult> {
  const body = options.rawBody ?? JSON.stringify(options.payload);
  const deliveryId = options.deliveryId ?? randomUUID();
  const headers: Record<string, string> = {
    "content-type": options.contentType ?? "application/json",
    "user-agent": "GitHub-Hookshot/test",
    "x-github-event": options.event,
    "x-github-delivery": deliveryId,
    "x-github-hook-id": "1",
  };
  const signature = options.signature ?? (options.secret === undefined ? undefined : sign(options.secret, body));
  if (signature !== undefined) headers["x-hub-signature-256"] = signature;
  for (const name of options.omit ?? []) delete headers[name];
  const method = options.method ?? "POST";
  const res = await fetch(`${baseUrl}/webhooks/github`, {
    method,
    headers,
    ...(method === "GET" || method === "HEAD" ? {} : { body }),
  });
  const text = await res.text();
  return { status: res.status, body: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>), headers: res.headers, deliveryId };
}

/** The repository part of a payload, for a repository at https://github.com/{fullName}. */
export function repositoryPayload(fullName: string): Record<string, unknown> {
  return {
    id: 1296269,
    name: fullName.split("/")[1],
    full_name: fullName,
    private: false,
    html_url: `https://github.com/${fullName}`,
    url: `https://api.github.com/repos/${fullName}`,
    clone_url: `https://github.com/${fullName}.git`,
    git_url: `git://github.com/${fullName}.git`,
    ssh_url: `git@github.com:${fullName}.git`,
    svn_url: `https://github.com/${fullName}`,
  };
}

export interface IssueFields {
  number?: number;
  title?: string;
  author?: string;
  labels?: string[];
  action?: string;
}

export function issuePayload(fullName: string, fields: IssueFields = {}): Record<string, unknown> {
  const number = fields.number ?? 7;
  return {
    action: fields.action ?? "opened",
    issue: {
      url: `https://api.github.com/repos/${fullName}/issues/${number}`,
      html_url: `https://github.com/${fullName}/issues/${number}`,
      number,
      title: fields.title ?? "Crash on start",
      user: { login: fields.author ?? "octocat", id: 1 },
      labels: (fields.labels ?? ["bug", "triage"]).map((name, i) => ({ id: i + 1, name, color: "f29513" })),
      state: "open",
      body: "It crashes.",
    },
    repository: repositoryPayload(fullName),
    sender: { login: fields.author ?? "octocat", id: 1 },
  };
}

export interface PullRequestFields {
  number?: number;
  title?: string;
  author?: string;
  head?: string;
  base?: string;
  action?: string;
}

export function pullRequestPayload(fullName: string, fields: PullRequestFields = {}): Record<string, unknown> {
  const number = fields.number ?? 42;
  return {
    action: fields.action ?? "opened",
    number,
    pull_request: {
      url: `https://api.github.com/repos/${fullName}/pulls/${number}`,
      html_url: `https://github.com/${fullName}/pull/${number}`,
      number,
      title: fields.title ?? "Fix the crash",
      user: { login: fields.author ?? "hubot", id: 2 },
      head: { ref: fields.head ?? "fix-crash", sha: "a".repeat(40) },
      base: { ref: fields.base ?? "main", sha: "b".repeat(40) },
      state: "open",
    },
    repository: repositoryPayload(fullName),
    sender: { login: fields.author ?? "hubot", id: 2 },
  };
}

export function pingPayload(fullName: string): Record<string, unknown> {
  return {
    zen: "Keep it logically awesome.",
    hook_id: 1,
    hook: { type: "Repository", id: 1, events: ["issues", "pull_request"] },
    repository: repositoryPayload(fullName),
    sender: { login: "octocat", id: 1 },
  };
}
