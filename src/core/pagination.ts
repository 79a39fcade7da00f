// Opaque page tokens, the token half of every list call: the last id of the previous page plus
// a fingerprint of the list's filters, so a token cannot be replayed against a different query.
// The SQL half, which reads the page a PageRequest names, is store/pages.ts.
import { createHash } from "node:crypto";
import { Violations, isUuid } from "./validation.js";

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

export interface PageRequest {
  /** The last id of the previous page, in the list's order. */
  afterId: string | undefined;
  /** Rows to fetch: one more than the page size, to know whether another page follows. */
  fetch: number;
  pageSize: number;
  scope: string;
}

function fingerprint(scope: string): string {
  return createHash("sha256").update(scope).digest("base64url").slice(0, 12);
}

/** Validates page_size and page_token; scope names the list and its filters. */
export function readPage(violations: Violations, pageSize: number, pageToken: string, scope: string): PageRequest {
  if (pageSize < 0) violations.add("page_size", "must not be negative");
  const size = pageSize === 0 ? DEFAULT_PAGE_SIZE : Math.min(pageSize, MAX_PAGE_SIZE);
  let afterId: string | undefined;
  if (pageToken !== "") {
    try {
      if (pageToken.length > 200) throw new Error("too long");
      const token = JSON.parse(Buffer.from(pageToken, "base64url").toString("utf8")) as { a?: unknown; f?: unknown };
      if (typeof token.a !== "string" || !isUuid(token.a)) throw new Error("no position");
      if (token.f !== fingerprint(scope)) {
        violations.add("page_token", "belongs to a list with other filters; start again without it");
      }
      afterId = token.a;
    } catch {
      violations.add("page_token", "is not a page token this server issued");
    }
  }
  return { afterId, fetch: size + 1, pageSize: size, scope };
}

/** Trims the extra row and returns the page and the next token ("" on the last page). */
export function writePage<T extends { id: string }>(page: PageRequest, rows: T[]): { items: T[]; nextPageToken: string } {
  if (rows.length <= page.pageSize) return { items: rows, nextPageToken: "" };
  const items = rows.slice(0, page.pageSize);
  const last = items[items.length - 1]!;
  const token = Buffer.from(JSON.stringify({ a: last.id, f: fingerprint(page.scope) }), "utf8").toString("base64url");
  return { items, nextPageToken: token };
}
