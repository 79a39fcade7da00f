// Todo items, made from repository events, always scoped to their owner. An item's data is
// JSON whose shape its type names.
import type { Kysely, Selectable } from "kysely";
import type { Database, TodoItemsTable } from "../db/schema.js";
import { fromDbJson, fromDbTime, toDbTime } from "./codec.js";
import { keysetPage, type PageWindow } from "./pages.js";

export type TodoItemType = "issue_triage" | "pr_review";
export type TodoItemSource = "auto" | "manual";
export type TodoItemStatus = "pending" | "in_progress" | "done" | "dismissed";

export interface IssueTriageData {
  issueUrl: string;
  issueTitle: string;
  issueNumber: number;
  author: string;
  labels: string[];
}

export interface PrReviewData {
  prUrl: string;
  prTitle: string;
  prNumber: number;
  author: string;
  headBranch: string;
  baseBranch: string;
}

export type TodoItemData = { type: "issue_triage"; data: IssueTriageData } | { type: "pr_review"; data: PrReviewData };

export type TodoItem = TodoItemData & {
  id: string;
  ownerId: string;
  workspaceId: string;
  repositoryId: string;
  source: TodoItemSource;
  status: TodoItemStatus;
  createdAt: Date;
  updatedAt: Date;
};

function toTodoItem(row: Selectable<TodoItemsTable>): TodoItem {
  return {
    id: row.id,
    ownerId: row.owner_id,
    workspaceId: row.workspace_id,
    repositoryId: row.repository_id,
    type: row.type as TodoItemType,
    source: row.source as TodoItemSource,
    status: row.status as TodoItemStatus,
    data: fromDbJson(row.data),
    createdAt: fromDbTime(row.created_at),
    updatedAt: fromDbTime(row.updated_at),
  } as TodoItem;
}

export type NewTodoItem = TodoItemData & {
  id: string;
  ownerId: string;
  workspaceId: string;
  repositoryId: string;
  source: TodoItemSource;
  createdAt: Date;
};

/** Inserts pending items. */
export async function insertTodoItems(db: Kysely<Database>, items: NewTodoItem[]): Promise<void> {
  if (items.length === 0) return;
  await db
    .insertInto("todo_items")
    .values(
      items.map((t) => ({
        id: t.id,
        owner_id: t.ownerId,
        workspace_id: t.workspaceId,
        repository_id: t.repositoryId,
        type: t.type,
        source: t.source,
        status: "pending",
        data: JSON.stringify(t.data),
        created_at: toDbTime(t.createdAt),
        updated_at: toDbTime(t.createdAt),
      })),
    )
    .execute();
}

export async function getTodoItem(db: Kysely<Database>, ownerId: string, id: string): Promise<TodoItem | undefined> {
  const row = await db
    .selectFrom("todo_items")
    .selectAll()
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .executeTakeFirst();
  return row && toTodoItem(row);
}

export interface TodoItemFilter {
  workspaceId: string;
  repositoryId: string | undefined;
  status: TodoItemStatus | undefined;
  type: TodoItemType | undefined;
}

/** Oldest first: one page. */
export async function listTodoItems(
  db: Kysely<Database>,
  ownerId: string,
  filter: TodoItemFilter,
  page: PageWindow,
): Promise<TodoItem[]> {
  let query = db
    .selectFrom("todo_items")
    .selectAll()
    .where("owner_id", "=", ownerId)
    .where("workspace_id", "=", filter.workspaceId);
  if (filter.repositoryId !== undefined) query = query.where("repository_id", "=", filter.repositoryId);
  if (filter.status !== undefined) query = query.where("status", "=", filter.status);
  if (filter.type !== undefined) query = query.where("type", "=", filter.type);
  return (await keysetPage(query, page)).map(toTodoItem);
}

/**
 * Sets the status only if it is still `from` (compare and set), so two concurrent changes
 * cannot both pass a transition check made against the same old status. Returns the updated
 * item, or undefined when the item is gone or its status changed meanwhile.
 */
export async function updateTodoItemStatus(
  db: Kysely<Database>,
  ownerId: string,
  id: string,
  from: TodoItemStatus,
  to: TodoItemStatus,
  now: Date,
): Promise<TodoItem | undefined> {
  const row = await db
    .updateTable("todo_items")
    .set({ status: to, updated_at: toDbTime(now) })
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .where("status", "=", from)
    .returningAll()
    .executeTakeFirst();
  return row && toTodoItem(row);
}
