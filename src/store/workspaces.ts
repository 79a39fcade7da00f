// Workspaces, always scoped to their owner.
import type { Kysely, Selectable } from "kysely";
import type { Database, WorkspacesTable } from "../db/schema.js";
import { fromDbTime, toDbTime } from "./codec.js";
import { keysetPage, type PageWindow } from "./pages.js";
import { prepared } from "./prepared.js";

export interface Workspace {
  id: string;
  ownerId: string;
  name: string;
  description: string;
  createdAt: Date;
  updatedAt: Date;
  /** Whether upstream credentials are stored (they themselves are read only by store/repositories.ts credentialsForFetch). */
  hasUpstreamCredentials: boolean;
}

function toWorkspace(row: Selectable<WorkspacesTable>): Workspace {
  return {
    id: row.id,
    ownerId: row.owner_id,
    name: row.name,
    description: row.description,
    createdAt: fromDbTime(row.created_at),
    updatedAt: fromDbTime(row.updated_at),
    hasUpstreamCredentials: row.upstream_credentials !== null,
  };
}

export async function insertWorkspace(db: Kysely<Database>, w: Omit<Workspace, "updatedAt" | "hasUpstreamCredentials">): Promise<Workspace> {
  const row = await db
    .insertInto("workspaces")
    .values({
      id: w.id,
      owner_id: w.ownerId,
      name: w.name,
      description: w.description,
      created_at: toDbTime(w.createdAt),
      updated_at: toDbTime(w.createdAt),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toWorkspace(row);
}

// Every call on a workspace's things reads it first: compiled once.
const selectWorkspace = prepared((db, ownerId: string, id: string) =>
  db.selectFrom("workspaces").selectAll().where("owner_id", "=", ownerId).where("id", "=", id),
);

export async function getWorkspace(db: Kysely<Database>, ownerId: string, id: string): Promise<Workspace | undefined> {
  const [row] = await selectWorkspace(db, ownerId, id);
  return row && toWorkspace(row);
}

/** Oldest first: one page. */
export async function listWorkspaces(db: Kysely<Database>, ownerId: string, page: PageWindow): Promise<Workspace[]> {
  const query = db.selectFrom("workspaces").selectAll().where("owner_id", "=", ownerId);
  return (await keysetPage(query, page)).map(toWorkspace);
}

export async function updateWorkspace(
  db: Kysely<Database>,
  ownerId: string,
  id: string,
  patch: { name?: string; description?: string },
  now: Date,
): Promise<Workspace | undefined> {
  const row = await db
    .updateTable("workspaces")
    .set({ ...patch, updated_at: toDbTime(now) })
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .returningAll()
    .executeTakeFirst();
  return row && toWorkspace(row);
}

/** Deletes the workspace and, by cascade, everything in it. Returns whether it existed. */
export async function deleteWorkspace(db: Kysely<Database>, ownerId: string, id: string): Promise<boolean> {
  const result = await db.deleteFrom("workspaces").where("owner_id", "=", ownerId).where("id", "=", id).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

/** How much the workspace holds, to refuse deleting a non-empty one without force. */
export async function countWorkspaceContents(
  db: Kysely<Database>,
  id: string,
): Promise<{ repositories: number; repositoryGroups: number; tasks: number }> {
  const count = async (table: "repositories" | "repository_groups" | "unit_tasks" | "composite_tasks") => {
    const row = await db
      .selectFrom(table)
      .select((eb) => eb.fn.countAll<number | string>().as("n"))
      .where("workspace_id", "=", id)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  };
  const [repositories, repositoryGroups, unitTasks, compositeTasks] = await Promise.all([
    count("repositories"),
    count("repository_groups"),
    count("unit_tasks"),
    count("composite_tasks"),
  ]);
  return { repositories, repositoryGroups, tasks: unitTasks + compositeTasks };
}

/** Replaces (sealed) or removes (null) the workspace's upstream credentials; undefined when there is no such workspace. */
export async function setWorkspaceCredentials(
  db: Kysely<Database>,
  ownerId: string,
  id: string,
  sealed: string | null,
  now: Date,
): Promise<Workspace | undefined> {
  const row = await db
    .updateTable("workspaces")
    .set({ upstream_credentials: sealed, updated_at: toDbTime(now) })
    .where("owner_id", "=", ownerId)
    .where("id", "=", id)
    .returningAll()
    .executeTakeFirst();
  return row && toWorkspace(row);
}

/** The workspace's sealed upstream credentials; null for none or no such workspace. */
export async function workspaceCredentials(db: Kysely<Database>, ownerId: string, id: string): Promise<string | null> {
  const row = await db.selectFrom("workspaces").select("upstream_credentials").where("owner_id", "=", ownerId).where("id", "=", id).executeTakeFirst();
  return row?.upstream_credentials ?? null;
}
