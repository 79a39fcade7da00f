// The worker daemon's retry rules, in one place: which failures are worth another try, and how
// long to wait before it. Every loop (register, heartbeat, poll, commands, log outbox, report)
// asks these, so a server that goes away is met the same way everywhere.
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";

/**
 * The server is away, restarting, overloaded or the connection broke: try again. An answer
 * the server meant (InvalidArgument, NotFound, LEASE_LOST, Internal, ...) is not retried.
 */
export function isTransient(error: unknown): boolean {
  if (!(error instanceof ConnectError)) return false;
  return [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.ResourceExhausted, Code.Aborted].includes(error.code) || brokenConnection(error);
}

/** Node's codes for a connection that broke under a call or could not be made. */
const BROKEN_CONNECTION = new Set(["EPIPE", "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENETDOWN", "EAI_AGAIN"]);

/**
 * connect-node reports some of these as Internal (a write that hits a closed socket is EPIPE);
 * the server's own Internal carries no such cause.
 */
function brokenConnection(error: ConnectError): boolean {
  let cause: unknown = error.cause;
  for (let depth = 0; cause instanceof Error && depth < 8; depth++) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code !== undefined && BROKEN_CONNECTION.has(code)) return true;
    cause = cause.cause;
  }
  return false;
}

/** The ErrorInfo reason the server gave (LEASE_LOST, SEQUENCE_GAP, ...), or "". */
export function reasonOf(error: unknown): string {
  return error instanceof ConnectError ? (error.findDetails(ErrorInfoSchema)[0]?.reason ?? "") : "";
}

/** The lease of the session is gone (fenced): nothing about that session will be accepted again. */
export function isLeaseLost(error: unknown): boolean {
  return reasonOf(error) === "LEASE_LOST";
}

export interface Backoff {
  /** The first wait. */
  initialMs: number;
  /** The longest wait. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 200, maxMs: 10_000 };

/** The wait before try number `attempt` (1 is the first retry): doubling, capped, with full jitter in its upper half. */
export function backoffMs(attempt: number, backoff: Backoff = DEFAULT_BACKOFF): number {
  const ceiling = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.max(0, attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Resolves after ms, or at once when the signal aborts (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Calls `run` until it is answered: a transient failure is retried with backoff until the
 * signal aborts (then the last error is thrown); any other failure is thrown at once.
 * onRetry hears each failure that is retried, for the log.
 */
export async function untilAnswered<T>(run: () => Promise<T>, options: { signal?: AbortSignal; backoff?: Backoff; onRetry?: (error: ConnectError, attempt: number) => void } = {}): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (error) {
      if (!isTransient(error) || options.signal?.aborted) throw error;
      options.onRetry?.(error as ConnectError, attempt);
      await sleep(backoffMs(attempt, options.backoff), options.signal);
      if (options.signal?.aborted) throw error;
    }
  }
}
