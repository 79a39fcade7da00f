// `foreman task create|list|show`. main.ts reads the arguments; create --follow follows the
// task's logs (logs.ts) and exits with its outcome.
import { readFile } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { AgentType, TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { TaskSchema, UnitTaskSchema, type Task } from "../../gen/foreman/v1/task_pb.js";
import { TtyInputStatus } from "../../gen/foreman/v1/session_pb.js";
import type { Workspace } from "../../gen/foreman/v1/workspace_pb.js";
import { all, api, call, findRepository, findWorkspace, listWorkspaces, looksLikeId, type Api } from "./calls.js";
import { UsageError } from "./errors.js";
import { followTask, interruptible, Sink } from "./logs.js";
import {
  agentName,
  colourFor,
  executionName,
  json,
  jsonLine,
  paint,
  parseStatus,
  renderQuestion,
  sessionStateName,
  statusColour,
  statusName,
  table,
  time,
  type Out,
} from "./render.js";

interface Args {
  values: Record<string, string | undefined>;
  flags: Record<string, boolean>;
  positionals: string[];
}

const p = () => paint(colourFor(process.stdout));

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** The prompt from the argument, --prompt-file, or stdin (`-`, or piped with neither). */
async function readPrompt(arg: string | undefined, file: string | undefined): Promise<string> {
  if (arg !== undefined && file !== undefined) throw new UsageError("give the prompt as an argument or with --prompt-file, not both");
  let prompt: string;
  if (file !== undefined && file !== "-") {
    try {
      prompt = await readFile(file, "utf8");
    } catch (error) {
      throw new UsageError(`cannot read --prompt-file ${file}: ${(error as Error).message}`);
    }
  } else if (arg === "-" || file === "-" || (arg === undefined && !process.stdin.isTTY)) {
    prompt = await readStdin();
  } else if (arg !== undefined) {
    prompt = arg;
  } else {
    throw new UsageError("a prompt is required: give it as an argument, with --prompt-file FILE, or on stdin");
  }
  if (prompt.trim() === "") throw new UsageError("the prompt is empty");
  return prompt;
}

/** --agent's value as AgentType: claude-code, codex, command (and the others the server knows). */
function readAgent(name: string | undefined): AgentType {
  if (name === undefined) return AgentType.UNSPECIFIED;
  const value = AgentType[name.trim().toUpperCase().replace(/-/g, "_") as keyof typeof AgentType] as AgentType | undefined;
  if (typeof value !== "number" || value === AgentType.UNSPECIFIED) {
    throw new UsageError(`--agent must be command, claude-code or codex, got '${name}'`);
  }
  return value;
}

/** The repository group the task runs against: --group, else --repository's own group, else the only repository's. */
async function groupFor(a: Api, values: Record<string, string | undefined>): Promise<string> {
  if (values.group !== undefined && values.repository !== undefined) throw new UsageError("give --repository or --group, not both");
  let workspace: Workspace | undefined;
  const ws = async () => (workspace ??= await findWorkspace(a, values.workspace));
  const groups = async (workspaceId: string) =>
    call(a, () =>
      all(async (pageToken) => {
        const r = await a.repositories.listRepositoryGroups({ workspaceId, pageSize: 1000, pageToken });
        return { items: r.repositoryGroups, next: r.nextPageToken };
      }),
    );
  if (values.group !== undefined) {
    if (looksLikeId(values.group)) return values.group.trim();
    const w = await ws();
    const found = (await groups(w.id)).find((g) => g.name === values.group);
    if (found === undefined) throw new UsageError(`no repository group named '${values.group}' in workspace ${w.name}`);
    return found.id;
  }
  const repository = await findRepository(a, values.repository, ws);
  // A repository's own group is the unnamed one holding just it; made the first time it is needed.
  const own = (await groups(repository.workspaceId)).find((g) => g.name === "" && g.repositoryIds.length === 1 && g.repositoryIds[0] === repository.id);
  if (own !== undefined) return own.id;
  const made = await call(a, () => a.repositories.createRepositoryGroup({ workspaceId: repository.workspaceId, repositoryIds: [repository.id] }));
  return made.repositoryGroup!.id;
}

/** --secrets NAME,NAME: each from this process's environment (a value on the command line would show in ps). */
function readSecrets(names: string | undefined): Record<string, string> {
  const secrets: Record<string, string> = {};
  if (names === undefined) return secrets;
  const list = names.split(",").map((n) => n.trim());
  if (list.includes("")) throw new UsageError("--secrets takes names of environment variables, comma-separated: one is empty");
  for (const name of list) {
    const value = process.env[name];
    if (value === undefined) throw new UsageError(`--secrets names ${name}, which is not set in this environment: export it first`);
    secrets[name] = value;
  }
  return secrets;
}

export async function createTask(args: Args, out: Out): Promise<number> {
  const { values, flags } = args;
  const agentType = readAgent(values.agent);
  const secrets = readSecrets(values.secrets);
  const prompt = await readPrompt(args.positionals[0], values["prompt-file"]);
  const a = api(values);
  const repositoryGroupId = await groupFor(a, values);
  const { unitTask } = await call(a, () =>
    a.tasks.createUnitTask({ repositoryGroupId, prompt, title: values.title ?? "", agentType, agentModel: values.model ?? "", secrets }),
  );
  const u = unitTask!;
  if (flags.json) out(jsonLine(json(UnitTaskSchema, u)));
  else {
    out(`Created task ${u.id}: ${u.title}`);
    out(`  agent ${agentName(u.agentType)}${u.agentModel ? ` (${u.agentModel})` : ""}, branch ${u.branchName || "-"}`);
    const names = Object.keys(secrets).sort();
    if (names.length > 0) out(`  secrets ${names.join(", ")}, held for its runs`);
    if (!flags.follow) out(`Follow it: foreman logs -f ${u.id}`);
  }
  if (!flags.follow) return 0;
  const stop = interruptible();
  try {
    return await followTask(a, create(TaskSchema, { task: { case: "unitTask", value: u } }), new Sink(out, flags.json === true), stop.signal);
  } finally {
    stop.dispose();
  }
}

const titleOf = (t: Task) => t.task.value?.title ?? "";
const kindOf = (t: Task) => (t.task.case === "compositeTask" ? "composite" : "unit");
const agentOf = (t: Task) =>
  t.task.case === "unitTask" ? agentName(t.task.value.agentType) : t.task.case === "compositeTask" ? agentName(t.task.value.executionAgentType) : "-";

export async function listTasks(args: Args, out: Out): Promise<void> {
  const { values, flags } = args;
  const statuses = (values.status ?? "")
    .split(",")
    .filter((s) => s.trim() !== "")
    .map((s) => {
      const status = parseStatus(s);
      if (status === undefined) throw new UsageError(`--status: no status '${s.trim()}' (in_progress, in_review, approved, done, rejected, failed, cancelled, ...)`);
      return status;
    });
  const a = api(values);
  const workspaces = values.workspace !== undefined ? [await findWorkspace(a, values.workspace)] : await listWorkspaces(a);
  const rows: { task: Task; workspace: Workspace }[] = [];
  for (const w of workspaces) {
    const tasks = await call(a, () =>
      all(async (pageToken) => {
        const r = await a.tasks.listTasks({ workspaceId: w.id, statuses, pageSize: 1000, pageToken });
        return { items: r.tasks, next: r.nextPageToken };
      }),
    );
    rows.push(...tasks.map((task) => ({ task, workspace: w })));
  }
  // Newest first, across workspaces too (ids are UUIDv7: they sort by creation).
  rows.sort((x, y) => (x.task.task.value!.id < y.task.task.value!.id ? 1 : -1));
  if (flags.json) return out(jsonLine({ tasks: rows.map((r) => json(TaskSchema, r.task)) }));
  if (rows.length === 0) {
    out(workspaces.length === 0 ? "No workspaces yet; create one with foreman workspace add NAME." : "No tasks; create one with foreman task create 'What to do'.");
    return;
  }
  const paint_ = p();
  const several = workspaces.length > 1;
  const header = ["ID", "STATUS", "RUN", "AGENT", "CREATED", ...(several ? ["WORKSPACE"] : []), "TITLE"];
  const body = rows.map(({ task, workspace }) => {
    const v = task.task.value!;
    return [
      v.id,
      statusColour(v.status, paint_)(statusName(v.status)),
      executionName(v.executionState),
      agentOf(task),
      time(v.createTime),
      ...(several ? [workspace.name] : []),
      titleOf(task),
    ];
  });
  for (const line of table(header, body, paint_)) out(line);
}

export async function showTask(id: string, args: Args, out: Out): Promise<void> {
  const a = api(args.values);
  const { task } = await call(a, () => a.tasks.getTask({ id }), `no task ${id}; foreman task list shows yours`);
  const t = task!;
  if (args.flags.json) return out(jsonLine(json(TaskSchema, t)));
  const v = t.task.value!;
  const paint_ = p();
  const field = (name: string, value: string) => {
    if (value !== "") out(`${paint_.bold(name.padEnd(10))} ${value}`);
  };
  field("task", `${v.id} (${kindOf(t)})`);
  field("title", v.title);
  field("status", `${statusColour(v.status, paint_)(statusName(v.status))}${v.statusReason ? `: ${v.statusReason}` : ""}`);
  field("run", `${executionName(v.executionState)}${v.waitingReason ? ` (${v.waitingReason})` : ""}`);
  field("agent", agentOf(t));
  if (t.task.case === "unitTask") {
    const u = t.task.value;
    field("model", u.agentModel);
    field("branch", u.branchName ? `${u.branchName}${u.baseBranch ? ` from ${u.baseBranch}` : ""}` : "");
    field("commits", u.baseCommit ? `${u.baseCommit.slice(0, 12)}..${u.endCommit ? u.endCommit.slice(0, 12) : "(no end yet)"}` : "");
    field("pr", u.linkedPrUrl);
  }
  field("created", time(v.createTime));
  field("updated", time(v.updateTime));
  const runs = t.task.case === "unitTask" ? t.task.value.agentTasks : t.task.case === "compositeTask" && t.task.value.planningAgentTask ? [t.task.value.planningAgentTask] : [];
  if (runs.length > 0) {
    out("");
    const rows = runs.flatMap((r, i) =>
      r.sessions.map((s) => [String(i + 1), r.id, s.id, String(s.attempt), sessionStateName(s.state), s.exitCode === undefined ? "" : String(s.exitCode), time(s.createTime)]),
    );
    for (const line of table(["RUN", "AGENT TASK", "SESSION", "ATTEMPT", "STATE", "EXIT", "CREATED"], rows, paint_)) out(line);
  }
  const pending = await call(a, () => a.sessions.listTtyInputRequests({ taskId: v.id, status: TtyInputStatus.PENDING, pageSize: 100 }));
  if (pending.requests.length > 0) {
    out("");
    for (const q of pending.requests) for (const line of renderQuestion(q, paint_)) out(line);
  }
  out("");
  out(nextStep(v.id, v.status));
}

/** What one would do next with a task in this status. */
function nextStep(id: string, status: TaskStatus): string {
  switch (status) {
    case TaskStatus.IN_PROGRESS:
    case TaskStatus.PLANNING:
      return `Follow it: foreman logs -f ${id}`;
    case TaskStatus.IN_REVIEW:
    case TaskStatus.PENDING_APPROVAL:
      return `Review it: foreman diff ${id}; then foreman approve ${id}, foreman request-changes ${id} --feedback TEXT or foreman reject ${id}`;
    case TaskStatus.FAILED:
    case TaskStatus.CANCELLED:
      return `Read its log: foreman logs ${id}; run it again: foreman retry ${id}`;
    default:
      return `Read its log: foreman logs ${id}`;
  }
}
