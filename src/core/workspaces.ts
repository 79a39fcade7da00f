// Workspace rules: names unique per owner, bounded text, delete only when empty unless forced.
import { isUniqueViolation } from "../store/errors.js";
import { newId } from "../store/codec.js";
import * as store from "../store/workspaces.js";
import type { Workspace } from "../store/workspaces.js";
import type { Core } from "./context.js";
import { alreadyExists, failedPrecondition, notFound } from "./errors.js";
import { readPage, writePage } from "./pagination.js";
import { Violations, readId } from "./validation.js";
import { readRequiredCredentials, sealWorkspaceCredentials } from "./upstream.js";

export type { Workspace };

const NAME_MAX = 100;
const DESCRIPTION_MAX = 2000;

function checkName(v: Violations, name: string): void {
  v.text("name", name, { required: true, max: NAME_MAX, singleLine: true });
}

function nameTaken(name: string): Error {
  return alreadyExists("workspace", `a workspace named "${name}" already exists`, { name });
}

export async function createWorkspace(core: Core, ownerId: string, input: { name: string; description: string }): Promise<Workspace> {
  const name = input.name.trim();
  const description = input.description.trim();
  const v = new Violations();
  checkName(v, name);
  v.text("description", description, { max: DESCRIPTION_MAX });
  v.throwIfAny();
  try {
    return await store.insertWorkspace(core.db, { id: newId(core.now().getTime()), ownerId, name, description, createdAt: core.now() });
  } catch (error) {
    if (isUniqueViolation(error)) throw nameTaken(name);
    throw error;
  }
}

/** The owner's workspace; NotFound for a missing one or another owner's. */
export async function getWorkspace(core: Core, ownerId: string, rawId: string, field = "id"): Promise<Workspace> {
  const id = readId(rawId, field);
  const workspace = await store.getWorkspace(core.db, ownerId, id);
  if (workspace === undefined) throw notFound("workspace", id);
  return workspace;
}

export async function listWorkspaces(
  core: Core,
  ownerId: string,
  input: { pageSize: number; pageToken: string },
): Promise<{ items: Workspace[]; nextPageToken: string }> {
  const v = new Violations();
  const page = readPage(v, input.pageSize, input.pageToken, "workspaces");
  v.throwIfAny();
  return writePage(page, await store.listWorkspaces(core.db, ownerId, page));
}

export async function updateWorkspace(
  core: Core,
  ownerId: string,
  input: { id: string; name?: string | undefined; description?: string | undefined },
): Promise<Workspace> {
  const patch: { name?: string; description?: string } = {};
  const v = new Violations();
  const id = v.id("id", input.id);
  if (input.name !== undefined) {
    patch.name = input.name.trim();
    checkName(v, patch.name);
  }
  if (input.description !== undefined) {
    patch.description = input.description.trim();
    v.text("description", patch.description, { max: DESCRIPTION_MAX });
  }
  v.throwIfAny();
  try {
    const updated = await store.updateWorkspace(core.db, ownerId, id, patch, core.now());
    if (updated === undefined) throw notFound("workspace", id);
    return updated;
  } catch (error) {
    if (isUniqueViolation(error)) throw nameTaken(patch.name ?? "");
    throw error;
  }
}

export async function deleteWorkspace(core: Core, ownerId: string, input: { id: string; force: boolean }): Promise<void> {
  const id = readId(input.id);
  await core.adapter.transaction(core.db, async (tx) => {
    if ((await store.getWorkspace(tx, ownerId, id)) === undefined) throw notFound("workspace", id);
    if (!input.force) {
      const held = await store.countWorkspaceContents(tx, id);
      if (held.repositories + held.repositoryGroups + held.tasks > 0) {
        throw failedPrecondition(
          `workspace ${id} holds ${held.repositories} repositories, ${held.repositoryGroups} repository groups ` +
            `and ${held.tasks} tasks; delete them first or pass force to delete everything in it`,
          { id },
        );
      }
    }
    await store.deleteWorkspace(tx, ownerId, id);
  });
}

/**
 * Sets the workspace's upstream credentials, for every repository of it without its own. No remote
 * is asked now: each repository's next fetch checks them (core/clones.ts).
 */
export async function setWorkspaceCredentials(
  core: Core,
  ownerId: string,
  input: { id: string; credentials: { token: string } | { username: string; password: string } | undefined },
): Promise<Workspace> {
  const v = new Violations();
  const id = v.id("id", input.id);
  const credentials = readRequiredCredentials(v, input.credentials, "ClearWorkspaceCredentials");
  v.throwIfAny();
  const updated = await store.setWorkspaceCredentials(core.db, ownerId, id, sealWorkspaceCredentials(core, id, credentials), core.now());
  if (updated === undefined) throw notFound("workspace", id);
  return updated;
}

export async function clearWorkspaceCredentials(core: Core, ownerId: string, rawId: string): Promise<Workspace> {
  const id = readId(rawId);
  const updated = await store.setWorkspaceCredentials(core.db, ownerId, id, null, core.now());
  if (updated === undefined) throw notFound("workspace", id);
  return updated;
}
