// Assertions on the errors the API returns: a ConnectError with the right code, its ErrorInfo
// reason (given, or the code's usual one), and for InvalidArgument a BadRequest naming the
// offending fields.
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { Reason } from "../../src/core/errors.js";

/**
 * The reason a code carries where the test names none: the one reason core/errors.ts gives
 * that code today. A code with several reasons (Unavailable: PROVIDER_UNAVAILABLE, and
 * WORKER_UNAVAILABLE coming) has no default, so a test of it must say which it expects.
 */
export const DEFAULT_REASONS: Partial<Record<Code, Reason>> = {
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.Unimplemented]: "NOT_IMPLEMENTED",
};

/** The ConnectError the call fails with; fails the test if the call succeeds. */
export async function rpcError(call: Promise<unknown>): Promise<ConnectError> {
  let result: unknown;
  try {
    result = await call;
  } catch (error) {
    expect(error).toBeInstanceOf(ConnectError);
    return error as ConnectError;
  }
  throw new Error(`expected the call to fail, but it returned ${String(result)}`);
}

export interface ExpectedError {
  code: Code;
  /** The one ErrorInfo reason; by default the code's DEFAULT_REASONS entry (a code without one needs it given). */
  reason?: Reason;
  /** Text the message contains, or a pattern it matches. */
  message?: string | RegExp;
}

/** Expects the call to fail with the code, exactly one ErrorInfo with the reason, and the message if given. */
export async function expectError(call: Promise<unknown>, expected: ExpectedError): Promise<ConnectError> {
  const error = await rpcError(call);
  const reason = expected.reason ?? DEFAULT_REASONS[expected.code];
  if (reason === undefined) throw new Error(`${Code[expected.code]} has no default reason: name the one expected`);
  expect(Code[error.code], error.rawMessage).toBe(Code[expected.code]);
  expect(error.findDetails(ErrorInfoSchema).map((info) => info.reason), error.rawMessage).toEqual([reason]);
  if (typeof expected.message === "string") expect(error.rawMessage).toContain(expected.message);
  else if (expected.message !== undefined) expect(error.rawMessage).toMatch(expected.message);
  return error;
}

/** Expects the call to fail with the code and the reason (by default the code's DEFAULT_REASONS entry). */
export function expectCode(call: Promise<unknown>, code: Code, reason?: Reason): Promise<ConnectError> {
  return expectError(call, { code, reason });
}

/** The distinct fields a BadRequest detail names, sorted. */
export function violatedFields(error: ConnectError): string[] {
  const fields = error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => v.field));
  return [...new Set(fields)].sort();
}

/** Expects InvalidArgument whose BadRequest names exactly these fields. */
export async function expectInvalid(call: Promise<unknown>, ...fields: string[]): Promise<ConnectError> {
  const error = await expectCode(call, Code.InvalidArgument);
  expect(violatedFields(error)).toEqual([...new Set(fields)].sort());
  return error;
}

/** An id in the right form that names nothing. */
export const UNKNOWN_ID = "0190a4c8-7d1e-7abc-8def-0123456789ab";
