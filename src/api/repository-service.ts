import type { ServiceImpl } from "@connectrpc/connect";
import type { RepositoryService } from "../../gen/foreman/v1/repository_pb.js";
import { requireUser } from "./principal.js";
import type { Core } from "../core/context.js";
import * as repositories from "../core/repositories.js";
import { DELIVERY_MODES, credentialsOf, repositoryGroupToProto, repositoryToProto } from "./convert.js";
import { VCS_PROVIDERS } from "./enums.js";

export function repositoryService(core: Core): ServiceImpl<typeof RepositoryService> {
  return {
    async addRepository(req, ctx) {
      // Core takes the provider as given: an unknown one is refused here, before the rest.
      const provider = VCS_PROVIDERS.readKnown(req.vcsProviderType, "vcs_provider_type", "provider");
      const repository = await repositories.addRepository(core, requireUser(ctx), {
        workspaceId: req.workspaceId,
        remoteUrl: req.remoteUrl,
        name: req.name,
        defaultBranch: req.defaultBranch,
        provider,
        webhookSecret: req.webhookSecret,
        upstreamCredentials: credentialsOf(req.upstreamCredentials),
        deliveryMode: DELIVERY_MODES.read(req.deliveryMode),
      });
      return { repository: repositoryToProto(repository) };
    },
    async listRepositories(req, ctx) {
      const page = await repositories.listRepositories(core, requireUser(ctx), req);
      return { repositories: page.items.map(repositoryToProto), nextPageToken: page.nextPageToken };
    },
    async getRepository(req, ctx) {
      return { repository: repositoryToProto(await repositories.getRepository(core, requireUser(ctx), req.id)) };
    },
    async removeRepository(req, ctx) {
      await repositories.removeRepository(core, requireUser(ctx), req.id);
      return {};
    },
    async setRepositoryCredentials(req, ctx) {
      const repository = await repositories.setRepositoryCredentials(core, requireUser(ctx), {
        id: req.id,
        credentials: credentialsOf(req.upstreamCredentials),
      });
      return { repository: repositoryToProto(repository) };
    },
    async clearRepositoryCredentials(req, ctx) {
      return { repository: repositoryToProto(await repositories.clearRepositoryCredentials(core, requireUser(ctx), req.id)) };
    },
    async setRepositoryDeliveryMode(req, ctx) {
      const repository = await repositories.setRepositoryDeliveryMode(core, requireUser(ctx), { id: req.id, deliveryMode: DELIVERY_MODES.read(req.deliveryMode) });
      return { repository: repositoryToProto(repository) };
    },
    async createRepositoryGroup(req, ctx) {
      const group = await repositories.createRepositoryGroup(core, requireUser(ctx), req);
      return { repositoryGroup: repositoryGroupToProto(group) };
    },
    async listRepositoryGroups(req, ctx) {
      const page = await repositories.listRepositoryGroups(core, requireUser(ctx), req);
      return { repositoryGroups: page.items.map(repositoryGroupToProto), nextPageToken: page.nextPageToken };
    },
    async updateRepositoryGroup(req, ctx) {
      const group = await repositories.updateRepositoryGroup(core, requireUser(ctx), {
        id: req.id,
        name: req.name,
        repositoryIds: req.repositoryIds?.ids,
      });
      return { repositoryGroup: repositoryGroupToProto(group) };
    },
    async deleteRepositoryGroup(req, ctx) {
      await repositories.deleteRepositoryGroup(core, requireUser(ctx), req.id);
      return {};
    },
  };
}
