// Repository and repository group rules. A repository's remote is unique per workspace, in
// any spelling (its canonical key, core/remote-url.ts canonicalRemote), and answers when added;
// a group's repositories all belong to its workspace; an unnamed group holds exactly one
// repository (the seed's single-repository group) and is removed with it.
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { newId } from "../store/codec.js";
import { isUniqueViolation } from "../store/errors.js";
import * as store from "../store/repositories.js";
import type { Repository, RepositoryGroup } from "../store/repositories.js";
import type { Core } from "./context.js";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "./errors.js";
import { branchNameProblem } from "./git-names.js";
import { readPage, writePage } from "./pagination.js";
import { resolveLocalGitDir } from "../git/local.js";
import { canonicalRemote, isLocalRemote, localRemotePath, parseRemoteUrl, privateHostProblem, providerForHost, type ProviderName } from "./remote-url.js";
import { quote, textProblem } from "./text.js";
import { Violations, normalizeId, readId } from "./validation.js";
import { webhookSecretAad } from "./secrets.js";
import { getWorkspace } from "./workspaces.js";
import { checkRemote, credentialsFor, openWorkspaceCredentials, readCredentials, readRequiredCredentials, sealCredentials, type UpstreamCredentials } from "./upstream.js";
import type { Logger } from "../logger.js";

export type { Repository, RepositoryGroup, ProviderName };

/** How ApproveTask delivers a task's work (core/delivery.ts): the task branch only, or also onto the base branch. */
export const DELIVERY_MODES = ["branch", "merge", "squash", "rebase"] as const;
export type DeliveryModeName = (typeof DELIVERY_MODES)[number];

/** Adds what is wrong with a delivery mode as given (undefined: not given) to v; returns the mode, or undefined when none was given. */
function readDeliveryMode(v: Violations, given: string | undefined, required: boolean): DeliveryModeName | undefined {
  if (given === undefined) {
    if (required) v.add("delivery_mode", "is required");
    return undefined;
  }
  if (!(DELIVERY_MODES as readonly string[]).includes(given)) {
    v.add("delivery_mode", `is not a known delivery mode (${given}); it is one of ${DELIVERY_MODES.join(", ")}`);
    return undefined;
  }
  return given as DeliveryModeName;
}

const NAME_MAX = 100;
const GROUP_MAX_REPOSITORIES = 100;
const WEBHOOK_SECRET_MAX = 256;
const REPOSITORY_NAME = /^[A-Za-z0-9._-]+$/;

/**
 * What is wrong with a repository name, or undefined. Names reach git's command line and the
 * web app's lists, so none may be a path to another folder (".", ".."), git's own folder
 * (".git"), or read as an option ("-rf"). A name never becomes a path: clones live in folders
 * named by repository id (src/core/paths.ts).
 */
export function repositoryNameProblem(name: string): string | undefined {
  if (name === "") return "is required";
  if (name.length > NAME_MAX) return `must be at most ${NAME_MAX} characters, got ${name.length}`;
  if (!REPOSITORY_NAME.test(name)) return "may hold only letters, digits, '.', '_' and '-'";
  if (/^\.+$/.test(name)) return 'must not be "." or ".." or only dots: as a path it names another folder';
  if (name.toLowerCase() === ".git") return 'must not be ".git": that is git\'s own folder';
  if (name.startsWith("-")) return 'must not start with "-": git would read it as an option';
  return undefined;
}

export interface AddRepositoryInput {
  workspaceId: string;
  remoteUrl: string;
  name: string;
  defaultBranch: string;
  /** undefined: derive from the URL's host. */
  provider: ProviderName | undefined;
  webhookSecret: string;
  /** The API's oneof case; undefined for none. */
  upstreamCredentials?: { token: string } | { username: string; password: string } | undefined;
  /** Core's name (DELIVERY_MODES), an unknown one as given; undefined: "branch". */
  deliveryMode?: string | undefined;
}

/** The error for a second spelling of a remote the workspace has: it names the repository that has it. */
function remoteTaken(workspaceId: string, existing: Repository | undefined, url: string): Error {
  if (existing === undefined) {
    return alreadyExists("repository", `workspace ${workspaceId} already has a repository for ${quote(url, 256)}`, { remote_url: url });
  }
  return alreadyExists(
    "repository",
    `workspace ${workspaceId} already has this remote: repository ${quote(existing.name, 100)} (${existing.id}), added as ${quote(existing.remoteUrl, 256)}`,
    { remote_url: url, id: existing.id },
  );
}

