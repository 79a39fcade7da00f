// Delivering an approved task's work upstream (issue 18, "Review and delivery"). ApproveTask
// calls deliverTask before the task moves: for each repository of the task's latest run, in
// order, the server fetches its clone, pushes the task branch to the remote with the
// repository's upstream credentials (a fast-forward only), and, when the repository's delivery
// mode says so, puts the branch's work on the base branch as just fetched (a merge commit, one
// squashed commit, or the commits replayed) and pushes that. Each repository's work runs in its
// clone's queue (core/clones.ts), after the clones and fetches queued before it.
//
// A failure throws the error the client reads and the task stays in review: a merge that
// conflicts (FailedPrecondition naming the files), a push the remote refuses (FailedPrecondition
// saying what it said), refused credentials (PermissionDenied), a remote that does not answer
// (Unavailable). Nothing is lost: the task branch stays in the clone as it was, and what a
// repository earlier in the group received stays there. Delivery is idempotent: a retried
// approval pushes again, and a remote that has the branch, or a base branch that holds its work
// already, is left as it is. Two approvals of one task at once both deliver, one after the other
// per repository; the second finds everything delivered and changes nothing upstream, and only
// one of them moves the task. A task rejected or deleted never reaches this: upstream is untouched.
//
// Credentials are opened here for the exchange and go to the git layer only; no log line, error
// or answer holds them.
import { ConnectError } from "@connectrpc/connect";
import { branchHead } from "../git/branches.js";
import { MergeConflictError, PushRefusedError, deleteLocalRef, mergeOntoBase, pushLocalRef, pushRef, refCommit, writeLocalRef, type MergeMode } from "../git/push.js";
import { RemoteError, type RemoteOptions } from "../git/remote.js";
import type { Logger } from "../logger.js";
import type { Task } from "../model/tasks.js";
import * as store from "../store/repositories.js";
import type { Repository, RunRepository } from "../store/repositories.js";
import type { Core } from "./context.js";
import { syncTaskBranch } from "./task-branches.js";
import { failedPrecondition, remoteAccessDenied, remoteUnavailable } from "./errors.js";
import { isLocalRemote, localRemotePath, parseRemoteUrl, type ProviderName } from "./remote-url.js";
import { basicCredentials, credentialsFor, fetchUrl, remoteOptions } from "./upstream.js";

/** Who the commits a merge mode makes are committed by (a rebase keeps each commit's author). */
const COMMITTER = { name: "Foreman", email: "foreman@localhost" };

/** A merge result waits here for its push, in the repository's queue (one at a time per clone). */
const DELIVERY_REF = "refs/foreman/delivery";

type Remote =
  | { kind: "http"; url: string; host: string; hadCredentials: boolean; options: RemoteOptions }
  | { kind: "folder"; folder: string; host: string; hadCredentials: false; timeoutMs: number };

export interface Delivered {
  repositoryId: string;
  branch: string;
  /** The task branch's commit, on the remote now. */
  commit: string;
  /** The base branch and the commit it points at now, when the repository's mode merges. */
  base?: { branch: string; commit: string } | undefined;
}

/**
 * Pushes the unit task's work to every repository of its latest run (see the top of this file).
 * Does nothing when the server does not contact remotes, or for a composite task. Throws the error
 * a client reads.
 */
export async function deliverTask(core: Core, log: Logger, task: Task): Promise<Delivered[]> {
  if (task.kind !== "unit") return [];
  const latest = task.agentTasks[task.agentTasks.length - 1];
  if (latest === undefined) return [];
  if (!core.remotes.contact) {
    log.debug({ task_id: task.id }, "the server contacts no remote (FOREMAN_CONTACT_REMOTES=false): the approved task is not pushed");
    return [];
  }
  const targets = await store.runRepositories(core.db, task.ownerId, latest.id);
  const delivered: Delivered[] = [];
  for (const target of targets) {
    try {
      delivered.push(await deliverOne(core, task, target));
    } catch (error) {
      log.warn(
        {
          task_id: task.id,
          repository_id: target.repository.id,
          delivered: delivered.map((d) => d.repositoryId),
          reason: error instanceof Error ? error.message : "unknown",
        },
        "approved task not delivered; it stays in review",
      );
      throw withEarlier(error, target.repository, delivered);
    }
  }
  if (delivered.length > 0) {
    log.info(
      { task_id: task.id, repositories: delivered.map((d) => ({ repository_id: d.repositoryId, branch: d.branch, commit: d.commit, base: d.base?.branch, base_commit: d.base?.commit })) },
      "approved task delivered",
    );
  }
  return delivered;
}

