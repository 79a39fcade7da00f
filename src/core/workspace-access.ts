// Who may fetch and push a run's workspace (issue 18, "Task branches and workspaces"). A worker
// gets each repository of its run from the server's own port, at workspacePath(session,
// repository), over git's smart HTTP (server/git-route.ts), authorised by the session's lease
// token alone: the token is the worker's proof of holding the run, the same one every other
// worker call about the session carries, and it stops working the moment the lease is lost, so
// a worker presumed dead can no longer fetch or push. What it sees is the run's task branch and
// nothing else of the server's clone; what it may push is a fast-forward of that branch.
import { stat } from "node:fs/promises";
import path from "node:path";
import { LEASED_SESSION_STATES } from "../model/tasks.js";
import * as sessions from "../store/agent-sessions.js";
import { unitTaskOfRun } from "../store/task-branches.js";
import type { Core } from "./context.js";
import { failedPrecondition, leaseLost, notFound } from "./errors.js";
import { leaseProblem, leaseTokenHash } from "./leases.js";
import { syncTaskBranch } from "./task-branches.js";

/** Where the workspace routes start. */
export const WORKSPACE_PATH_PREFIX = "/git/sessions/";

/**
 * The path, on the server's port, of a run's repository over git's smart HTTP. A worker joins it
 * to the URL it reaches the server at (it is a path, so it holds behind proxies and on every replica).
 */
export function workspacePath(sessionId: string, repositoryId: string): string {
  return `${WORKSPACE_PATH_PREFIX}${sessionId}/${repositoryId}.git`;
}

/** The largest pack a worker's push may send (git's receive.maxInputSize). */
export const MAX_PUSH_BYTES = 2 * 1024 * 1024 * 1024;

export interface WorkspaceGrant {
  sessionId: string;
  unitTaskId: string;
  workerId: string;
  repositoryId: string;
  /** The server's clone's git folder. */
  gitDir: string;
  /** The run's task branch: the only ref shown, and the only one a push may move. */
  branch: string;
}

/**
 * Checks that `leaseToken` is the live lease of the session and that the repository is one of its
 * run's; NotFound for a session or repository that is not there, or a token that is not the
 * session's lease; LEASE_LOST when no one holds the session (its run ended, or was taken back)
 * or the lease expired, FailedPrecondition when the server holds no
 * clone of the repository (it contacts no remotes, or the repository was removed).
 */
export async function grantWorkspace(core: Core, sessionId: string, repositoryId: string, leaseToken: string): Promise<WorkspaceGrant> {
  const session = await sessions.getSession(core.db, sessionId);
  const tokenHash = leaseTokenHash(leaseToken);
  if (session === undefined) throw notFound("session", sessionId);
  // A session no one holds (its run ended, or its lease was taken back, which forgets the
  // token) says so, for its last holder to stop; a live lease says nothing to another token.
  if (session.leaseTokenHash === null || !(LEASED_SESSION_STATES as readonly string[]).includes(session.state)) {
    throw leaseLost(sessionId, `no worker holds it now (it is ${session.state})`);
  }
  if (tokenHash === "" || session.leaseTokenHash !== tokenHash) throw notFound("session", sessionId, `session ${sessionId} has no lease with this token`);
  const problem = leaseProblem(session, session.workerId ?? "", tokenHash, core.now());
  if (problem !== undefined) throw leaseLost(sessionId, problem);
  const remote = (await sessions.remotesOf(core.db, session.agentTaskId)).find((r) => r.repositoryId === repositoryId);
  const unitTaskId = await unitTaskOfRun(core.db, session.agentTaskId);
  if (remote === undefined || unitTaskId === undefined) throw notFound("repository", repositoryId, `repository ${repositoryId} is not one of session ${sessionId}'s`);
  const gitDir = path.join(core.clones.dir(repositoryId), ".git");
  // This replica's clone made to agree with the branch as recorded (another replica may have taken the last push).
  const head = await syncTaskBranch(core, unitTaskId, repositoryId);
  const isClone = await stat(path.join(gitDir, "config")).then(
    (s) => s.isFile(),
    () => false,
  );
  if (head === undefined || !isClone) throw failedPrecondition(`the server holds no clone of repository ${repositoryId}`, { repository_id: repositoryId });
  return { sessionId, unitTaskId, workerId: session.workerId!, repositoryId, gitDir, branch: remote.branchName };
}

/** After a push: the branch as this replica's clone now has it, recorded for every replica. */
export async function recordWorkspacePush(core: Core, grant: WorkspaceGrant): Promise<void> {
  await syncTaskBranch(core, grant.unitTaskId, grant.repositoryId);
}