export async function addRepository(core: Core, ownerId: string, input: AddRepositoryInput): Promise<Repository> {
  const v = new Violations();
  const workspaceId = v.id("workspace_id", input.workspaceId);
  const remote = parseRemoteUrl(input.remoteUrl);
  if (typeof remote === "string") v.add("remote_url", remote);
  else if (isLocalRemote(remote)) {
    // A folder on the server's machine: the one user of single-user mode owns it; in multi-user
    // mode it would let any user read what the server can.
    if (core.auth.login !== undefined) v.add("remote_url", "is a folder on the server's machine, which only single-user mode takes as a remote");
    if (input.upstreamCredentials !== undefined) v.add("upstream_credentials", "a folder on the server's machine takes none");
  } else if (!core.remotes.allowPrivate) {
    // The server will fetch this URL: refuse one that could make it reach what only it can.
    // The host as written is checked here; the addresses a name resolves to are checked when
    // the server connects (core/upstream.ts remoteOptions).
    const problem = privateHostProblem(remote.host);
    if (problem !== undefined) {
      v.add("remote_url", `${problem}; such remotes need single-user mode or FOREMAN_ALLOW_PRIVATE_REMOTES=true on the server`);
    }
  }
  const given = input.name.trim();
  const name = given || (typeof remote === "string" ? "" : remote.baseName);
  if (given !== "") {
    const problem = repositoryNameProblem(given);
    if (problem !== undefined) v.add("name", problem);
  } else if (typeof remote !== "string") {
    // The URL may be fine while the name it implies is not (https://github.com/o/..git gives
    // "."); the caller can still add it by giving a name. The derived name is not echoed.
    const problem = repositoryNameProblem(name);
    if (problem !== undefined) v.add("name", `the name taken from remote_url ${problem}; give a name`);
  }
  const givenBranch = input.defaultBranch.trim();
  const branchProblem = givenBranch === "" ? undefined : branchNameProblem(givenBranch);
  if (branchProblem !== undefined) v.add("default_branch", branchProblem);
  const credentials = readCredentials(v, "upstream_credentials", input.upstreamCredentials);
  if ([...input.webhookSecret].length > WEBHOOK_SECRET_MAX) {
    v.add("webhook_secret", `must be at most ${WEBHOOK_SECRET_MAX} characters`);
  }
  // A secret is one line typed into the provider's form; PostgreSQL text cannot hold NUL.
  const secretProblem = textProblem(input.webhookSecret, { singleLine: true });
  if (secretProblem !== undefined) v.add("webhook_secret", secretProblem);
  const deliveryMode = readDeliveryMode(v, input.deliveryMode, false);
  v.throwIfAny();
  const parsed = remote as Exclude<typeof remote, string>;
  let remoteKey = canonicalRemote(parsed.url)!;
  if (isLocalRemote(parsed) && core.remotes.contact) {
    // A folder is keyed by the git folder git would read (x and x.git, a link to it: one repository).
    const gitDir = await resolveLocalGitDir(localRemotePath(parsed));
    if (gitDir === undefined) throw invalidArgument([{ field: "remote_url", description: "no git repository in this folder" }]);
    remoteKey = `file://${gitDir}`;
  }
  const provider = input.provider ?? providerForHost(parsed.host);
  await getWorkspace(core, ownerId, workspaceId, "workspace_id");
  // Another spelling of a remote the workspace has is refused before the remote is asked.
  const existing = await store.findByRemoteKey(core.db, workspaceId, remoteKey);
  if (existing !== undefined) throw remoteTaken(workspaceId, existing, parsed.url);
  // The remote must answer (with the credentials) before anything is stored; it names the
  // default branch when none is given. A branch it names is checked like one a client gives.
  let defaultBranch = givenBranch || "main";
  if (core.remotes.contact) {
    // Given none, the repository is reached with its workspace's (SetWorkspaceCredentials).
    const reachWith = credentials ?? (isLocalRemote(parsed) ? undefined : await openWorkspaceCredentials(core, ownerId, workspaceId));
    defaultBranch = await checkRemote(core, parsed, provider, givenBranch || undefined, reachWith);
    const problem = branchNameProblem(defaultBranch);
    if (problem !== undefined) {
      throw invalidArgument([{ field: "default_branch", description: `the remote's default branch ${problem}; give default_branch` }]);
    }
  }
  const id = newId(core.now().getTime());
  let added: Repository;
  try {
    added = await store.insertRepository(core.db, {
      id,
      ownerId,
      workspaceId,
      name,
      remoteUrl: parsed.url,
      remoteKey,
      defaultBranch,
      vcsProviderType: provider,
      // Stored sealed (core/secrets.ts), bound to this repository.
      webhookSecret: input.webhookSecret === "" ? null : core.secrets.seal(input.webhookSecret, webhookSecretAad(id)),
      upstreamCredentials: credentials === undefined ? null : sealCredentials(core, id, credentials),
      deliveryMode,
      createdAt: core.now(),
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw remoteTaken(workspaceId, await store.findByRemoteKey(core.db, workspaceId, remoteKey), parsed.url);
    throw error;
  }
  // The server's clone is made in the background; the first task fetches into it, or makes it.
  if (core.remotes.contact) cloneInBackground(core, added);
  return added;
}

function cloneInBackground(core: Core, repository: Repository): void {
  core.clones.sync(core, repository).then(
    ({ branches }) => core.logger.info({ repository_id: repository.id, branches: branches.size }, "repository cloned"),
    (error: unknown) =>
      core.logger.warn(
        { repository_id: repository.id, reason: error instanceof Error ? error.message : "unknown" },
        "repository not cloned yet; the next task fetches it again",
      ),
  );
}

/**
 * Brings the server's clones of these repositories up to date with their remotes (or makes
 * them), before a task starts from them. Does nothing when the server does not contact remotes.
 */
export async function fetchRepositories(core: Core, repositories: Repository[]): Promise<void> {
  if (!core.remotes.contact) return;
  await Promise.all(repositories.map((r) => core.clones.sync(core, r)));
}

/**
 * Sets a repository's upstream credentials, once its remote has answered with them (when remote
 * checks are on); nothing changes when it does not.
 */
export async function setRepositoryCredentials(
  core: Core,
  ownerId: string,
  input: { id: string; credentials: { token: string } | { username: string; password: string } | undefined },
): Promise<Repository> {
  const v = new Violations();
  const id = v.id("id", input.id);
  const credentials = readRequiredCredentials(v, input.credentials, "ClearRepositoryCredentials");
  v.throwIfAny();
  const repository = await getRepository(core, ownerId, id);
  const stored = parseRemoteUrl(repository.remoteUrl);
  if (typeof stored !== "string" && isLocalRemote(stored)) {
    throw invalidArgument([{ field: "upstream_credentials", description: "the repository is a folder on the server's machine, which takes none" }]);
  }
  if (core.remotes.contact && typeof stored !== "string") {
    await checkRemote(core, stored, repository.vcsProviderType as ProviderName, undefined, credentials);
  }
  const updated = await store.setUpstreamCredentials(core.db, ownerId, id, sealCredentials(core, id, credentials), core.now());
  if (updated === undefined) throw notFound("repository", id);
  return updated;
}

export async function clearRepositoryCredentials(core: Core, ownerId: string, rawId: string): Promise<Repository> {
  const id = readId(rawId);
  const updated = await store.setUpstreamCredentials(core.db, ownerId, id, null, core.now());
  if (updated === undefined) throw notFound("repository", id);
  return updated;
}

/** Sets how an approved task's work reaches the repository's remote (core/delivery.ts). */
export async function setRepositoryDeliveryMode(core: Core, ownerId: string, input: { id: string; deliveryMode: string | undefined }): Promise<Repository> {
  const v = new Violations();
  const id = v.id("id", input.id);
  const mode = readDeliveryMode(v, input.deliveryMode, true);
  v.throwIfAny();
  const updated = await store.setDeliveryMode(core.db, ownerId, id, mode!, core.now());
  if (updated === undefined) throw notFound("repository", id);
  return updated;
}

/** A repository's upstream credentials, else its workspace's, opened: for the server's own git operations only. */
export async function repositoryCredentials(core: Core, ownerId: string, id: string): Promise<UpstreamCredentials | undefined> {
  return credentialsFor(core, { id, ownerId });
}

const KEY_BATCH = 200;

/**
 * Gives every repository stored before migration 0008 its remote key, at start. Of several
 * spellings of one remote added to one workspace back then, the oldest gets the key and each
 * other a key of its own (`<key>#<id>`): they stay as they were, and no new spelling can be added.
 */
export async function fillRemoteKeys(core: Core, log: Logger): Promise<{ filled: number; duplicates: number }> {
  let filled = 0;
  let duplicates = 0;
  let afterId: string | undefined;
  for (;;) {
    const rows = await store.withoutRemoteKey(core.db, afterId, KEY_BATCH);
    for (const row of rows) {
      // A URL stored by an older version that today's rules refuse keeps a key of its own.
      const key = canonicalRemote(row.remoteUrl) ?? `${row.remoteUrl}#${row.id}`;
      try {
        if (await store.setRemoteKey(core.db, row.id, key)) filled += 1;
      } catch (error) {
        if (!isUniqueViolation(error)) throw error;
        if (await store.setRemoteKey(core.db, row.id, `${key}#${row.id}`)) duplicates += 1;
      }
    }
    if (rows.length < KEY_BATCH) break;
    afterId = rows[rows.length - 1]!.id;
  }
  if (filled + duplicates > 0) log.info({ filled, duplicates }, "repositories given their remote keys (one repository per remote)");
  if (duplicates > 0) {
    log.warn({ duplicates }, "some workspaces hold one remote several times, added before one repository per remote was enforced; remove the extra ones");
  }
  return { filled, duplicates };
}

export async function getRepository(core: Core, ownerId: string, rawId: string): Promise<Repository> {
  const id = readId(rawId);
  const repository = await store.getRepository(core.db, ownerId, id);
  if (repository === undefined) throw notFound("repository", id);
  return repository;
}

export async function listRepositories(
  core: Core,
  ownerId: string,
  input: { workspaceId: string; pageSize: number; pageToken: string },
): Promise<{ items: Repository[]; nextPageToken: string }> {
  const v = new Violations();
  const workspaceId = v.id("workspace_id", input.workspaceId);
  const page = readPage(v, input.pageSize, input.pageToken, `repositories:${workspaceId}`);
  v.throwIfAny();
  await getWorkspace(core, ownerId, workspaceId, "workspace_id");
  return writePage(page, await store.listRepositories(core.db, ownerId, workspaceId, page));
}

/**
 * Removes a repository. Its single-repository groups go with it; a named group that holds it
 * must be changed first, and a group with tasks keeps the repository in place.
 */
export async function removeRepository(core: Core, ownerId: string, rawId: string): Promise<void> {
  const id = readId(rawId);
  await core.db.transaction().execute(async (tx) => {
    if ((await store.getRepository(tx, ownerId, id)) === undefined) throw notFound("repository", id);
    const groups = await store.groupsContaining(tx, id);
    const named = groups.filter((g) => g.name !== null);
    if (named.length > 0) {
      // The first few groups, so that the message stays small however many there are.
      const shown = named.slice(0, 3).map((g) => `${quote(g.name ?? "")} (${g.id})`);
      if (named.length > shown.length) shown.push(`${named.length - shown.length} more`);
      throw failedPrecondition(`repository ${id} is in repository group ${shown.join(", ")}; remove it from the group first`, { id });
    }
    for (const group of groups) {
      if (await store.groupHasTasks(tx, group.id)) {
        throw failedPrecondition(`repository ${id} is used by tasks of repository group ${group.id}`, { id });
      }
    }
    await store.deleteGroups(
      tx,
      groups.map((g) => g.id),
    );
    await store.deleteRepository(tx, ownerId, id);
  });
  // After the row: a task created meanwhile cannot name the repository any more.
  try {
    await core.clones.remove(id);
  } catch (error) {
    core.logger.error({ repository_id: id, err: error }, "the removed repository's clone could not be deleted; delete its folder by hand");
  }
}

/** Validates a group's repository ids and checks they are the owner's, in the workspace. */
async function checkMembers(
  db: Kysely<Database>,
  ownerId: string,
  workspaceId: string,
  name: string | null,
  rawIds: string[],
): Promise<string[]> {
  const ids = rawIds.map(normalizeId);
  const v = new Violations();
  if (ids.length === 0) v.add("repository_ids", "must name at least one repository");
  if (ids.length > GROUP_MAX_REPOSITORIES) v.add("repository_ids", `must name at most ${GROUP_MAX_REPOSITORIES} repositories`);
  if (name === null && ids.length > 1) {
    v.add("repository_ids", "a group without a name holds exactly one repository; give the group a name");
  }
  ids.forEach((id, i) => v.id(`repository_ids[${i}]`, id));
  const seen = new Set<string>();
  ids.forEach((id, i) => {
    if (seen.has(id)) v.add(`repository_ids[${i}]`, `repeats ${id}`);
    seen.add(id);
  });
  v.throwIfAny();
  const found = await store.findRepositories(db, ownerId, ids);
  const inWorkspace = new Set(found.filter((r) => r.workspaceId === workspaceId).map((r) => r.id));
  const missing = ids.find((id) => !inWorkspace.has(id));
  if (missing !== undefined) throw notFound("repository", missing);
  return ids;
}

function groupNameTaken(name: string | null): Error {
  return alreadyExists("repository_group", `a repository group named ${quote(name ?? "", 100)} already exists in this workspace`, {
    name: name ?? "",
  });
}

function readGroupName(v: Violations, raw: string): string | null {
  const name = raw.trim();
  v.text("name", name, { max: NAME_MAX, singleLine: true });
  return name === "" ? null : name;
}

export async function createRepositoryGroup(
  core: Core,
  ownerId: string,
  input: { workspaceId: string; name: string; repositoryIds: string[] },
): Promise<RepositoryGroup> {
  const v = new Violations();
  const workspaceId = v.id("workspace_id", input.workspaceId);
  const name = readGroupName(v, input.name);
  v.throwIfAny();
  await getWorkspace(core, ownerId, workspaceId, "workspace_id");
  try {
    return await core.db.transaction().execute(async (tx) => {
      const repositoryIds = await checkMembers(tx, ownerId, workspaceId, name, input.repositoryIds);
      return store.insertGroup(tx, { id: newId(core.now().getTime()), ownerId, workspaceId, name, repositoryIds, createdAt: core.now() });
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw groupNameTaken(name);
    throw error;
  }
}

export async function listRepositoryGroups(
  core: Core,
  ownerId: string,
  input: { workspaceId: string; pageSize: number; pageToken: string },
): Promise<{ items: RepositoryGroup[]; nextPageToken: string }> {
  const v = new Violations();
  const workspaceId = v.id("workspace_id", input.workspaceId);
  const page = readPage(v, input.pageSize, input.pageToken, `repository_groups:${workspaceId}`);
  v.throwIfAny();
  await getWorkspace(core, ownerId, workspaceId, "workspace_id");
  return writePage(page, await store.listGroups(core.db, ownerId, workspaceId, page));
}

export async function getRepositoryGroup(core: Core, ownerId: string, rawId: string, field = "id"): Promise<RepositoryGroup> {
  const id = readId(rawId, field);
  const group = await store.getGroup(core.db, ownerId, id);
  if (group === undefined) throw notFound("repository group", id);
  return group;
}

export async function updateRepositoryGroup(
  core: Core,
  ownerId: string,
  input: { id: string; name?: string | undefined; repositoryIds?: string[] | undefined },
): Promise<RepositoryGroup> {
  const v = new Violations();
  const id = v.id("id", input.id);
  const name = input.name === undefined ? undefined : readGroupName(v, input.name);
  v.throwIfAny();
  try {
    return await core.db.transaction().execute(async (tx) => {
      const current = await store.getGroup(tx, ownerId, id);
      if (current === undefined) throw notFound("repository group", id);
      const finalName = name === undefined ? current.name : name;
      const repositoryIds = await checkMembers(
        tx,
        ownerId,
        current.workspaceId,
        finalName,
        input.repositoryIds ?? current.repositoryIds,
      );
      const patch: { name?: string | null; repositoryIds?: string[] } = {};
      if (name !== undefined) patch.name = name;
      if (input.repositoryIds !== undefined) patch.repositoryIds = repositoryIds;
      const updated = await store.updateGroup(tx, ownerId, id, patch, core.now());
      if (updated === undefined) throw notFound("repository group", id);
      return updated;
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw groupNameTaken(name ?? null);
    throw error;
  }
}

export async function deleteRepositoryGroup(core: Core, ownerId: string, rawId: string): Promise<void> {
  const id = readId(rawId);
  await core.db.transaction().execute(async (tx) => {
    if ((await store.getGroup(tx, ownerId, id)) === undefined) throw notFound("repository group", id);
    if (await store.groupHasTasks(tx, id)) {
      throw failedPrecondition(`repository group ${id} has tasks; delete them first`, { id });
    }
    await store.deleteGroup(tx, ownerId, id);
  });
}
