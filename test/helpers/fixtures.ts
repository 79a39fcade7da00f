// What tests build before they test: workspaces, repositories, groups, signed-in users,
// registration tokens and workers, made the way a client makes them — through the generated
// clients over HTTP, never in the database. Each call makes fresh resources (unique names and
// URLs unless the test gives its own), so tests that share a server stay apart.
import { randomUUID } from "node:crypto";
import type { DescService, MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { expect } from "vitest";
import { AuthService, type WorkerRegistrationToken } from "../../gen/foreman/v1/auth_pb.js";
import {
  RepositoryService,
  type AddRepositoryRequestSchema,
  type Repository,
  type RepositoryGroup,
} from "../../gen/foreman/v1/repository_pb.js";
import { WorkerService, type RegisterWorkerRequestSchema, type RegisterWorkerResponse } from "../../gen/foreman/v1/worker_pb.js";
import { WorkspaceService, type Workspace } from "../../gen/foreman/v1/workspace_pb.js";
import { clientWith, login, type Identity, type TestProvider } from "./oidc.js";
import type { Protocol, TestServer } from "./server.js";

/** AddRepository's fields beside the workspace and the remote URL. */
export type RepositoryInit = Omit<MessageInitShape<typeof AddRepositoryRequestSchema>, "$typeName" | "workspaceId" | "remoteUrl">;

/** A GitHub repository with a webhook secret: what a signed delivery for it needs. */
export interface GitHubRepository {
  id: string;
  workspaceId: string;
  /** owner/name, as GitHub's payloads name it. */
  fullName: string;
  secret: string;
  repository: Repository;
}

/** One caller of one server: its credential, its clients, and the fixtures it can make. */
export interface Caller {
  readonly server: TestServer;
  /** The bearer its calls carry; undefined for none (single-user mode's local user, or an anonymous caller). */
  readonly token: string | undefined;
  /** A client for the service that carries the credential (one per service and protocol). */
  client<S extends DescService>(service: S, protocol?: Protocol): Client<S>;
  readonly workspaces: Client<typeof WorkspaceService>;
  readonly repositories: Client<typeof RepositoryService>;
  readonly auth: Client<typeof AuthService>;
  /** A new workspace, named `ws-<uuid>` unless init names it. */
  workspace(init?: { name?: string; description?: string }): Promise<Workspace>;
  /** A new repository in the workspace, at a fresh github.com URL unless one is given. */
  repository(workspaceId: string, remoteUrl?: string, init?: RepositoryInit): Promise<Repository>;
  /** A new group of these repositories, named by the server (after them) unless a name is given. */
  group(workspaceId: string, repositoryIds: string[], name?: string): Promise<RepositoryGroup>;
  /** A new workspace holding one repository and a group of just it, where a task needs a group. */
  groupOfOne(): Promise<{ workspace: Workspace; repository: Repository; group: RepositoryGroup }>;
  /**
   * A GitHub repository with a webhook secret (fresh name and secret unless given), at
   * https://github.com/{fullName}.git unless remoteUrl says otherwise, in a new workspace
   * unless workspaceId names one.
   */
  githubRepository(init?: { fullName?: string; secret?: string; remoteUrl?: string; workspaceId?: string }): Promise<GitHubRepository>;
  /** A new worker registration token and its secret (shown this once). */
  registrationToken(name?: string, ttlSeconds?: number): Promise<{ token: WorkerRegistrationToken; secret: string }>;
}

/** A signed-in user of a multi-user server. */
export interface User extends Caller {
  readonly token: string;
  /** The user's id on the server. */
  id: string;
  accessToken: string;
  refreshToken: string;
}

/** `value`, checked to be there (an answer's message field is optional in the generated types). */
function given<T>(value: T | undefined, what: string): T {
  expect(value, what).toBeDefined();
  return value!;
}

/** The caller with this bearer token on t, or with none (the local user in single-user mode). */
export function caller(t: TestServer, token?: string): Caller {
  const clients = new Map<string, Client<DescService>>();
  const client = <S extends DescService>(service: S, protocol?: Protocol): Client<S> => {
    const key = `${service.typeName} ${protocol ?? ""}`;
    let c = clients.get(key);
    if (c === undefined) {
      c = (token === undefined ? t.client(service, protocol) : clientWith(t, service, token, protocol)) as unknown as Client<DescService>;
      clients.set(key, c);
    }
    return c as unknown as Client<S>;
  };
  const workspaces = client(WorkspaceService);
  const repositories = client(RepositoryService);
  const self: Caller = {
    server: t,
    token,
    client,
    workspaces,
    repositories,
    auth: client(AuthService),
    async workspace(init = {}) {
      const { workspace } = await workspaces.createWorkspace({ name: `ws-${randomUUID()}`, ...init });
      return given(workspace, "CreateWorkspace's workspace");
    },
    async repository(workspaceId, remoteUrl = `https://github.com/acme/r-${randomUUID().slice(0, 8)}.git`, init = {}) {
      const { repository } = await repositories.addRepository({ ...init, workspaceId, remoteUrl });
      return given(repository, "AddRepository's repository");
    },
    async group(workspaceId, repositoryIds, name) {
      const { repositoryGroup } = await repositories.createRepositoryGroup({ workspaceId, repositoryIds, ...(name === undefined ? {} : { name }) });
      return given(repositoryGroup, "CreateRepositoryGroup's group");
    },
    async groupOfOne() {
      const workspace = await self.workspace();
      const repository = await self.repository(workspace.id);
      const group = await self.group(workspace.id, [repository.id]);
      return { workspace, repository, group };
    },
    async githubRepository(init = {}) {
      const workspaceId = init.workspaceId ?? (await self.workspace()).id;
      const fullName = init.fullName ?? `acme/r-${randomUUID().slice(0, 8)}`;
      const secret = init.secret ?? `secret-${randomUUID()}`;
      const repository = await self.repository(workspaceId, init.remoteUrl ?? `https://github.com/${fullName}.git`, { webhookSecret: secret });
      return { id: repository.id, workspaceId, fullName, secret, repository };
    },
    async registrationToken(name = `token ${randomUUID().slice(0, 8)}`, ttlSeconds = 0) {
      const { token: made, secret } = await self.auth.createWorkerRegistrationToken({ name, ttlSeconds });
      return { token: given(made, "CreateWorkerRegistrationToken's token"), secret };
    },
  };
  return self;
}

/**
 * Logs in through the provider (the whole browser flow) as `who`: an Identity, or a subject
 * whose email and name follow from it. Logins to one provider run one at a time: the provider
 * signs whichever identity was set last.
 */
export async function signIn(t: TestServer, provider: TestProvider, who: string | Identity): Promise<User> {
  const identity = typeof who === "string" ? { sub: who, email: `${who}@example.com`, name: who } : who;
  const { user, tokens } = await login(t, provider, identity);
  const id = given(user, "HandleCallback's user").id;
  const { accessToken, refreshToken } = given(tokens, "HandleCallback's tokens");
  return { ...caller(t, accessToken), token: accessToken, id, accessToken, refreshToken };
}

export type RegisterInit = Partial<Omit<MessageInitShape<typeof RegisterWorkerRequestSchema>, "$typeName" | "registrationToken">>;

/** RegisterWorker as a worker daemon calls it (no Authorization header), named "worker" unless init names it. */
export function registerWorker(t: TestServer, registrationToken: string, init: RegisterInit = {}): Promise<RegisterWorkerResponse> {
  return caller(t).client(WorkerService).registerWorker({ name: "worker", ...init, registrationToken });
}
