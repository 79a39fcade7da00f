// Errors the API returns, as ConnectErrors with a google.rpc.ErrorInfo reason (and a BadRequest
// naming the fields, for invalid arguments). Every error a client reads is made here, one
// helper a case; core raises them, handlers and interceptors let them through.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, BadRequest_FieldViolationSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { truncate } from "./text.js";

export const ERROR_DOMAIN = "foreman.dev";

export type Reason =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "FAILED_PRECONDITION"
  | "LEASE_LOST"
  | "SEQUENCE_GAP"
  | "SEQUENCE_CONFLICT"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "WORKER_UNAVAILABLE"
  | "PROVIDER_UNAVAILABLE"
  | "REPLICA_UNAVAILABLE"
  | "REMOTE_UNAVAILABLE"
  | "REMOTE_ACCESS_DENIED"
  | "SERVER_BUSY"
  | "TASK_EXECUTION_FAILED"
  | "NOT_IMPLEMENTED"
  | "RESOURCE_EXHAUSTED"
  | "CANCELED"
  | "INTERNAL";

export interface FieldViolation {
  field: string;
  description: string;
}

export function foremanError(
  code: Code,
  reason: Reason,
  message: string,
  metadata: Record<string, string> = {},
  options: { violations?: FieldViolation[]; cause?: unknown } = {},
): ConnectError {
  const details = [{ desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN, metadata }) }];
  if (options.violations !== undefined && options.violations.length > 0) {
    details.push({
      desc: BadRequestSchema,
      value: create(BadRequestSchema, {
        fieldViolations: options.violations.map((v) => create(BadRequest_FieldViolationSchema, v)),
      }),
    } as never);
  }
  return new ConnectError(message, code, undefined, details, options.cause);
}

/** The reason an error of this code carries when nothing more particular is known. */
const DEFAULT_REASONS: Partial<Record<Code, Reason>> = {
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.Unimplemented]: "NOT_IMPLEMENTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.Canceled]: "CANCELED",
};

/**
 * An error the protocol layer (connect-es) made, made again with an ErrorInfo (its code's
 * reason and `metadata`) unless it has one; its other details stay as they came.
 */
export function withErrorInfo(error: ConnectError, metadata: Record<string, string>): ConnectError {
  if (error.findDetails(ErrorInfoSchema).length > 0) return error;
  const again = foremanError(error.code, DEFAULT_REASONS[error.code] ?? "INTERNAL", error.rawMessage, metadata, { cause: error.cause });
  again.details = [...error.details, ...again.details];
  return again;
}

/** An error with no details: what a bare HTTP status (415, 405) tells a client, for the log and /metrics. */
export function statusError(code: Code, message: string): ConnectError {
  return new ConnectError(message, code);
}

/** A call its client ended (it went away, or reset the stream): not a fault of the server's. */
export function clientCanceled(): ConnectError {
  return foremanError(Code.Canceled, "CANCELED", "the client ended the call");
}

/** At most this many violations are reported; the error says how many there were in all. */
export const MAX_REPORTED_VIOLATIONS = 10;
/** Longest field path or description in a reported violation, in characters. */
const MAX_VIOLATION_TEXT = 200;

/**
 * One InvalidArgument for a request's violations: the first few in the message and the
 * BadRequest detail, and the total (`total` when more were found than given) in the message
 * and the ErrorInfo metadata, so an error stays small however bad the request was.
 */
export function invalidArgument(violations: FieldViolation[], total = violations.length): ConnectError {
  const reported = violations.slice(0, MAX_REPORTED_VIOLATIONS).map((v) => ({
    field: truncate(v.field, MAX_VIOLATION_TEXT),
    description: truncate(v.description, MAX_VIOLATION_TEXT),
  }));
  let message = reported.map((v) => `${v.field}: ${v.description}`).join("; ");
  if (total > reported.length) message += `; and ${total - reported.length} more (${total} violations in all)`;
  return foremanError(Code.InvalidArgument, "INVALID_ARGUMENT", message, { violations: String(total) }, { violations: reported });
}

