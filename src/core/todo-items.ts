// Todo item rules. Items belong to the owner of the repository they came from; for anyone
// else they do not exist. Status changes follow a small state machine:
//
//   pending ⇄ in_progress;  pending, in_progress → done (final) or dismissed;  dismissed → pending
//
// Setting the status an item already has changes nothing and succeeds, so a retried call is
// harmless; any other change not listed is FailedPrecondition naming the current status.
import * as store from "../store/todo-items.js";
import type { TodoItem, TodoItemSource, TodoItemStatus, TodoItemType } from "../store/todo-items.js";
import type { Core } from "./context.js";
import { failedPrecondition, notFound } from "./errors.js";
import { readPage, writePage } from "./pagination.js";
import { Violations, readId } from "./validation.js";
import { getWorkspace } from "./workspaces.js";

export type { TodoItem, TodoItemSource, TodoItemStatus, TodoItemType };

export const TODO_ITEM_STATUSES: readonly TodoItemStatus[] = ["pending", "in_progress", "done", "dismissed"];
export const TODO_ITEM_TYPES: readonly TodoItemType[] = ["issue_triage", "pr_review"];

const TRANSITIONS: Record<TodoItemStatus, readonly TodoItemStatus[]> = {
  pending: ["in_progress", "done", "dismissed"],
  in_progress: ["pending", "done", "dismissed"],
  done: [],
  dismissed: ["pending"],
};

export function canTransition(from: TodoItemStatus, to: TodoItemStatus): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

/** Reads an enum filter or value given by name (undefined: not given); a name not in allowed is a violation on field. */
function readEnum<T extends string>(v: Violations, field: string, raw: string | undefined, allowed: readonly T[], what: string): T | undefined {
  if (raw === undefined) return undefined;
  if ((allowed as readonly string[]).includes(raw)) return raw as T;
  v.add(field, `${raw} is not a ${what}; use one of ${allowed.join(", ")}`);
  return undefined;
}

export async function getTodoItem(core: Core, ownerId: string, rawId: string): Promise<TodoItem> {
  const id = readId(rawId);
  const item = await store.getTodoItem(core.db, ownerId, id);
  if (item === undefined) throw notFound("todo item", id);
  return item;
}

export interface ListTodoItemsInput {
  workspaceId: string;
  /** "" for any repository. */
  repositoryId: string;
  /** Not given: any status. */
  status: string | undefined;
  /** Not given: any type. */
  type: string | undefined;
  pageSize: number;
  pageToken: string;
}

/** The owner's items in a workspace, oldest first, optionally narrowed by repository, status and type. */
export async function listTodoItems(
  core: Core,
  ownerId: string,
  input: ListTodoItemsInput,
): Promise<{ items: TodoItem[]; nextPageToken: string }> {
  const v = new Violations();
  const workspaceId = v.id("workspace_id", input.workspaceId);
  const repositoryId = v.optionalId("repository_id", input.repositoryId);
  const status = readEnum(v, "status", input.status, TODO_ITEM_STATUSES, "todo item status");
  const type = readEnum(v, "type", input.type, TODO_ITEM_TYPES, "todo item type");
  const scope = `todo_items:${workspaceId}:${repositoryId ?? ""}:${status ?? ""}:${type ?? ""}`;
  const page = readPage(v, input.pageSize, input.pageToken, scope);
  v.throwIfAny();
  await getWorkspace(core, ownerId, workspaceId, "workspace_id");
  const filter = { workspaceId, repositoryId, status, type };
  return writePage(page, await store.listTodoItems(core.db, ownerId, filter, page));
}

/** Moves an item to status (a name, required) if the state machine allows it. */
export async function updateTodoItemStatus(
  core: Core,
  ownerId: string,
  input: { id: string; status: string | undefined },
): Promise<TodoItem> {
  const v = new Violations();
  const id = v.id("id", input.id);
  if (input.status === undefined) v.add("status", "is required");
  const to = readEnum(v, "status", input.status, TODO_ITEM_STATUSES, "todo item status");
  v.throwIfAny();
  return transition(core, ownerId, id, to!);
}

/** Dismisses an item; an item already dismissed is returned as it is. */
export async function dismissTodoItem(core: Core, ownerId: string, rawId: string): Promise<TodoItem> {
  const id = readId(rawId);
  return transition(core, ownerId, id, "dismissed");
}

/**
 * Checks the move against the item's current status and applies it only if that status still
 * holds; when another call changed it in between, checks again against the new status.
 */
async function transition(core: Core, ownerId: string, id: string, to: TodoItemStatus): Promise<TodoItem> {
  for (;;) {
    const current = await store.getTodoItem(core.db, ownerId, id);
    if (current === undefined) throw notFound("todo item", id);
    if (current.status === to) return current;
    if (!canTransition(current.status, to)) {
      const allowed = TRANSITIONS[current.status];
      throw failedPrecondition(
        `todo item ${id} is ${current.status}; it cannot become ${to}` +
          (allowed.length === 0 ? ` (${current.status} is final)` : ` (from ${current.status} it can become ${allowed.join(" or ")})`),
        { id, current_status: current.status, requested_status: to },
      );
    }
    const updated = await store.updateTodoItemStatus(core.db, ownerId, id, current.status, to, core.now());
    if (updated !== undefined) return updated;
  }
}
