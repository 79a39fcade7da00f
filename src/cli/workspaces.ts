// `foreman workspace add|list` and `foreman repository add|list`. main.ts reads the arguments.
import { RepositorySchema } from "../../gen/foreman/v1/repository_pb.js";
import { WorkspaceSchema } from "../../gen/foreman/v1/workspace_pb.js";
import { api, call, findWorkspace, listRepositories, listWorkspaces } from "./calls.js";
import { colourFor, json, jsonLine, paint, table, time, type Out } from "./render.js";

interface Common {
  values: { server?: string; [k: string]: string | undefined };
  flags: { json?: boolean };
}

const p = () => paint(colourFor(process.stdout));

export async function addWorkspace(name: string, args: Common, out: Out): Promise<void> {
  const a = api(args.values);
  const { workspace } = await call(a, () => a.workspaces.createWorkspace({ name, description: args.values.description ?? "" }));
  if (args.flags.json) return out(jsonLine(json(WorkspaceSchema, workspace!)));
  out(`Created workspace ${workspace!.name} (${workspace!.id}).`);
  out(`Add a repository to it: foreman repository add --workspace ${workspace!.name} URL`);
}

export async function workspaceList(args: Common, out: Out): Promise<void> {
  const a = api(args.values);
  const workspaces = await listWorkspaces(a);
  if (args.flags.json) return out(jsonLine({ workspaces: workspaces.map((w) => json(WorkspaceSchema, w)) }));
  if (workspaces.length === 0) return out("No workspaces yet; create one with foreman workspace add NAME.");
  const rows = workspaces.map((w) => [w.id, w.name, time(w.createTime), w.description]);
  for (const line of table(["ID", "NAME", "CREATED", "DESCRIPTION"], rows, p())) out(line);
}

export async function addRepository(url: string, args: Common, out: Out): Promise<void> {
  const a = api(args.values);
  const ws = await findWorkspace(a, args.values.workspace);
  const { repository } = await call(a, () =>
    a.repositories.addRepository({
      workspaceId: ws.id,
      remoteUrl: url,
      name: args.values.name ?? "",
      defaultBranch: args.values["default-branch"] ?? "",
    }),
  );
  const r = repository!;
  if (args.flags.json) return out(jsonLine(json(RepositorySchema, r)));
  out(`Added repository ${r.name} (${r.id}) to workspace ${ws.name}, default branch ${r.defaultBranch}.`);
  out(`File a task against it: foreman task create --repository ${r.name} 'What to do'`);
}

export async function repositoryList(args: Common, out: Out): Promise<void> {
  const a = api(args.values);
  const ws = await findWorkspace(a, args.values.workspace);
  const repositories = await listRepositories(a, ws.id);
  if (args.flags.json) return out(jsonLine({ repositories: repositories.map((r) => json(RepositorySchema, r)) }));
  if (repositories.length === 0) return out(`No repositories in workspace ${ws.name} yet; add one with foreman repository add --workspace ${ws.name} URL.`);
  const rows = repositories.map((r) => [r.id, r.name, r.defaultBranch, r.remoteUrl]);
  for (const line of table(["ID", "NAME", "DEFAULT BRANCH", "REMOTE"], rows, p())) out(line);
}
