// A repository's upstream: the credentials the server reaches its remote with, and the check
// that the remote answers before anything about it is stored.
//
// Credentials are a token, or a user name and password. They are stored sealed (the secret box,
// core/secrets.ts) and bound to their repository, opened only to talk to the remote, and never
// put in an answer, a log line, an error or a worker's hands: errors here name the remote and
// what went wrong, never a credential, and never the remote's own words (which could echo one).
import { readRemoteHead, RemoteError, type BasicCredentials } from "../git/remote.js";
import type { Core } from "./context.js";
import { failedPrecondition, invalidArgument, notFound, remoteAccessDenied, remoteUnavailable } from "./errors.js";
import { readLocalHead } from "../git/local.js";
import { canonicalRemote, isLocalRemote, localRemotePath, privateHostProblem, type ParsedRemote, type ProviderName } from "./remote-url.js";
import { openStoredSecret, SecretBoxError } from "./secrets.js";
import { credentialsForFetch, replaceUpstreamCredentials, upstreamCredentialsToReseal, type CredentialTable } from "../store/repositories.js";
import { workspaceCredentials } from "../store/workspaces.js";
import type { Logger } from "../logger.js";
import { textProblem } from "./text.js";
import type { Violations } from "./validation.js";

export type UpstreamCredentials = { kind: "token"; token: string } | { kind: "password"; username: string; password: string };

const TOKEN_MAX = 4096;
const USERNAME_MAX = 256;
const PASSWORD_MAX = 4096;

/** What a repository's sealed credentials are bound to: a sealed value moved to another row does not open. */
export function upstreamCredentialsAad(repositoryId: string): string {
  return `repositories.upstream_credentials:${repositoryId}`;
}

/** What a workspace's sealed credentials are bound to: not openable as a repository's, nor another workspace's. */
export function workspaceCredentialsAad(workspaceId: string): string {
  return `workspace-upstream-credentials:${workspaceId}`;
}

/**
 * Checks credentials as the API gives them (the oneof's case, undefined for none) and adds what is
 * wrong to v under `field`. The descriptions never quote a value.
 */
export function readCredentials(
  v: Violations,
  field: string,
  given: { token: string } | { username: string; password: string } | undefined,
): UpstreamCredentials | undefined {
  if (given === undefined) return undefined;
  if ("token" in given) {
    const problem = given.token === "" ? "is required" : given.token.length > TOKEN_MAX ? `must be at most ${TOKEN_MAX} characters` : secretProblem(given.token);
    if (problem !== undefined) v.add(`${field}.token`, problem);
    return { kind: "token", token: given.token };
  }
  const username = given.username;
  const userProblem =
    username === ""
      ? "is required"
      : username.length > USERNAME_MAX
        ? `must be at most ${USERNAME_MAX} characters`
        : username.includes(":")
          ? 'must not contain ":" (HTTP basic auth cannot carry it)'
          : secretProblem(username);
  if (userProblem !== undefined) v.add(`${field}.username_password.username`, userProblem);
  const passwordProblem = given.password.length > PASSWORD_MAX ? `must be at most ${PASSWORD_MAX} characters` : secretProblem(given.password);
  if (passwordProblem !== undefined) v.add(`${field}.username_password.password`, passwordProblem);
  return { kind: "password", username, password: given.password };
}

/** One line of text with no control characters; the value itself is never described. */
/**
 * The credentials a Set…Credentials call must give: checked like readCredentials, and their
 * absence a violation that names the call that removes them instead. Call v.throwIfAny() next.
 */
export function readRequiredCredentials(
  v: Violations,
  given: { token: string } | { username: string; password: string } | undefined,
  clearWith: string,
): UpstreamCredentials {
  const credentials = readCredentials(v, "upstream_credentials", given);
  if (credentials === undefined) v.add("upstream_credentials", `is required (${clearWith} removes them)`);
  return credentials!;
}

function secretProblem(value: string): string | undefined {
  return textProblem(value, { singleLine: true }) === undefined ? undefined : "must be one line of printable text";
}

export function sealCredentials(core: Core, repositoryId: string, credentials: UpstreamCredentials): string {
  return sealWith(core, upstreamCredentialsAad(repositoryId), credentials);
}

export function sealWorkspaceCredentials(core: Core, workspaceId: string, credentials: UpstreamCredentials): string {
  return sealWith(core, workspaceCredentialsAad(workspaceId), credentials);
}

function sealWith(core: Core, aad: string, credentials: UpstreamCredentials): string {
  const plain = credentials.kind === "token" ? { token: credentials.token } : { username: credentials.username, password: credentials.password };
  return core.secrets.seal(JSON.stringify(plain), aad);
}

function openWith(core: Core, aad: string, sealed: string): UpstreamCredentials {
  const plain = JSON.parse(openStoredSecret(core, sealed, aad)) as { token?: string; username?: string; password?: string };
  return plain.token !== undefined ? { kind: "token", token: plain.token } : { kind: "password", username: plain.username ?? "", password: plain.password ?? "" };
}

