import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  IssueTriageDataSchema,
  PrReviewDataSchema,
  TodoItemSchema,
  TodoItemSource,
  TodoItemStatus,
  TodoItemType,
  type TodoItem as TodoItemMessage,
  type TodoService,
} from "../../gen/foreman/v1/todo_pb.js";
import { requireUser } from "./principal.js";
import type { Core } from "../core/context.js";
import * as todoItems from "../core/todo-items.js";

const STATUSES: Record<todoItems.TodoItemStatus, TodoItemStatus> = {
  pending: TodoItemStatus.PENDING,
  in_progress: TodoItemStatus.IN_PROGRESS,
  done: TodoItemStatus.DONE,
  dismissed: TodoItemStatus.DISMISSED,
};

const TYPES: Record<todoItems.TodoItemType, TodoItemType> = {
  issue_triage: TodoItemType.ISSUE_TRIAGE,
  pr_review: TodoItemType.PR_REVIEW,
};

/** The name core uses for an enum value: "" for UNSPECIFIED, the number itself for an unknown one. */
function nameOf<N extends string>(table: Record<N, number>, value: number): string {
  if (value === 0) return "";
  const found = (Object.keys(table) as N[]).find((name) => table[name] === value);
  return found ?? String(value);
}

export function todoItemToProto(t: todoItems.TodoItem): TodoItemMessage {
  return create(TodoItemSchema, {
    id: t.id,
    type: TYPES[t.type],
    source: t.source === "auto" ? TodoItemSource.AUTO : TodoItemSource.MANUAL,
    status: STATUSES[t.status],
    repositoryId: t.repositoryId,
    workspaceId: t.workspaceId,
    data:
      t.type === "issue_triage"
        ? { case: "issueTriage", value: create(IssueTriageDataSchema, t.data) }
        : { case: "prReview", value: create(PrReviewDataSchema, t.data) },
    createTime: timestampFromDate(t.createdAt),
    updateTime: timestampFromDate(t.updatedAt),
  });
}

export function todoService(core: Core): ServiceImpl<typeof TodoService> {
  return {
    async listTodoItems(req, ctx) {
      const page = await todoItems.listTodoItems(core, requireUser(ctx), {
        workspaceId: req.workspaceId,
        repositoryId: req.repositoryId,
        status: nameOf(STATUSES, req.status),
        type: nameOf(TYPES, req.type),
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      });
      return { items: page.items.map(todoItemToProto), nextPageToken: page.nextPageToken };
    },
    async getTodoItem(req, ctx) {
      return { item: todoItemToProto(await todoItems.getTodoItem(core, requireUser(ctx), req.id)) };
    },
    async updateTodoItemStatus(req, ctx) {
      const item = await todoItems.updateTodoItemStatus(core, requireUser(ctx), {
        id: req.id,
        status: nameOf(STATUSES, req.status),
      });
      return { item: todoItemToProto(item) };
    },
    async dismissTodoItem(req, ctx) {
      return { item: todoItemToProto(await todoItems.dismissTodoItem(core, requireUser(ctx), req.id)) };
    },
  };
}
