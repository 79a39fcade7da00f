import type { ServiceImpl } from "@connectrpc/connect";
import type { WorkspaceService } from "../../gen/foreman/v1/workspace_pb.js";
import { requireUser } from "./principal.js";
import type { Core } from "../core/context.js";
import * as workspaces from "../core/workspaces.js";
import { credentialsOf, workspaceToProto } from "./convert.js";

export function workspaceService(core: Core): ServiceImpl<typeof WorkspaceService> {
  return {
    async createWorkspace(req, ctx) {
      const workspace = await workspaces.createWorkspace(core, requireUser(ctx), req);
      return { workspace: workspaceToProto(workspace) };
    },
    async listWorkspaces(req, ctx) {
      const page = await workspaces.listWorkspaces(core, requireUser(ctx), req);
      return { workspaces: page.items.map(workspaceToProto), nextPageToken: page.nextPageToken };
    },
    async getWorkspace(req, ctx) {
      return { workspace: workspaceToProto(await workspaces.getWorkspace(core, requireUser(ctx), req.id)) };
    },
    async updateWorkspace(req, ctx) {
      const workspace = await workspaces.updateWorkspace(core, requireUser(ctx), req);
      return { workspace: workspaceToProto(workspace) };
    },
    async setWorkspaceCredentials(req, ctx) {
      const workspace = await workspaces.setWorkspaceCredentials(core, requireUser(ctx), { id: req.id, credentials: credentialsOf(req.upstreamCredentials) });
      return { workspace: workspaceToProto(workspace) };
    },
    async clearWorkspaceCredentials(req, ctx) {
      return { workspace: workspaceToProto(await workspaces.clearWorkspaceCredentials(core, requireUser(ctx), req.id)) };
    },
    async deleteWorkspace(req, ctx) {
      await workspaces.deleteWorkspace(core, requireUser(ctx), req);
      return {};
    },
  };
}
