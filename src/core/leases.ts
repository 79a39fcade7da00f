// A worker's hold on a session: its lease. Every worker call about a session it runs (AppendLogs,
// GetSecrets, CreateTtyInputRequest; ReportStatus and Heartbeat with rules of their own) checks
// it the same way: the session exists for the worker's owner, and the token's hash is the
// session's lease, in a leased state, not expired. Only hashes of lease tokens are stored.
import { hashToken } from "../auth/opaque-token.js";
import { LEASED_SESSION_STATES } from "../model/tasks.js";
import * as sessions from "../store/agent-sessions.js";
import type { Core } from "./context.js";
import { leaseLost, notFound } from "./errors.js";

/** Longer than any lease token this server issues: refused without hashing. */
export const LEASE_TOKEN_MAX = 1024;

/** The hash of a lease token a worker sent, as the database keeps it; "" (no lease's) for one longer than any this server issues. */
export function leaseTokenHash(token: string): string {
  return token === "" || token.length > LEASE_TOKEN_MAX ? "" : hashToken(token);
}

/** Why this worker does not hold the session's lease now (its token, a leased state, an expiry ahead), or undefined when it does. */
export function leaseProblem(s: sessions.LeasedSession, workerId: string, tokenHash: string, now: Date): string | undefined {
  if (tokenHash === "" || s.workerId !== workerId || s.leaseTokenHash !== tokenHash) return "the lease token is not this session's lease";
  if (!(LEASED_SESSION_STATES as readonly string[]).includes(s.state)) return `the session ended as ${s.state}`;
  if (s.leaseExpiresAt === null || s.leaseExpiresAt <= now) return "its lease expired (heartbeats renew it)";
  return undefined;
}

/**
 * The session a worker's call about a running session is about (AppendLogs, GetSecrets,
 * CreateTtyInputRequest), checked: not_found unless it exists for the worker's owner (another
 * user's does not exist for a worker that serves one user), LEASE_LOST unless the token is its
 * live lease. ReportStatus has rules of its own, for a repeat after the end.
 */
export async function heldSession(
  core: Core,
  caller: { workerId: string; ownerId: string | null },
  sessionId: string,
  leaseToken: string,
): Promise<{ session: sessions.LeasedSession; tokenHash: string }> {
  const session = await sessions.getSession(core.db, sessionId);
  if (session === undefined || (caller.ownerId !== null && session.ownerId !== caller.ownerId)) throw notFound("session", sessionId);
  const tokenHash = leaseTokenHash(leaseToken);
  const problem = leaseProblem(session, caller.workerId, tokenHash, core.now());
  if (problem !== undefined) throw leaseLost(sessionId, problem);
  return { session, tokenHash };
}
