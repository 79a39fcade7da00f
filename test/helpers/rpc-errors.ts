// Assertions on the errors the API returns: a ConnectError with the right code, an ErrorInfo
// reason to match, and for InvalidArgument a BadRequest naming the offending fields.
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";

const REASONS: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.Unimplemented]: "NOT_IMPLEMENTED",
  [Code.Unavailable]: "PROVIDER_UNAVAILABLE",
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

/** Expects the call to fail with code and its matching ErrorInfo reason. */
export async function expectCode(call: Promise<unknown>, code: Code): Promise<ConnectError> {
  const error = await rpcError(call);
  expect(Code[error.code], error.rawMessage).toBe(Code[code]);
  const infos = error.findDetails(ErrorInfoSchema);
  expect(infos).toHaveLength(1);
  expect(infos[0]?.reason).toBe(REASONS[code]);
  return error;
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
