// Repositories and repository groups (with their ordered members), scoped to their owner.
import type { Kysely, Selectable } from "kysely";
import type { Database, RepositoriesTable, RepositoryGroupsTable } from "../db/schema.js";
import { fromDbTime, toDbTime } from "./codec.js";
import { keysetPage, type PageWindow } from "./pages.js";

export interface Repository {
  id: string;
  ownerId: string;
  workspaceId: string;
  name: string;
  remoteUrl: string;
  defaultBranch: string;
  vcsProviderType: string;
  hasWebhookSecret: boolean;
  /** Whether upstream credentials are stored (they themselves are read only by upstreamCredentials). */
  hasUpstreamCredentials: boolean;
  /** How an approved task's work reaches the remote: "branch", "merge", "squash" or "rebase" (core/repositories.ts DELIVERY_MODES). */
  deliveryMode: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface RepositoryGroup {
  id: string;
  ownerId: string;
  workspaceId: string;
  /** null for a single-repository group. */
  name: string | null;
  repositoryIds: string[];
  createdAt: Date;
  updatedAt: Date;
}

function toRepository(row: Selectable<RepositoriesTable>): Repository {
  return {
    id: row.id,
    ownerId: row.owner_id,
    workspaceId: row.workspace_id,
    name: row.name,
    remoteUrl: row.remote_url,
    defaultBranch: row.default_branch,
    vcsProviderType: row.vcs_provider_type,
    hasWebhookSecret: row.webhook_secret !== null,
    hasUpstreamCredentials: row.upstream_credentials !== null,
    deliveryMode: row.delivery_mode,
    createdAt: fromDbTime(row.created_at),
    updatedAt: fromDbTime(row.updated_at),
  };
}

export interface NewRepository {
  id: string;
  ownerId: string;
  workspaceId: string;
  name: string;
  remoteUrl: string;
  /** The remote's canonical spelling (core/remote-url.ts canonicalRemote), unique in the workspace. */
  remoteKey: string;
  defaultBranch: string;
  vcsProviderType: string;
  webhookSecret: string | null;
  /** Sealed by core/ before it gets here; null for none. */
  upstreamCredentials: string | null;
  /** Absent: the column's default, "branch". */
  deliveryMode?: string | undefined;
  createdAt: Date;
}

export async function insertRepository(db: Kysely<Database>, r: NewRepository): Promise<Repository> {
  const row = await db
    .insertInto("repositories")
    .values({
      id: r.id,
      owner_id: r.ownerId,
      workspace_id: r.workspaceId,
      name: r.name,
      remote_url: r.remoteUrl,
      remote_key: r.remoteKey,
      default_branch: r.defaultBranch,
      vcs_provider_type: r.vcsProviderType,
      webhook_secret: r.webhookSecret,
      upstream_credentials: r.upstreamCredentials,
      ...(r.deliveryMode === undefined ? {} : { delivery_mode: r.deliveryMode }),
      created_at: toDbTime(r.createdAt),
      updated_at: toDbTime(r.createdAt),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toRepository(row);
}

export async function getRepository(db: Kysely<Database>, ownerId: string, id: string): Promise<Repository | undefined> {
  const row = await db
    .selectFrom("repositories")
    .selectAll()
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .executeTakeFirst();
  return row && toRepository(row);
}

/** A repository by id alone, for the server's own work on its clone (no caller's view). */
export async function repositoryById(db: Kysely<Database>, id: string): Promise<Repository | undefined> {
  const row = await db.selectFrom("repositories").selectAll().where("id", "=", id).executeTakeFirst();
  return row && toRepository(row);
}

/** The workspace's repository for this remote (by its canonical spelling), if there is one. */
export async function findByRemoteKey(db: Kysely<Database>, workspaceId: string, remoteKey: string): Promise<Repository | undefined> {
  const row = await db
    .selectFrom("repositories")
    .selectAll()
    .where("workspace_id", "=", workspaceId)
    .where("remote_key", "=", remoteKey)
    .executeTakeFirst();
  return row && toRepository(row);
}

/**
 * The sealed upstream credentials a fetch of the owner's repository uses, in one statement: the
 * repository's own, and its workspace's; null for none, undefined when there is no such repository.
 */
export async function credentialsForFetch(
  db: Kysely<Database>,
  ownerId: string,
  id: string,
): Promise<{ repository: string | null; workspaceId: string; workspace: string | null } | undefined> {
  const row = await db
    .selectFrom("repositories")
    .innerJoin("workspaces", "workspaces.id", "repositories.workspace_id")
    .select(["repositories.upstream_credentials as repository", "workspaces.id as workspace_id", "workspaces.upstream_credentials as workspace"])
    .where("repositories.owner_id", "=", ownerId)
    .where("repositories.id", "=", id)
    .executeTakeFirst();
  return row === undefined ? undefined : { repository: row.repository, workspaceId: row.workspace_id, workspace: row.workspace };
}

/** Replaces (sealed) or removes (null) the upstream credentials; undefined when there is no such repository. */
export async function setUpstreamCredentials(
  db: Kysely<Database>,
  ownerId: string,
  id: string,
  sealed: string | null,
  now: Date,
): Promise<Repository | undefined> {
  const row = await db
    .updateTable("repositories")
    .set({ upstream_credentials: sealed, updated_at: toDbTime(now) })
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .returningAll()
    .executeTakeFirst();
  return row && toRepository(row);
}

/** Sets how approved work reaches the remote; undefined when there is no such repository. */
export async function setDeliveryMode(db: Kysely<Database>, ownerId: string, id: string, mode: string, now: Date): Promise<Repository | undefined> {
  const row = await db
    .updateTable("repositories")
    .set({ delivery_mode: mode, updated_at: toDbTime(now) })
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .returningAll()
    .executeTakeFirst();
  return row && toRepository(row);
}

/** The tables that hold sealed upstream credentials: a repository's own, and a workspace's for its repositories. */
export type CredentialTable = "repositories" | "workspaces";

/** Stored upstream credentials of `table` not sealed under the key whose prefix is given ("v1:<key id>:"), in id order after afterId. */
export async function upstreamCredentialsToReseal(
  db: Kysely<Database>,
  table: CredentialTable,
  currentPrefix: string,
  afterId: string | undefined,
  limit: number,
): Promise<{ id: string; sealed: string }[]> {
  let query = db
    .selectFrom(table)
    .select(["id", "upstream_credentials"])
    .where("upstream_credentials", "is not", null)
    .where("upstream_credentials", "not like", `${currentPrefix}%`);
  if (afterId !== undefined) query = query.where("id", ">", afterId);
  const rows = await query.orderBy("id").limit(limit).execute();
  return rows.map((r) => ({ id: r.id, sealed: r.upstream_credentials! }));
}

/** Replaces a row's sealed upstream credentials if they still are `expected`; false when they changed meanwhile. */
export async function replaceUpstreamCredentials(
  db: Kysely<Database>,
  table: CredentialTable,
  id: string,
  expected: string,
  replacement: string,
): Promise<boolean> {
  const result = await db
    .updateTable(table)
    .set({ upstream_credentials: replacement })
    .where("id", "=", id)
    .where("upstream_credentials", "=", expected)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** Repositories stored before migration 0008 gave them a remote key, in id order after afterId. */
export async function withoutRemoteKey(
  db: Kysely<Database>,
  afterId: string | undefined,
  limit: number,
): Promise<{ id: string; workspaceId: string; remoteUrl: string }[]> {
  let query = db.selectFrom("repositories").select(["id", "workspace_id", "remote_url"]).where("remote_key", "is", null);
  if (afterId !== undefined) query = query.where("id", ">", afterId);
  const rows = await query.orderBy("id").limit(limit).execute();
  return rows.map((r) => ({ id: r.id, workspaceId: r.workspace_id, remoteUrl: r.remote_url }));
}

/** Sets a repository's remote key if it has none yet; whether it did. */
export async function setRemoteKey(db: Kysely<Database>, id: string, remoteKey: string): Promise<boolean> {
  const result = await db.updateTable("repositories").set({ remote_key: remoteKey }).where("id", "=", id).where("remote_key", "is", null).executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** The owner's repositories among ids, in any order; missing ones are left out. */
export async function findRepositories(db: Kysely<Database>, ownerId: string, ids: string[]): Promise<Repository[]> {
  if (ids.length === 0) return [];
  const rows = await db.selectFrom("repositories").selectAll().where("owner_id", "=", ownerId).where("id", "in", ids).execute();
  return rows.map(toRepository);
}

export async function listRepositories(
  db: Kysely<Database>,
  ownerId: string,
  workspaceId: string,
  page: PageWindow,
): Promise<Repository[]> {
  const query = db.selectFrom("repositories").selectAll().where("owner_id", "=", ownerId).where("workspace_id", "=", workspaceId);
  return (await keysetPage(query, page)).map(toRepository);
}

export async function deleteRepository(db: Kysely<Database>, ownerId: string, id: string): Promise<boolean> {
  const result = await db.deleteFrom("repositories").where("owner_id", "=", ownerId).where("id", "=", id).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

/** The groups that hold the repository, with their sizes. */
export async function groupsContaining(
  db: Kysely<Database>,
  repositoryId: string,
): Promise<{ id: string; name: string | null; memberCount: number }[]> {
  const rows = await db
    .selectFrom("repository_groups as g")
    .innerJoin("repository_group_members as m", "m.group_id", "g.id")
    .where("m.repository_id", "=", repositoryId)
    .select((eb) => [
      "g.id",
      "g.name",
      eb
        .selectFrom("repository_group_members as all_members")
        .whereRef("all_members.group_id", "=", "g.id")
        .select((inner) => inner.fn.countAll<number | string>().as("n"))
        .as("member_count"),
    ])
    .orderBy("g.id")
    .execute();
  return rows.map((r) => ({ id: r.id, name: r.name, memberCount: Number(r.member_count) }));
}

export async function deleteGroups(db: Kysely<Database>, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await db.deleteFrom("repository_groups").where("id", "in", ids).execute();
}

async function membersOf(db: Kysely<Database>, groupIds: string[]): Promise<Map<string, string[]>> {
  const members = new Map<string, string[]>(groupIds.map((id) => [id, []]));
  if (groupIds.length === 0) return members;
  const rows = await db
    .selectFrom("repository_group_members")
    .select(["group_id", "repository_id"])
    .where("group_id", "in", groupIds)
    .orderBy("group_id")
    .orderBy("position")
    .execute();
  for (const row of rows) members.get(row.group_id)?.push(row.repository_id);
  return members;
}

function toGroup(row: Selectable<RepositoryGroupsTable>, repositoryIds: string[]): RepositoryGroup {
  return {
    id: row.id,
    ownerId: row.owner_id,
    workspaceId: row.workspace_id,
    name: row.name,
    repositoryIds,
    createdAt: fromDbTime(row.created_at),
    updatedAt: fromDbTime(row.updated_at),
  };
}

async function replaceMembers(db: Kysely<Database>, groupId: string, repositoryIds: string[]): Promise<void> {
  await db.deleteFrom("repository_group_members").where("group_id", "=", groupId).execute();
  if (repositoryIds.length === 0) return;
  await db
    .insertInto("repository_group_members")
    .values(repositoryIds.map((repositoryId, position) => ({ group_id: groupId, repository_id: repositoryId, position })))
    .execute();
}

/** Inserts the group and its members; run it in a transaction. */
export async function insertGroup(
  db: Kysely<Database>,
  g: Omit<RepositoryGroup, "updatedAt">,
): Promise<RepositoryGroup> {
  const row = await db
    .insertInto("repository_groups")
    .values({
      id: g.id,
      owner_id: g.ownerId,
      workspace_id: g.workspaceId,
      name: g.name,
      created_at: toDbTime(g.createdAt),
      updated_at: toDbTime(g.createdAt),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  await replaceMembers(db, g.id, g.repositoryIds);
  return toGroup(row, g.repositoryIds);
}

export async function getGroup(db: Kysely<Database>, ownerId: string, id: string): Promise<RepositoryGroup | undefined> {
  const row = await db
    .selectFrom("repository_groups")
    .selectAll()
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .executeTakeFirst();
  if (row === undefined) return undefined;
  const members = await membersOf(db, [row.id]);
  return toGroup(row, members.get(row.id) ?? []);
}

/**
 * The owner's group with its repositories in the group's order, in one read (a new task's first
 * step; three on their own). A member that is not the owner's repository is not among them.
 */
export async function getGroupWithRepositories(
  db: Kysely<Database>,
  ownerId: string,
  id: string,
): Promise<{ group: RepositoryGroup; repositories: Repository[] } | undefined> {
  const rows = await db
    .selectFrom("repository_groups as g")
    .leftJoin("repository_group_members as m", "m.group_id", "g.id")
    .leftJoin("repositories as r", (join) => join.onRef("r.id", "=", "m.repository_id").on("r.owner_id", "=", ownerId))
    .selectAll("r")
    .select(["g.workspace_id as group_workspace_id", "g.name as group_name", "g.created_at as group_created_at", "g.updated_at as group_updated_at", "m.repository_id as member_id"])
    .where("g.owner_id", "=", ownerId)
    .where("g.id", "=", id)
    .orderBy("m.position")
    .execute();
  const first = rows[0];
  if (first === undefined) return undefined;
  const members = rows.filter((r) => r.member_id !== null);
  const group = toGroup(
    { id, owner_id: ownerId, workspace_id: first.group_workspace_id, name: first.group_name, created_at: first.group_created_at, updated_at: first.group_updated_at },
    members.map((r) => r.member_id!),
  );
  const repositories = members.filter((r) => r.id !== null).map((r) => toRepository(r as Selectable<RepositoriesTable>));
  return { group, repositories };
}

export async function listGroups(
  db: Kysely<Database>,
  ownerId: string,
  workspaceId: string,
  page: PageWindow,
): Promise<RepositoryGroup[]> {
  const query = db.selectFrom("repository_groups").selectAll().where("owner_id", "=", ownerId).where("workspace_id", "=", workspaceId);
  const rows = await keysetPage(query, page);
  const members = await membersOf(
    db,
    rows.map((r) => r.id),
  );
  return rows.map((row) => toGroup(row, members.get(row.id) ?? []));
}

/** Updates the name and/or replaces the members; run it in a transaction. */
export async function updateGroup(
  db: Kysely<Database>,
  ownerId: string,
  id: string,
  patch: { name?: string | null; repositoryIds?: string[] },
  now: Date,
): Promise<RepositoryGroup | undefined> {
  const set: { updated_at: string; name?: string | null } = { updated_at: toDbTime(now) };
  if (patch.name !== undefined) set.name = patch.name;
  const row = await db
    .updateTable("repository_groups")
    .set(set)
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .returningAll()
    .executeTakeFirst();
  if (row === undefined) return undefined;
  if (patch.repositoryIds !== undefined) await replaceMembers(db, id, patch.repositoryIds);
  const members = await membersOf(db, [id]);
  return toGroup(row, members.get(id) ?? []);
}

export async function deleteGroup(db: Kysely<Database>, ownerId: string, id: string): Promise<boolean> {
  const result = await db
    .deleteFrom("repository_groups")
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .executeTakeFirst();
  return result.numDeletedRows > 0n;
}

/** Whether any task runs against the group; such a group cannot be deleted. */
export async function groupHasTasks(db: Kysely<Database>, groupId: string): Promise<boolean> {
  const unit = await db.selectFrom("unit_tasks").select("id").where("repository_group_id", "=", groupId).limit(1).executeTakeFirst();
  if (unit !== undefined) return true;
  const composite = await db
    .selectFrom("composite_tasks")
    .select("id")
    .where("repository_group_id", "=", groupId)
    .limit(1)
    .executeTakeFirst();
  return composite !== undefined;
}

/** One repository of an agent task (a run) as delivery reads it: the repository, its branch and the commits the run recorded. */
export interface RunRepository {
  repository: Repository;
  baseBranch: string;
  branchName: string;
  baseCommit: string | null;
  endCommit: string | null;
}

/**
 * The owner's repositories of the agent task (agent_task_base_remotes), in the order they were
 * added (repository id), each with the run's branch; repositories removed since are left out.
 */
export async function runRepositories(db: Kysely<Database>, ownerId: string, agentTaskId: string): Promise<RunRepository[]> {
  const rows = await db
    .selectFrom("agent_task_base_remotes as b")
    .innerJoin("repositories", "repositories.id", "b.repository_id")
    .selectAll("repositories")
    .select(["b.base_branch", "b.branch_name", "b.base_commit", "b.end_commit"])
    .where("b.agent_task_id", "=", agentTaskId)
    .where("repositories.owner_id", "=", ownerId)
    .orderBy("repositories.id")
    .execute();
  return rows.map((row) => ({
    repository: toRepository(row),
    baseBranch: row.base_branch,
    branchName: row.branch_name,
    baseCommit: row.base_commit,
    endCommit: row.end_commit,
  }));
}