/**
 * The workspace's upstream credentials, opened, for AddRepository's check of a repository given
 * none; undefined for none. FailedPrecondition when they do not open.
 */
export async function openWorkspaceCredentials(core: Core, ownerId: string, workspaceId: string): Promise<UpstreamCredentials | undefined> {
  const sealed = await workspaceCredentials(core.db, ownerId, workspaceId);
  return sealed === null ? undefined : opened(core, workspaceCredentialsAad(workspaceId), sealed, `workspace ${workspaceId}`, "SetWorkspaceCredentials");
}

/**
 * The credentials the server reaches a repository's remote with, opened, for its own git work
 * only: the repository's own, else its workspace's (SetWorkspaceCredentials), else none. NotFound
 * for no such repository; FailedPrecondition when the stored ones do not open (a key that is gone).
 */
export async function credentialsFor(core: Core, repository: { id: string; ownerId: string }): Promise<UpstreamCredentials | undefined> {
  const row = await credentialsForFetch(core.db, repository.ownerId, repository.id);
  if (row === undefined) throw notFound("repository", repository.id);
  if (row.repository !== null) {
    return opened(core, upstreamCredentialsAad(repository.id), row.repository, `repository ${repository.id}`, "SetRepositoryCredentials");
  }
  if (row.workspace !== null) {
    return opened(core, workspaceCredentialsAad(row.workspaceId), row.workspace, `workspace ${row.workspaceId}`, "SetWorkspaceCredentials");
  }
  return undefined;
}

function opened(core: Core, aad: string, sealed: string, owner: string, setWith: string): UpstreamCredentials {
  try {
    return openWith(core, aad, sealed);
  } catch (error) {
    // Its message names key ids only.
    if (error instanceof SecretBoxError) {
      throw failedPrecondition(`${owner}'s upstream credentials do not open: ${error.message}; or set them again with ${setWith}`, { owner });
    }
    throw error;
  }
}

/** The user name each provider expects beside a token in HTTP basic auth. */
const TOKEN_USERS: Record<ProviderName, string> = { github: "x-access-token", gitlab: "oauth2", bitbucket: "x-token-auth", generic: "token" };

export function basicCredentials(credentials: UpstreamCredentials | undefined, provider: ProviderName): BasicCredentials | undefined {
  if (credentials === undefined) return undefined;
  return credentials.kind === "token" ? { username: TOKEN_USERS[provider], password: credentials.token } : { username: credentials.username, password: credentials.password };
}

/** Hosts that serve every repository over https as well as ssh, at the same path. */
const HTTPS_HOSTS = new Set(["github.com", "www.github.com", "gitlab.com", "bitbucket.org"]);

/**
 * The URL the server fetches a remote at: http(s) URLs as they are; an ssh or git:// spelling
 * of a repository on github.com, gitlab.com or bitbucket.org at its https address; undefined for
 * any other (the server speaks git's smart HTTP protocol only).
 */
