import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  IssueTriageDataSchema,
  PrReviewDataSchema,
  TodoItemSchema,
  TodoItemSource,
  type TodoItem as TodoItemMessage,
  type TodoService,
} from "../../gen/foreman/v1/todo_pb.js";
import { requireUser } from "./principal.js";
import type { Core } from "../core/context.js";
import * as todoItems from "../core/todo-items.js";
import { TODO_ITEM_SOURCES, TODO_ITEM_STATUSES, TODO_ITEM_TYPES } from "./enums.js";

export function todoItemToProto(t: todoItems.TodoItem): TodoItemMessage {
  return create(TodoItemSchema, {
    id: t.id,
    type: TODO_ITEM_TYPES.value(t.type),
    source: TODO_ITEM_SOURCES.value(t.source, TodoItemSource.MANUAL),
    status: TODO_ITEM_STATUSES.value(t.status),
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
        status: TODO_ITEM_STATUSES.read(req.status),
        type: TODO_ITEM_TYPES.read(req.type),
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
        status: TODO_ITEM_STATUSES.read(req.status),
      });
      return { item: todoItemToProto(item) };
    },
    async dismissTodoItem(req, ctx) {
      return { item: todoItemToProto(await todoItems.dismissTodoItem(core, requireUser(ctx), req.id)) };
    },
  };
}
