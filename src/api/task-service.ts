import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  DiffHeadSource,
  FileStatus,
  TaskChangeSchema,
  TaskService,
  WatchTasksResponseSchema,
  type WatchTasksResponse,
} from "../../gen/foreman/v1/task_pb.js";
import { requireUser } from "./principal.js";
import { callLogger, untilClosed } from "./context-keys.js";
import type { Core } from "../core/context.js";
import type { FeedItem } from "../core/task-feed.js";
import * as taskDiff from "../core/task-diff.js";
import * as tasks from "../core/tasks.js";
import { waitingReasons } from "../core/waiting-reasons.js";
import { AGENT_TYPES, TASK_CHANGE_TYPES, TASK_KINDS, TASK_STATUSES } from "./enums.js";
import { compositeTaskToProto, taskToProto, unitTaskToProto } from "./task-convert.js";

export function taskService(core: Core): ServiceImpl<typeof TaskService> {
  // Core logs a call's work on the call's logger, which carries its request id.
  const log = (ctx: HandlerContext) => callLogger(ctx, core.logger);
  // Each task answered carries why its queued run has no worker: one read for a whole page.
  const reasons = (list: tasks.Task[]) => waitingReasons(core, list);
  const reasonOf = async (task: tasks.Task) => (await reasons([task])).get(task.id) ?? "";
  const answer = async (task: tasks.Task) => ({ task: taskToProto(task, await reasonOf(task)) });
  return {
    async createUnitTask(req, ctx) {
      const task = await tasks.createUnitTask(core, log(ctx), requireUser(ctx), {
        ...req,
        agentType: AGENT_TYPES.read(req.agentType),
      });
      return { unitTask: unitTaskToProto(task, await reasonOf(task)) };
    },
    async createCompositeTask(req, ctx) {
      const task = await tasks.createCompositeTask(core, log(ctx), requireUser(ctx), {
        ...req,
        planningAgentType: AGENT_TYPES.read(req.planningAgentType),
        executionAgentType: AGENT_TYPES.read(req.executionAgentType),
      });
      return { compositeTask: compositeTaskToProto(task, await reasonOf(task)) };
    },
    async getTask(req, ctx) {
      return answer(await tasks.getTask(core, requireUser(ctx), req.id));
    },
    async listTasks(req, ctx) {
      const page = await tasks.listTasks(core, requireUser(ctx), {
        ...req,
        statuses: TASK_STATUSES.readAll(req.statuses),
        kind: TASK_KINDS.read(req.kind),
      });
      const why = await reasons(page.items);
      return { tasks: page.items.map((t) => taskToProto(t, why.get(t.id) ?? "")), nextPageToken: page.nextPageToken };
    },
    async updateTaskStatus(req, ctx) {
      return answer(await tasks.updateTaskStatus(core, log(ctx), requireUser(ctx), { id: req.id, status: TASK_STATUSES.read(req.status) }));
    },
    async deleteTask(req, ctx) {
      await tasks.deleteTask(core, log(ctx), requireUser(ctx), req.id);
      return {};
    },
    async retryTask(req, ctx) {
      return answer(await tasks.retryTask(core, log(ctx), requireUser(ctx), req.id));
    },
    async approveTask(req, ctx) {
      return answer(await tasks.approveTask(core, log(ctx), requireUser(ctx), req.id));
    },
    async rejectTask(req, ctx) {
      return answer(await tasks.rejectTask(core, log(ctx), requireUser(ctx), req));
    },
    async requestChanges(req, ctx) {
      return answer(await tasks.requestChanges(core, log(ctx), requireUser(ctx), req));
    },
    async getTaskDiff(req, ctx) {
      const diff = await taskDiff.getTaskDiff(core, requireUser(ctx), req);
      const status = { added: FileStatus.ADDED, modified: FileStatus.MODIFIED, deleted: FileStatus.DELETED, renamed: FileStatus.RENAMED };
      const source = { "end-commit": DiffHeadSource.END_COMMIT, "next-run-base": DiffHeadSource.NEXT_RUN_BASE, "branch-head": DiffHeadSource.BRANCH_HEAD };
      const repositories = diff.repositories.map((r) => ({
        ...r,
        headSource: source[r.headSource],
        files: r.files.map((f) => ({ ...f, status: status[f.status] })),
      }));
      const first = repositories[0]!;
      return {
        baseCommit: first.baseCommit,
        headCommit: first.headCommit,
        unifiedDiff: first.unifiedDiff,
        files: first.files,
        headSource: first.headSource,
        nextPageToken: diff.nextPageToken,
        truncated: diff.truncated,
        totalFiles: diff.totalFiles,
        repositories,
      };
    },
    async *watchTasks(req, ctx): AsyncGenerator<WatchTasksResponse> {
      const userId = requireUser(ctx);
      for await (const item of untilClosed(ctx, (signal) => tasks.watchTasks(core, userId, req, signal))) {
        yield "keepAlive" in item ? KEEP_ALIVE : changeMessage(item.change);
      }
    },
  };
}

const KEEP_ALIVE = create(WatchTasksResponseSchema, { event: { case: "keepAlive", value: {} } });

/**
 * Every stream of a workspace gets the same change object from the shared feed: convert it
 * once, not once per stream (that conversion was a tenth of the server's CPU with 1000 streams).
 */
const changeMessages = new WeakMap<FeedItem, WatchTasksResponse>();

function changeMessage(item: FeedItem): WatchTasksResponse {
  let message = changeMessages.get(item);
  if (message === undefined) {
    message = create(WatchTasksResponseSchema, {
      event: {
        case: "change",
        value: create(TaskChangeSchema, {
          type: TASK_CHANGE_TYPES.value(item.type),
          taskId: item.taskId,
          ...(item.task ? { task: taskToProto(item.task, item.waitingReason) } : {}),
          cursor: String(item.id),
          changeTime: timestampFromDate(item.at),
        }),
      },
    });
    changeMessages.set(item, message);
  }
  return message;
}
