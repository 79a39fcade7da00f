// TTY input requests as the contract has them, and their enums' names, for SessionService
// (listing, answering, and StreamLog delivering them) and WorkerService (raising them).
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { TtyInputRequestSchema, TtyInputStatus, TtyInputType, type TtyInputRequest } from "../../gen/foreman/v1/session_pb.js";
import type * as tty from "../model/tty.js";
import { EnumNames } from "./enums.js";

export const TTY_INPUT_TYPES = new EnumNames<tty.TtyInputType, TtyInputType>({
  text: TtyInputType.TEXT,
  confirm: TtyInputType.CONFIRM,
  choice: TtyInputType.CHOICE,
});

export const TTY_INPUT_STATUSES = new EnumNames<tty.TtyInputStatus, TtyInputStatus>({
  pending: TtyInputStatus.PENDING,
  answered: TtyInputStatus.ANSWERED,
  cancelled: TtyInputStatus.CANCELLED,
});

export function ttyRequestToProto(r: tty.TtyInputRequest): TtyInputRequest {
  return create(TtyInputRequestSchema, {
    id: r.id,
    sessionId: r.sessionId,
    taskId: r.taskId,
    prompt: r.prompt,
    inputType: TTY_INPUT_TYPES.value(r.inputType),
    options: r.options,
    status: TTY_INPUT_STATUSES.value(r.status),
    response: r.response ?? "",
    createTime: timestampFromDate(r.createdAt),
    ...(r.answeredAt ? { answerTime: timestampFromDate(r.answeredAt) } : {}),
  });
}