async function deliverOne(core: Core, task: Task, target: RunRepository): Promise<Delivered> {
  const repository = target.repository;
  // The fetch first: a merge mode merges onto the base branch as the remote has it now.
  await core.clones.sync(core, repository);
  // The branch as recorded: another replica may have taken the run's push.
  await syncTaskBranch(core, task.id, repository.id);
  const remote = await remoteOf(core, repository);
  const mode = repository.deliveryMode as "branch" | MergeMode;
  return core.clones.exclusive(repository.id, async (dir) => {
    const head = await branchHead(dir, target.branchName);
    if (head === undefined) {
      throw failedPrecondition(`repository ${repository.name} (${repository.id}) has no task branch ${target.branchName} in the server's clone; nothing can be delivered`, {
        repository_id: repository.id,
        branch: target.branchName,
      });
    }
    // What was reviewed: the commit the run ended at, when it was recorded.
    const commit = target.endCommit ?? head;
    try {
      // A merge mode's commit is made first: a merge that conflicts pushes nothing at all.
      let merged: { commit: string; alreadyThere: boolean } | undefined;
      if (mode !== "branch") {
        const base = `refs/remotes/origin/${target.baseBranch}`;
        if ((await refCommit(dir, base)) === undefined) {
          throw failedPrecondition(`the remote of repository ${repository.name} (${repository.id}) has no branch ${target.baseBranch} to ${mode} the task into`, {
            repository_id: repository.id,
            base_branch: target.baseBranch,
          });
        }
        merged = await mergeOntoBase(dir, { mode, branch: commit, base, message: mergeMessage(mode, task, target), committer: COMMITTER });
      }
      await writeLocalRef(dir, DELIVERY_REF, commit);
      await push(dir, remote, target.branchName);
      if (merged === undefined) return { repositoryId: repository.id, branch: target.branchName, commit };
      if (!merged.alreadyThere) {
        await writeLocalRef(dir, DELIVERY_REF, merged.commit);
        await push(dir, remote, target.baseBranch);
      }
      return { repositoryId: repository.id, branch: target.branchName, commit, base: { branch: target.baseBranch, commit: merged.commit } };
    } catch (error) {
      throw deliveryFailure(error, repository, remote, target);
    } finally {
      await deleteLocalRef(dir, DELIVERY_REF);
    }
  });
}

function push(dir: string, remote: Remote, remoteBranch: string): Promise<unknown> {
  return remote.kind === "http"
    ? pushRef(dir, remote.url, DELIVERY_REF, remoteBranch, remote.options)
    : pushLocalRef(dir, remote.folder, DELIVERY_REF, remoteBranch, remote.timeoutMs);
}

function mergeMessage(mode: MergeMode, task: Task, target: RunRepository): string {
  const title = task.title.trim() || `task ${task.id}`;
  const trailer = `Foreman task ${task.id}, branch ${target.branchName}`;
  return mode === "merge" ? `Merge branch '${target.branchName}' into ${target.baseBranch}\n\n${title}\n\n${trailer}\n` : `${title}\n\n${trailer}\n`;
}

/** Where the repository's remote is, with its credentials opened (as core/clones.ts reads them for a fetch). */
async function remoteOf(core: Core, repository: Repository): Promise<Remote> {
  const parsed = parseRemoteUrl(repository.remoteUrl);
  if (typeof parsed !== "string" && isLocalRemote(parsed)) {
    return { kind: "folder", folder: localRemotePath(parsed), host: "its folder", hadCredentials: false, timeoutMs: core.remotes.timeoutMs * 15 };
  }
  const url = typeof parsed === "string" ? undefined : fetchUrl(parsed);
  if (typeof parsed === "string" || url === undefined) {
    throw failedPrecondition(`repository ${repository.id} cannot be pushed to: the server reaches remotes over http(s) only`, { repository_id: repository.id });
  }
  const credentials = await credentialsFor(core, repository);
  return {
    kind: "http",
    url,
    host: parsed.host,
    hadCredentials: credentials !== undefined,
    options: { ...remoteOptions(core), credentials: basicCredentials(credentials, repository.vcsProviderType as ProviderName) },
  };
}

/** The error a client reads for a failed delivery to one repository; never a credential, nor the remote's words unredacted. */
function deliveryFailure(error: unknown, repository: Repository, remote: Remote, target: RunRepository): unknown {
  const which = `repository ${repository.name} (${repository.id})`;
  const metadata = { repository_id: repository.id, branch: target.branchName };
  if (error instanceof MergeConflictError) {
    return failedPrecondition(
      `the task branch ${target.branchName} does not ${error.mode === "rebase" ? "rebase" : "merge"} cleanly onto ${target.baseBranch} of ${which}: ` +
        `${error.files.length === 0 ? "conflicting changes" : `conflicts in ${error.files.join(", ")}`}; nothing was pushed. ` +
        "Request changes (the next run continues on the branch) or resolve it upstream, then approve again",
      { ...metadata, base_branch: target.baseBranch, conflicting_files: error.files.slice(0, 20).join(",") },
    );
  }
  if (error instanceof PushRefusedError) {
    return failedPrecondition(`the remote of ${which} refused the push: ${error.message}`, { ...metadata, remote_branch: error.remoteBranch, refusal: error.refusal });
  }
  if (error instanceof RemoteError) {
    const host = remote.host;
    switch (error.problem) {
      case "auth":
        return remoteAccessDenied(
          remote.hadCredentials
            ? `the remote at ${host} refused to let the upstream credentials of ${which} push (${error.message}); set ones that can push with SetRepositoryCredentials`
            : `the remote at ${host} asks for credentials to push to ${which} (${error.message}); set ones that can push with SetRepositoryCredentials`,
          { host, repository_id: repository.id },
        );
      case "timeout":
      case "unreachable":
        return remoteUnavailable(`the remote at ${host} did not answer the push to ${which}: ${error.message}`, { host, repository_id: repository.id });
      default:
        return failedPrecondition(`the remote of ${which} at ${host} cannot be pushed to: ${error.message}`, { host, repository_id: repository.id });
    }
  }
  return error;
}

/** Says which repositories of the group were delivered before this one failed (a retry delivers them again, which changes nothing there). */
function withEarlier(error: unknown, repository: Repository, delivered: Delivered[]): unknown {
  if (delivered.length === 0 || !(error instanceof ConnectError)) return error;
  const note = ` (repositories delivered before ${repository.id}: ${delivered.map((d) => d.repositoryId).join(", ")}; approving again delivers them again, which changes nothing there)`;
  return new ConnectError(`${error.rawMessage}${note}`, error.code, error.metadata, error.details as ConstructorParameters<typeof ConnectError>[3], error.cause);
}
