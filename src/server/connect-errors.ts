// Two faults of connect-es 2.1 in errors it makes from a client's bytes, mended where every
// ConnectError is born, since some are born before any interceptor runs (a unary request's body
// is decoded first):
//  - A JSON body's bad value is quoted raw in the message, and gRPC and gRPC-Web send a message
//    through encodeURIComponent, which throws on a lone UTF-16 surrogate: the call then never
//    ends and a stack trace goes to stderr. So every message is escaped (text.ts escapeText)
//    and cut to MAX_MESSAGE_LENGTH, which also keeps a grpc-message trailer small.
//  - A protobuf body that does not parse is reported as Internal, though the client sent it:
//    it becomes InvalidArgument.
// Installed once per process by the server; clients in the same process get the same rules.
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { escapeText, truncate } from "../core/text.js";

/** Longest message an error carries, in characters. */
export const MAX_MESSAGE_LENGTH = 1024;

/** The prefix connect-es gives a protobuf body it could not parse (protocol/serialization.js). */
const PARSE_FAILURE = "parse binary: ";

let installed = false;

function own(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
}

export function installConnectErrorGuard(): void {
  if (installed) return;
  installed = true;
  // ConnectError's constructor assigns rawMessage, then code; these setters run instead and
  // store the mended values as the instance's own properties.
  Object.defineProperty(ConnectError.prototype, "rawMessage", {
    configurable: true,
    set(this: ConnectError, value: unknown) {
      own(this, "rawMessage", escapeText(truncate(String(value), MAX_MESSAGE_LENGTH)));
    },
  });
  Object.defineProperty(ConnectError.prototype, "code", {
    configurable: true,
    set(this: ConnectError, value: Code) {
      const code = value === Code.Internal && this.rawMessage.startsWith(PARSE_FAILURE) ? Code.InvalidArgument : value;
      own(this, "code", code);
      // Error.message was made from the raw text and code before either was mended.
      own(this, "message", this.rawMessage === "" ? `[${codeToString(code)}]` : `[${codeToString(code)}] ${this.rawMessage}`);
    },
  });
}