/** The thing is not there (or is someone else's); id goes into the metadata, so quote one a client chose freely. */
export function notFound(kind: string, id: string, message = `${kind} ${id} not found`): ConnectError {
  return foremanError(Code.NotFound, "NOT_FOUND", message, { kind, id });
}

export function alreadyExists(kind: string, message: string, metadata: Record<string, string> = {}): ConnectError {
  return foremanError(Code.AlreadyExists, "ALREADY_EXISTS", message, { kind, ...metadata });
}

export function failedPrecondition(message: string, metadata: Record<string, string> = {}): ConnectError {
  return foremanError(Code.FailedPrecondition, "FAILED_PRECONDITION", message, metadata);
}

/**
 * A worker's call about a session whose lease it does not hold (any more): the token is stale,
 * another session's, or made up. FailedPrecondition, for the worker must stop the session and
 * report nothing more; the message says why, never the token.
 */
export function leaseLost(sessionId: string, why: string): ConnectError {
  return foremanError(Code.FailedPrecondition, "LEASE_LOST", `session ${sessionId}: ${why}; stop it and report nothing more`, { session_id: sessionId });
}

/** An AppendLogs batch whose sequence does not follow what is stored; metadata stored_sequence says what is. */
export function logSequenceRefused(reason: "SEQUENCE_GAP" | "SEQUENCE_CONFLICT", message: string, metadata: Record<string, string>): ConnectError {
  return foremanError(Code.FailedPrecondition, reason, message, metadata);
}

export function unauthenticated(message: string, cause?: unknown): ConnectError {
  return foremanError(Code.Unauthenticated, "UNAUTHENTICATED", message, {}, { cause });
}

export function permissionDenied(message: string): ConnectError {
  return foremanError(Code.PermissionDenied, "PERMISSION_DENIED", message);
}

/** The identity provider could not be reached or answered nonsense: worth trying again later. */
export function providerUnavailable(message: string, cause: unknown): ConnectError {
  return foremanError(Code.Unavailable, "PROVIDER_UNAVAILABLE", message, {}, { cause });
}

/** Another server replica this call needs (the holder of a task's secrets) did not answer: worth trying again shortly. */
export function replicaUnavailable(message: string, metadata: Record<string, string> = {}): ConnectError {
  return foremanError(Code.Unavailable, "REPLICA_UNAVAILABLE", message, metadata);
}

/** A repository's git remote did not answer (refused, timed out, failed): worth trying again later. */
export function remoteUnavailable(message: string, metadata: Record<string, string> = {}): ConnectError {
  return foremanError(Code.Unavailable, "REMOTE_UNAVAILABLE", message, metadata);
}

/** A repository's git remote refused the server's credentials for it (or their absence): give others. */
export function remoteAccessDenied(message: string, metadata: Record<string, string> = {}): ConnectError {
  return foremanError(Code.PermissionDenied, "REMOTE_ACCESS_DENIED", message, metadata);
}

/** The server is overloaded right now (its database connections all stayed busy): worth trying again shortly. */
export function serverBusy(): ConnectError {
  return foremanError(Code.Unavailable, "SERVER_BUSY", "the server is too busy to answer now (all its database connections are in use); try again shortly");
}

export function resourceExhausted(message: string): ConnectError {
  return foremanError(Code.ResourceExhausted, "RESOURCE_EXHAUSTED", message);
}

/** What the client sees of a failure it did not cause: the request id to report, never the cause's text. */
export function internalError(requestId: string, cause: unknown): ConnectError {
  return foremanError(Code.Internal, "INTERNAL", `internal error (request id ${requestId})`, { request_id: requestId }, { cause });
}

/** A method of the contract this server does not serve yet; the message names what it would do. */
export function notImplemented(capability: string): ConnectError {
  return foremanError(Code.Unimplemented, "NOT_IMPLEMENTED", `${capability} is not implemented on this server yet`, { capability });
}
