// Errors the API returns, as ConnectErrors with a google.rpc.ErrorInfo reason (and a BadRequest
// naming the fields, for invalid arguments). Core raises these; handlers let them through.
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
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "WORKER_UNAVAILABLE"
  | "PROVIDER_UNAVAILABLE"
  | "TASK_EXECUTION_FAILED"
  | "NOT_IMPLEMENTED"
  | "RESOURCE_EXHAUSTED"
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

export function notFound(kind: string, id: string): ConnectError {
  return foremanError(Code.NotFound, "NOT_FOUND", `${kind} ${id} not found`, { kind, id });
}

export function alreadyExists(kind: string, message: string, metadata: Record<string, string> = {}): ConnectError {
  return foremanError(Code.AlreadyExists, "ALREADY_EXISTS", message, { kind, ...metadata });
}

export function failedPrecondition(message: string, metadata: Record<string, string> = {}): ConnectError {
  return foremanError(Code.FailedPrecondition, "FAILED_PRECONDITION", message, metadata);
}

export function notImplemented(capability: string, issue: string): ConnectError {
  return foremanError(
    Code.Unimplemented,
    "NOT_IMPLEMENTED",
    `${capability} is not implemented yet (${issue})`,
    { capability },
  );
}