export function fetchUrl(remote: ParsedRemote): string | undefined {
  if (/^https?:\/\//i.test(remote.url)) return remote.url;
  if (!HTTPS_HOSTS.has(remote.host)) return undefined;
  const key = canonicalRemote(remote.url);
  return key === undefined ? undefined : `https://${key}.git`;
}

/** The bounds and address rule every exchange with a remote runs under. */
export function remoteOptions(core: Core): { timeoutMs: number; addressProblem: ((address: string) => string | undefined) | undefined } {
  return {
    timeoutMs: core.remotes.timeoutMs,
    // Only the address connected to tells where a name leads (DNS may say otherwise by then).
    addressProblem: core.remotes.allowPrivate ? undefined : (address) => privateHostProblem(address.includes(":") ? `[${address}]` : address),
  };
}

/**
 * The error a client reads for a failed exchange with the remote at host: PermissionDenied for
 * refused or missing credentials, Unavailable when it did not answer; a remote that answered
 * wrong is an invalid remote_url when it is being added ("check"), and a failed precondition
 * of a repository already stored ("fetch"). Not a RemoteError: the error as it is.
 */
export function remoteFailure(error: unknown, host: string, hadCredentials: boolean, during: "check" | "fetch"): unknown {
  if (!(error instanceof RemoteError)) return error;
  const metadata = { host };
  const hint = during === "check" ? "give upstream_credentials" : "set them with SetRepositoryCredentials (or SetWorkspaceCredentials)";
  switch (error.problem) {
    case "auth":
      return remoteAccessDenied(
        hadCredentials
          ? `the remote at ${host} refused the upstream credentials (${error.message}); ${during === "check" ? "give ones" : "set ones with SetRepositoryCredentials (or SetWorkspaceCredentials)"} that can read the repository`
          : `the remote at ${host} asks for credentials (${error.message}); ${hint} that can read the repository`,
        metadata,
      );
    case "timeout":
    case "unreachable":
      return remoteUnavailable(`the remote at ${host} did not answer: ${error.message}`, metadata);
    case "address":
      return during === "check"
        ? invalidArgument([{ field: "remote_url", description: `${error.message}; such remotes need single-user mode or FOREMAN_ALLOW_PRIVATE_REMOTES=true` }])
        : failedPrecondition(`the repository's remote cannot be fetched: ${error.message}`, metadata);
    case "not-found":
    case "redirect":
    case "not-git":
      return during === "check"
        ? invalidArgument([{ field: "remote_url", description: error.message }])
        : failedPrecondition(`the repository's remote at ${host} cannot be fetched: ${error.message}`, metadata);
  }
}

/**
 * Asks the remote for its default branch (and whether `branch` exists), with the credentials,
 * within the server's remote timeout. Returns the branch to record. Throws the error the client
 * reads: InvalidArgument (no such branch, no repository there, not a git remote, an address the
 * server may not reach), PermissionDenied (credentials refused or missing), Unavailable (no answer).
 */
export async function checkRemote(
  core: Core,
  remote: ParsedRemote,
  provider: ProviderName,
  branch: string | undefined,
  credentials: UpstreamCredentials | undefined,
): Promise<string> {
  if (isLocalRemote(remote)) {
    let local;
    try {
      local = await readLocalHead(localRemotePath(remote), branch, core.remotes.timeoutMs);
    } catch (error) {
      throw remoteFailure(error, "this folder", false, "check");
    }
    return chosenBranch(local, branch);
  }
  const url = fetchUrl(remote);
  if (url === undefined) {
    throw invalidArgument([
      { field: "remote_url", description: "the server reaches remotes over http(s) only; give the repository's https:// URL" },
    ]);
  }
  let head;
  try {
    head = await readRemoteHead(url, branch, { ...remoteOptions(core), credentials: basicCredentials(credentials, provider) });
  } catch (error) {
    throw remoteFailure(error, remote.host, credentials !== undefined, "check");
  }
  return chosenBranch(head, branch);
}

/** The branch to record: the one given, if the remote has it, else the remote's default branch. */
function chosenBranch(head: { defaultBranch: string | undefined; commit: string | undefined }, branch: string | undefined): string {
  if (branch !== undefined) {
    if (head.commit === undefined) {
      throw invalidArgument([{ field: "default_branch", description: `the remote has no branch with this name${head.defaultBranch === undefined ? "" : `; its default branch is ${head.defaultBranch}`}` }]);
    }
    return branch;
  }
  if (head.defaultBranch === undefined) {
    throw invalidArgument([{ field: "default_branch", description: "the remote names no default branch (is it empty?); give default_branch, a branch it has" }]);
  }
  return head.defaultBranch;
}

const RESEAL_BATCH = 200;

/** What each table's sealed credentials are bound to, and what a row that does not open stops. */
const SEALED_IN: Record<CredentialTable, { aad: (id: string) => string; ids: string }> = {
  repositories: { aad: upstreamCredentialsAad, ids: "repository_ids" },
  workspaces: { aad: workspaceCredentialsAad, ids: "workspace_ids" },
};

/**
 * Seals every repository's and workspace's upstream credentials that are sealed under an older key
 * with the current one, at start (core/secrets.ts does the same for webhook secrets), so that after
 * a key rotation and one start the previous key may go. Credentials no configured key opens stay as
 * they are and are reported by id; the fetches that need them fail until the key is configured or
 * they are set again.
 */
export async function resealUpstreamCredentials(core: Core, log: Logger): Promise<{ resealed: number; unreadable: number }> {
  const prefix = `v1:${core.secrets.currentKeyId}:`;
  let resealed = 0;
  let unreadableCount = 0;
  for (const table of Object.keys(SEALED_IN) as CredentialTable[]) {
    const unreadable: string[] = [];
    let afterId: string | undefined;
    for (;;) {
      const rows = await upstreamCredentialsToReseal(core.db, table, prefix, afterId, RESEAL_BATCH);
      for (const row of rows) {
        const aad = SEALED_IN[table].aad(row.id);
        let plaintext: string;
        try {
          plaintext = openStoredSecret(core, row.sealed, aad);
        } catch (error) {
          if (!(error instanceof SecretBoxError)) throw error;
          unreadable.push(row.id);
          continue;
        }
        if (await replaceUpstreamCredentials(core.db, table, row.id, row.sealed, core.secrets.seal(plaintext, aad))) resealed += 1;
      }
      if (rows.length < RESEAL_BATCH) break;
      afterId = rows[rows.length - 1]!.id;
    }
    if (unreadable.length > 0) {
      log.error(
        { unreadable: unreadable.length, [SEALED_IN[table].ids]: unreadable.slice(0, 10), key_ids: core.secrets.keyIds },
        `stored upstream credentials of ${table} that no configured key opens: their repositories cannot be fetched with them until FOREMAN_SECRET_KEY or FOREMAN_SECRET_KEYS_PREVIOUS holds their key, or they are set again`,
      );
    }
    unreadableCount += unreadable.length;
  }
  if (resealed > 0) log.info({ resealed, key_id: core.secrets.currentKeyId }, "stored upstream credentials sealed with the current key");
  return { resealed, unreadable: unreadableCount };
}
