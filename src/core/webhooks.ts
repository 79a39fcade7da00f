// GitHub webhook deliveries. A delivery names its repository by URL; every known repository
// whose stored remote URL matches is a candidate, and a candidate accepts the delivery only if
// X-Hub-Signature-256 is the HMAC-SHA256 of the raw body under that repository's webhook secret
// (a repository without a secret accepts nothing). An opened issue becomes an issue_triage todo
// item and an opened pull request a pr_review item, one per accepting repository, owned by that
// repository's owner. The delivery id is recorded in the same transaction as the items, so a
// replayed (or concurrently repeated) delivery creates nothing twice.
import { createHmac, timingSafeEqual } from "node:crypto";
import { newId } from "../store/codec.js";
import { isUniqueViolation } from "../store/errors.js";
import type { IssueTriageData, NewTodoItem, PrReviewData, TodoItemData } from "../store/todo-items.js";
import { insertTodoItems } from "../store/todo-items.js";
import { findWebhookTargets, insertWebhookDelivery, type WebhookTarget } from "../store/webhooks.js";
import type { Core } from "./context.js";
import { canonicalRemote, parseRemoteUrl } from "./remote-url.js";
import { openStoredSecret, SecretBoxError, webhookSecretAad } from "./secrets.js";
import { toSingleLine } from "./text.js";

export interface GithubDelivery {
  /** X-GitHub-Event. */
  event: string | undefined;
  /** X-GitHub-Delivery. */
  deliveryId: string | undefined;
  /** X-Hub-Signature-256: "sha256=" and 64 hex digits. */
  signature: string | undefined;
  /** The raw body, exactly as received (the signature covers these bytes). */
  body: Buffer;
}

export type WebhookOutcome =
  /** Todo items were created. */
  | { outcome: "created"; repositoryIds: string[]; todoItems: number }
  /** A verified ping. */
  | { outcome: "pong"; repositoryIds: string[] }
  /** Nothing to do: no known repository, or a verified event that makes no item. */
  | { outcome: "ignored"; repositoryIds: string[]; reason: string }
  /** The delivery id was handled before; nothing was done again. */
  | { outcome: "duplicate"; repositoryIds: string[] }
  /** No candidate repository verified the signature (or there was none to check). */
  | { outcome: "unauthorized"; repositoryIds: string[]; reason: string }
  /** The request is not a well-formed delivery. */
  | { outcome: "bad_request"; repositoryIds: string[]; reason: string }
  /** No candidate verified, and the secret of one or more could not be decrypted (a key is missing from the configuration). */
  | { outcome: "secret_unreadable"; repositoryIds: string[]; reason: string };

/** The form of X-GitHub-Event and X-GitHub-Delivery; only a header of this form is logged. */
export const EVENT = /^[A-Za-z0-9_.-]{1,100}$/;
export const DELIVERY_ID = /^[A-Za-z0-9_.:-]{1,200}$/;
const SIGNATURE = /^sha256=([0-9a-fA-F]{64})$/;

/** The URLs the payload's repository is known by, as a stored remote URL would spell them, and its canonical keys. */
export function repositoryUrlVariants(repository: unknown): { urls: string[]; keys: string[] } {
  if (typeof repository !== "object" || repository === null) return { urls: [], keys: [] };
  const fields = repository as Record<string, unknown>;
  const urls = new Set<string>();
  const keys = new Set<string>();
  for (const key of ["clone_url", "html_url", "ssh_url", "git_url"]) {
    const raw = fields[key];
    if (typeof raw !== "string") continue;
    // The same check and normalisation AddRepository applies (trimmed, no trailing slash).
    const parsed = parseRemoteUrl(raw);
    if (typeof parsed === "string") continue;
    urls.add(parsed.url);
    // A remote may be written with or without ".git"; both name the same repository.
    urls.add(parsed.url.endsWith(".git") ? parsed.url.slice(0, -4) : `${parsed.url}.git`);
    // The remote's canonical key (as AddRepository stores it) matches every other spelling:
    // ssh://, a default port, upper case.
    const canonical = canonicalRemote(raw);
    if (canonical !== undefined) keys.add(canonical);
  }
  return { urls: [...urls].sort(), keys: [...keys].sort() };
}

