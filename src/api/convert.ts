// Domain values to protobuf messages.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { WorkspaceSchema, type Workspace } from "../../gen/foreman/v1/workspace_pb.js";
import {
  DeliveryMode,
  RepositoryGroupSchema,
  RepositorySchema,
  VcsProviderType,
  type Repository,
  type RepositoryGroup,
  type UpstreamCredentials,
} from "../../gen/foreman/v1/repository_pb.js";
import { TokenSetSchema, UserSchema, WorkerRegistrationTokenSchema, type TokenSet as TokenSetMessage, type User as UserMessage, type WorkerRegistrationToken } from "../../gen/foreman/v1/auth_pb.js";
import type { TokenSet, User } from "../core/logins.js";
import { WorkerSchema, type Worker } from "../../gen/foreman/v1/worker_pb.js";
import type { ListedWorker, RegistrationToken } from "../core/workers.js";
import type * as core from "../core/workspaces.js";
import type * as repos from "../core/repositories.js";
import { AGENT_TYPES, EnumNames, LISTED_WORKER_STATUSES, VCS_PROVIDERS } from "./enums.js";

/** Repositories' delivery modes (core/repositories.ts DELIVERY_MODES). */
export const DELIVERY_MODES = new EnumNames<repos.DeliveryModeName, DeliveryMode>({
  branch: DeliveryMode.BRANCH,
  merge: DeliveryMode.MERGE,
  squash: DeliveryMode.SQUASH,
  rebase: DeliveryMode.REBASE,
});

export function workspaceToProto(w: core.Workspace): Workspace {
  return create(WorkspaceSchema, {
    id: w.id,
    name: w.name,
    description: w.description,
    createTime: timestampFromDate(w.createdAt),
    updateTime: timestampFromDate(w.updatedAt),
    hasUpstreamCredentials: w.hasUpstreamCredentials,
  });
}

export function repositoryToProto(r: repos.Repository): Repository {
  return create(RepositorySchema, {
    id: r.id,
    workspaceId: r.workspaceId,
    name: r.name,
    remoteUrl: r.remoteUrl,
    defaultBranch: r.defaultBranch,
    vcsProviderType: VCS_PROVIDERS.value(r.vcsProviderType, VcsProviderType.GENERIC),
    hasWebhookSecret: r.hasWebhookSecret,
    hasUpstreamCredentials: r.hasUpstreamCredentials,
    deliveryMode: DELIVERY_MODES.value(r.deliveryMode, DeliveryMode.BRANCH),
    createTime: timestampFromDate(r.createdAt),
    updateTime: timestampFromDate(r.updatedAt),
  });
}

export function repositoryGroupToProto(g: repos.RepositoryGroup): RepositoryGroup {
  return create(RepositoryGroupSchema, {
    id: g.id,
    workspaceId: g.workspaceId,
    name: g.name ?? "",
    repositoryIds: g.repositoryIds,
    createTime: timestampFromDate(g.createdAt),
    updateTime: timestampFromDate(g.updatedAt),
  });
}

export function userToProto(u: User): UserMessage {
  return create(UserSchema, {
    id: u.id,
    email: u.email ?? "",
    name: u.name ?? "",
    issuer: u.issuer,
    createTime: timestampFromDate(u.createdAt),
  });
}

export function tokenSetToProto(t: TokenSet): TokenSetMessage {
  return create(TokenSetSchema, {
    accessToken: t.accessToken,
    accessTokenExpireTime: timestampFromDate(t.accessTokenExpiresAt),
    refreshToken: t.refreshToken,
    refreshTokenExpireTime: timestampFromDate(t.refreshTokenExpiresAt),
  });
}

export function registrationTokenToProto(t: RegistrationToken): WorkerRegistrationToken {
  return create(WorkerRegistrationTokenSchema, {
    id: t.id,
    name: t.name,
    createTime: timestampFromDate(t.createdAt),
    ...(t.expiresAt ? { expireTime: timestampFromDate(t.expiresAt) } : {}),
    ...(t.revokedAt ? { revokeTime: timestampFromDate(t.revokedAt) } : {}),
    ...(t.lastUsedAt ? { lastUseTime: timestampFromDate(t.lastUsedAt) } : {}),
  });
}

export function workerToProto(w: ListedWorker): Worker {
  const status = w.status === "active" ? (w.heldSessionCount > 0 ? "busy" : "idle") : w.status;
  return create(WorkerSchema, {
    id: w.id,
    name: w.name,
    hostname: w.hostname,
    version: w.version,
    status: LISTED_WORKER_STATUSES.value(status),
    agentTypes: w.agentTypes.map((a) => AGENT_TYPES.value(a)),
    labels: w.labels,
    maxConcurrentSessions: w.maxConcurrentSessions,
    heldSessionCount: w.heldSessionCount,
    heldSessionIds: w.heldSessionIds,
    registerTime: timestampFromDate(w.registeredAt),
    lastHeartbeatTime: timestampFromDate(w.lastHeartbeatAt),
    ...(w.unregisteredAt ? { unregisterTime: timestampFromDate(w.unregisteredAt) } : {}),
    servesEveryUser: w.ownerId === null,
    ownerId: w.ownerId ?? "",
    registrationTokenId: w.registrationTokenId ?? "",
  });
}

/** The oneof's case as core takes it; undefined for none (no message, or no case set). */
export function credentialsOf(message: UpstreamCredentials | undefined): { token: string } | { username: string; password: string } | undefined {
  const kind = message?.kind;
  if (kind?.case === "token") return { token: kind.value };
  if (kind?.case === "usernamePassword") return { username: kind.value.username, password: kind.value.password };
  return undefined;
}
