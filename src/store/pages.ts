// Keyset pages, the SQL half of every list call (core/pagination.ts reads and writes the page
// tokens): the rows past the last id the client saw, in id order, one more than the page holds
// so that core can tell whether another page follows. Ids are UUIDv7, so id order is creation
// order.
import { sql, type SelectQueryBuilder } from "kysely";

/** Where a page starts and how many rows to read; core's PageRequest is one. */
export interface PageWindow {
  /** The last id of the page before, in the list's order; undefined for the first page. */
  afterId: string | undefined;
  /** Rows to read. */
  fetch: number;
}

/** The query's rows past the window's id, oldest first ("asc") or newest first ("desc"). */
export function keysetPage<DB, TB extends keyof DB, O>(
  query: SelectQueryBuilder<DB, TB, O>,
  page: PageWindow,
  order: "asc" | "desc" = "asc",
): Promise<O[]> {
  const id = sql.ref<string>("id");
  const past = page.afterId === undefined ? query : query.where(id, order === "asc" ? ">" : "<", page.afterId);
  return past.orderBy(id, order).limit(page.fetch).execute();
}