/**
 * Whether signature is the HMAC-SHA256 of body under the target's secret (stored sealed:
 * SecretBoxError when it does not open).
 */
function verifies(core: Core, target: WebhookTarget, body: Buffer, signature: Buffer): boolean {
  if (target.webhookSecret === null || target.webhookSecret === "") return false;
  const secret = openStoredSecret(core, target.webhookSecret, webhookSecretAad(target.id));
  if (secret === "") return false;
  const expected = createHmac("sha256", secret).update(body).digest();
  return expected.length === signature.length && timingSafeEqual(expected, signature);
}

/** Text from the payload, made safe to store and show: single-line (src/core/text.ts), bounded. */
function cleanText(value: string, max: number): string {
  const cleaned = toSingleLine(value).trim();
  const chars = [...cleaned];
  return chars.length > max ? chars.slice(0, max).join("") : cleaned;
}

class PayloadError extends Error {}

function object(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new PayloadError(`${path} must be an object`);
  return value as Record<string, unknown>;
}

function text(value: unknown, path: string, max: number): string {
  if (typeof value !== "string") throw new PayloadError(`${path} must be a string`);
  return cleanText(value, max);
}

function webUrl(value: unknown, path: string): string {
  const url = text(value, path, 2048);
  if (!/^https?:\/\/\S+$/i.test(url)) throw new PayloadError(`${path} must be an http(s) URL`);
  return url;
}

function number(value: unknown, path: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new PayloadError(`${path} must be a whole number`);
  }
  return value;
}

function login(user: unknown, path: string): string {
  return text(object(user, path).login, `${path}.login`, 256);
}

function issueTriage(payload: Record<string, unknown>): IssueTriageData {
  const issue = object(payload.issue, "issue");
  const labels = issue.labels === undefined || issue.labels === null ? [] : issue.labels;
  if (!Array.isArray(labels)) throw new PayloadError("issue.labels must be an array");
  return {
    issueUrl: webUrl(issue.html_url, "issue.html_url"),
    issueTitle: text(issue.title, "issue.title", 1024),
    issueNumber: number(issue.number, "issue.number"),
    author: login(issue.user, "issue.user"),
    labels: labels.slice(0, 100).map((label, i) => text(object(label, `issue.labels[${i}]`).name, `issue.labels[${i}].name`, 256)),
  };
}

function prReview(payload: Record<string, unknown>): PrReviewData {
  const pr = object(payload.pull_request, "pull_request");
  return {
    prUrl: webUrl(pr.html_url, "pull_request.html_url"),
    prTitle: text(pr.title, "pull_request.title", 1024),
    prNumber: number(pr.number, "pull_request.number"),
    author: login(pr.user, "pull_request.user"),
    headBranch: text(object(pr.head, "pull_request.head").ref, "pull_request.head.ref", 1024),
    baseBranch: text(object(pr.base, "pull_request.base").ref, "pull_request.base.ref", 1024),
  };
}

/** The todo item an event makes, or undefined for an event that makes none. */
function itemFor(event: string, payload: Record<string, unknown>): TodoItemData | undefined {
  if (event === "issues" && payload.action === "opened") return { type: "issue_triage", data: issueTriage(payload) };
  if (event === "pull_request" && payload.action === "opened") return { type: "pr_review", data: prReview(payload) };
  return undefined;
}

