// What the daily verbs share to reach the server: the clients (FOREMAN_URL or --server, the
// credential client.ts finds), a failure as one line that says what to do, and finding a
// workspace or repository by id or by name.
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import { RepositoryService, type Repository } from "../../gen/foreman/v1/repository_pb.js";
import { SessionService } from "../../gen/foreman/v1/session_pb.js";
import { TaskService } from "../../gen/foreman/v1/task_pb.js";
import { WorkspaceService, type Workspace } from "../../gen/foreman/v1/workspace_pb.js";
import { apiTransport, explain, serverUrl } from "../client/client.js";
import { ServerRefused, UsageError } from "./errors.js";

export interface Api {
  env: NodeJS.ProcessEnv;
  server: string;
  tasks: Client<typeof TaskService>;
  sessions: Client<typeof SessionService>;
  workspaces: Client<typeof WorkspaceService>;
  repositories: Client<typeof RepositoryService>;
}

/** The clients, to --server when given, else to FOREMAN_URL. */
export function api(values: { server?: string }, env: NodeJS.ProcessEnv = process.env): Api {
  const e = values.server === undefined ? env : { ...env, FOREMAN_URL: values.server };
  if (values.server !== undefined && !/^https?:\/\/[^/]/.test(values.server)) throw new UsageError(`--server must be an http:// or https:// URL, got '${values.server}'`);
  const transport = apiTransport(e);
  const client = <S extends DescService>(s: S) => createClient(s, transport);
  return {
    env: e,
    server: serverUrl(e),
    tasks: client(TaskService),
    sessions: client(SessionService),
    workspaces: client(WorkspaceService),
    repositories: client(RepositoryService),
  };
}

/** Whether the call failed on the way (no server answered), not by the server's answer. */
export function unreachable(error: unknown): boolean {
  if (!(error instanceof ConnectError)) return false;
  const cause = error.cause as (Error & { code?: unknown; cause?: { code?: unknown } }) | undefined;
  return typeof cause?.code === "string" || typeof cause?.cause?.code === "string";
}

/**
 * The failure as the one line the user reads. notFound, when given, words a NotFound answer
 * (e.g. `no task X; foreman task list shows yours`).
 */
export function failure(a: Api, error: unknown, notFound?: string): unknown {
  if (unreachable(error)) {
    return new ServerRefused(`cannot reach the server at ${a.server} (${(error as ConnectError).rawMessage}); is it running? FOREMAN_URL or --server names another`, { cause: error });
  }
  if (error instanceof ConnectError && error.code === Code.NotFound && notFound !== undefined) return new ServerRefused(notFound, { cause: error });
  if (error instanceof ConnectError && error.code === Code.Unauthenticated) {
    return new ServerRefused(`${error.rawMessage}; run foreman login (or set FOREMAN_ACCESS_TOKEN)`, { cause: error });
  }
  return explain(error);
}

/** Runs the call, turning its failure into the line the user reads. */
export async function call<T>(a: Api, run: () => Promise<T>, notFound?: string): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw failure(a, error, notFound);
  }
}

const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const looksLikeId = (s: string) => ID.test(s.trim());

/** Every item of a paged list. */
export async function all<T>(page: (pageToken: string) => Promise<{ items: T[]; next: string }>): Promise<T[]> {
  const items: T[] = [];
  let token = "";
  do {
    const p = await page(token);
    items.push(...p.items);
    token = p.next;
  } while (token !== "");
  return items;
}

export const listWorkspaces = (a: Api) =>
  call(a, () => all(async (pageToken) => {
    const r = await a.workspaces.listWorkspaces({ pageSize: 1000, pageToken });
    return { items: r.workspaces, next: r.nextPageToken };
  }));

/** The workspace named by id or name, or the only one there is when none is named. */
export async function findWorkspace(a: Api, named: string | undefined): Promise<Workspace> {
  if (named !== undefined && looksLikeId(named)) {
    const r = await call(a, () => a.workspaces.getWorkspace({ id: named.trim() }), `no workspace ${named.trim()}; foreman workspace list shows yours`);
    return r.workspace!;
  }
  const workspaces = await listWorkspaces(a);
  if (named === undefined) {
    if (workspaces.length === 1) return workspaces[0]!;
    if (workspaces.length === 0) throw new ServerRefused("you have no workspace yet; create one with foreman workspace add NAME");
    throw new UsageError(`you have ${workspaces.length} workspaces; name one with --workspace (foreman workspace list shows them)`);
  }
  const found = workspaces.find((w) => w.name === named);
  if (found === undefined) throw new ServerRefused(`no workspace named '${named}'; foreman workspace list shows yours`);
  return found;
}

export const listRepositories = (a: Api, workspaceId: string) =>
  call(a, () => all(async (pageToken) => {
    const r = await a.repositories.listRepositories({ workspaceId, pageSize: 1000, pageToken });
    return { items: r.repositories, next: r.nextPageToken };
  }));

/** The repository named by id, or by name in the workspace (the only one when none is named). */
export async function findRepository(a: Api, named: string | undefined, workspace: () => Promise<Workspace>): Promise<Repository> {
  if (named !== undefined && looksLikeId(named)) {
    const r = await call(a, () => a.repositories.getRepository({ id: named.trim() }), `no repository ${named.trim()}; foreman repository list shows them`);
    return r.repository!;
  }
  const ws = await workspace();
  const repositories = await listRepositories(a, ws.id);
  if (named === undefined) {
    if (repositories.length === 1) return repositories[0]!;
    if (repositories.length === 0) throw new ServerRefused(`workspace ${ws.name} has no repository yet; add one with foreman repository add --workspace ${ws.name} URL`);
    throw new UsageError(`workspace ${ws.name} has ${repositories.length} repositories; name one with --repository (foreman repository list shows them)`);
  }
  const found = repositories.find((r) => r.name === named);
  if (found === undefined) throw new ServerRefused(`no repository named '${named}' in workspace ${ws.name}; foreman repository list --workspace ${ws.name} shows them`);
  return found;
}