export async function handleGithubDelivery(core: Core, delivery: GithubDelivery): Promise<WebhookOutcome> {
  const { event, deliveryId } = delivery;
  if (event === undefined || !EVENT.test(event)) {
    return { outcome: "bad_request", repositoryIds: [], reason: "X-GitHub-Event is missing or malformed" };
  }
  if (deliveryId === undefined || !DELIVERY_ID.test(deliveryId)) {
    return { outcome: "bad_request", repositoryIds: [], reason: "X-GitHub-Delivery is missing or malformed" };
  }
  const signatureMatch = SIGNATURE.exec(delivery.signature?.trim() ?? "");
  if (signatureMatch === null) {
    return {
      outcome: "unauthorized",
      repositoryIds: [],
      reason: 'X-Hub-Signature-256 is missing or malformed; expected "sha256=" and 64 hex digits',
    };
  }
  const signature = Buffer.from(signatureMatch[1]!, "hex");

  let payload: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(delivery.body.toString("utf8"));
    payload = object(parsed, "the body");
  } catch {
    return { outcome: "bad_request", repositoryIds: [], reason: "the body is not a JSON object" };
  }

  const candidates = await findWebhookTargets(core.db, repositoryUrlVariants(payload.repository));
  if (candidates.length === 0) return { outcome: "ignored", repositoryIds: [], reason: "no known repository matches" };
  // A secret that does not open (the key it was sealed with is not configured) is a server
  // fault, not the sender's: said as such when no other repository accepts the delivery.
  const unreadable: { id: string; problem: string }[] = [];
  const accepted = candidates.filter((target) => {
    try {
      return verifies(core, target, delivery.body, signature);
    } catch (error) {
      if (!(error instanceof SecretBoxError)) throw error;
      unreadable.push({ id: target.id, problem: error.message });
      return false;
    }
  });
  const repositoryIds = accepted.map((target) => target.id);
  if (unreadable.length > 0 && accepted.length > 0) {
    core.logger.error(
      { repository_ids: unreadable.map((u) => u.id), problem: unreadable[0]!.problem },
      "webhook secrets that no configured key opens were skipped",
    );
  }
  if (accepted.length === 0 && unreadable.length > 0) {
    const [first] = unreadable as [{ id: string; problem: string }];
    return {
      outcome: "secret_unreadable",
      repositoryIds: unreadable.map((u) => u.id),
      reason: `the server cannot decrypt the webhook secret of repository ${first.id}: ${first.problem}`,
    };
  }
  if (accepted.length === 0) {
    return {
      outcome: "unauthorized",
      repositoryIds: candidates.map((target) => target.id),
      reason: "the signature does not match the webhook secret of any repository this delivery is for",
    };
  }

  let item: TodoItemData | undefined;
  try {
    item = itemFor(event, payload);
  } catch (error) {
    if (error instanceof PayloadError) return { outcome: "bad_request", repositoryIds, reason: error.message };
    throw error;
  }

  const now = core.now();
  const items: NewTodoItem[] =
    item === undefined
      ? []
      : accepted.map((target) => ({
          ...item,
          id: newId(core.now().getTime()),
          ownerId: target.ownerId,
          workspaceId: target.workspaceId,
          repositoryId: target.id,
          source: "auto",
          createdAt: now,
        }));
  try {
    await core.adapter.transaction(core.db, async (tx) => {
      // First, so that a repeat of the delivery stops here (waiting for a concurrent one to commit).
      await insertWebhookDelivery(tx, {
        deliveryId,
        // One row per delivery; a delivery several repositories accepted names none of them.
        repositoryId: accepted.length === 1 ? accepted[0]!.id : null,
        event,
        receivedAt: now,
      });
      await insertTodoItems(tx, items);
    });
  } catch (error) {
    if (isUniqueViolation(error)) return { outcome: "duplicate", repositoryIds };
    throw error;
  }

  if (event === "ping") return { outcome: "pong", repositoryIds };
  if (items.length === 0) {
    const action = typeof payload.action === "string" ? ` ${cleanText(payload.action, 50)}` : "";
    return { outcome: "ignored", repositoryIds, reason: `${event}${action} makes no todo item` };
  }
  return { outcome: "created", repositoryIds, todoItems: items.length };
}
