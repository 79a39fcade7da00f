// The reviewer's verbs: `foreman answer`, `foreman diff`, and approve, reject,
// request-changes, retry and cancel, each one TaskService call. main.ts reads the arguments.
import { createInterface } from "node:readline/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { TaskStatus } from "../../gen/foreman/v1/common_pb.js";
import { TtyInputRequestSchema, TtyInputStatus, type TtyInputRequest } from "../../gen/foreman/v1/session_pb.js";
import { FileDiffSchema, FileStatus, TaskSchema, type FileDiff, type RepositoryDiff, type Task } from "../../gen/foreman/v1/task_pb.js";
import { api, call, failure, type Api } from "./calls.js";
import { ServerRefused, UsageError } from "./errors.js";
import { colourFor, enumName, json, jsonLine, paint, renderQuestion, statusColour, statusName, table, type Out, type Paint } from "./render.js";

interface Args {
  values: Record<string, string | undefined>;
  flags: Record<string, boolean>;
  positionals: string[];
}

const p = () => paint(colourFor(process.stdout));
const noTask = (id: string) => `no task ${id}; foreman task list shows yours`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** The question: the request with this id, or the one pending question of the task with this id. */
async function questionFor(a: Api, id: string): Promise<{ request?: TtyInputRequest; taskPending?: TtyInputRequest[] }> {
  try {
    const r = await a.sessions.listTtyInputRequests({ taskId: id, status: TtyInputStatus.PENDING, pageSize: 100 });
    return { taskPending: r.requests };
  } catch (error) {
    // Not a task of the caller's: then it names the request itself.
    if (error instanceof ConnectError && (error.code === Code.NotFound || error.code === Code.InvalidArgument)) return {};
    throw failure(a, error);
  }
}

export async function answer(args: Args, out: Out): Promise<void> {
  const [id, given] = args.positionals as [string, string | undefined];
  const a = api(args.values);
  const { taskPending } = await questionFor(a, id);
  let requestId = id;
  let shown: TtyInputRequest | undefined;
  if (taskPending !== undefined) {
    if (taskPending.length === 0) throw new ServerRefused(`task ${id} has no question waiting for an answer`);
    if (taskPending.length > 1) {
      const ids = taskPending.map((q) => `${q.id} (${q.prompt.split("\n")[0]})`).join("; ");
      throw new UsageError(`task ${id} has ${taskPending.length} questions waiting; answer one by its id: ${ids}`);
    }
    shown = taskPending[0]!;
    requestId = shown.id;
  }
  let response = given;
  if (response === undefined) {
    if (process.stdin.isTTY) {
      if (shown !== undefined) for (const line of renderQuestion(shown, p())) process.stderr.write(`${line}\n`);
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      response = await rl.question("answer: ");
      rl.close();
    } else {
      // Piped: the whole of stdin, without the newline that ends it.
      response = (await readStdin()).replace(/\r?\n$/, "");
    }
  }
  const { request } = await call(a, () => a.sessions.submitTtyInput({ requestId, response }), `no question or task ${id}; foreman task show TASK_ID lists a task's questions`);
  if (args.flags.json) return out(jsonLine(json(TtyInputRequestSchema, request!)));
  out(`Answered ${request!.id}: ${request!.response}`);
}

/** Every page of the task's diff, each repository's files and unified diff joined. */
async function wholeDiff(a: Api, id: string, run: string | undefined): Promise<{ repositories: RepositoryDiff[]; truncated: boolean }> {
  let agentTaskId = run ?? "";
  if (run !== undefined && /^\d+$/.test(run)) {
    // A run's number (1: the first run) as task show lists it.
    const { task } = await call(a, () => a.tasks.getTask({ id }), noTask(id));
    const runs = task?.task.case === "unitTask" ? task.task.value.agentTasks : [];
    const picked = runs[Number(run) - 1];
    if (picked === undefined) throw new UsageError(`--run ${run}: task ${id} has ${runs.length} run${runs.length === 1 ? "" : "s"}`);
    agentTaskId = picked.id;
  }
  const repositories = new Map<string, RepositoryDiff>();
  let truncated = false;
  let pageToken = "";
  do {
    const page = await call(a, () => a.tasks.getTaskDiff({ id, agentTaskId, pageSize: 200, pageToken }), noTask(id));
    truncated ||= page.truncated;
    for (const r of page.repositories) {
      const seen = repositories.get(r.repositoryId);
      if (seen === undefined) repositories.set(r.repositoryId, r);
      else {
        seen.files.push(...r.files);
        seen.unifiedDiff += r.unifiedDiff;
      }
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return { repositories: [...repositories.values()], truncated };
}

const fileName = (f: FileDiff) => (f.status === FileStatus.RENAMED && f.oldPath ? `${f.oldPath} → ${f.path}` : f.path);

function statLines(repositories: RepositoryDiff[], paint_: Paint): string[] {
  const lines: string[] = [];
  let files = 0;
  let added = 0;
  let deleted = 0;
  for (const r of repositories) {
    if (repositories.length > 1) lines.push(paint_.bold(`${r.name} (${r.branchName})`));
    const rows = r.files.map((f) => [
      enumName(FileStatus, f.status, ""),
      fileName(f),
      f.binary ? "binary" : `${paint_.green(`+${f.additions}`)} ${paint_.red(`-${f.deletions}`)}`,
    ]);
    if (rows.length > 0) lines.push(...table(["STATUS", "FILE", "LINES"], rows, paint_));
    files += r.files.length;
    added += r.files.reduce((n, f) => n + f.additions, 0);
    deleted += r.files.reduce((n, f) => n + f.deletions, 0);
  }
  lines.push(`${files} file${files === 1 ? "" : "s"} changed, ${added} insertion${added === 1 ? "" : "s"}(+), ${deleted} deletion${deleted === 1 ? "" : "s"}(-)`);
  return lines;
}

function colourDiff(text: string, paint_: Paint): string {
  return text
    .split("\n")
    .map((l) =>
      l.startsWith("+++") || l.startsWith("---") || l.startsWith("diff ")
        ? paint_.bold(l)
        : l.startsWith("+")
          ? paint_.green(l)
          : l.startsWith("-")
            ? paint_.red(l)
            : l.startsWith("@@")
              ? paint_.cyan(l)
              : l,
    )
    .join("\n");
}

export async function diff(id: string, args: Args, out: Out): Promise<void> {
  const a = api(args.values);
  const { repositories, truncated } = await wholeDiff(a, id, args.values.run);
  if (args.flags.json) {
    const shown = repositories.map((r) => ({
      repositoryId: r.repositoryId,
      name: r.name,
      branchName: r.branchName,
      baseBranch: r.baseBranch,
      baseCommit: r.baseCommit,
      headCommit: r.headCommit,
      files: r.files.map((f) => json(FileDiffSchema, f)),
      ...(args.flags.stat ? {} : { unifiedDiff: r.unifiedDiff }),
    }));
    return out(jsonLine({ repositories: shown, truncated }));
  }
  const paint_ = p();
  if (args.flags.stat) {
    for (const line of statLines(repositories, paint_)) out(line);
    return;
  }
  const empty = repositories.every((r) => r.files.length === 0);
  if (empty) {
    process.stderr.write(`task ${id} has no changes\n`);
    return;
  }
  for (const r of repositories) {
    if (r.files.length === 0) continue;
    if (repositories.length > 1) out(paint_.bold(`# ${r.name} (${r.branchName}, ${r.baseCommit.slice(0, 12)}..${r.headCommit.slice(0, 12)})`));
    process.stdout.write(colourDiff(r.unifiedDiff.endsWith("\n") ? r.unifiedDiff : `${r.unifiedDiff}\n`, paint_));
  }
  if (truncated) process.stderr.write("some files' patches were cut at the server's limit; read the task branch for the rest\n");
}

type Move = "approve" | "reject" | "request-changes" | "retry" | "cancel";

/** What the task is now, and what one would do next. */
function moved(task: Task, verb: Move, paint_: Paint): string[] {
  const v = task.task.value!;
  const status = statusColour(v.status, paint_)(statusName(v.status));
  const next: Record<Move, string> = {
    approve: "",
    reject: "",
    "request-changes": `Follow the next run: foreman logs -f ${v.id}`,
    retry: `Follow it: foreman logs -f ${v.id}`,
    cancel: "",
  };
  return [`Task ${v.id} is ${status}.`, ...(next[verb] ? [next[verb]] : [])];
}

export async function move(verb: Move, id: string, args: Args, out: Out): Promise<void> {
  const a = api(args.values);
  const message = args.values.message ?? args.values.feedback;
  let task: Task | undefined;
  const run = <T extends { task?: Task }>(c: () => Promise<T>) => call(a, c, noTask(id)).then((r) => (task = r.task));
  switch (verb) {
    case "approve":
      await run(() => a.tasks.approveTask({ id }));
      break;
    case "reject":
      await run(() => a.tasks.rejectTask({ id, reason: message ?? "" }));
      break;
    case "request-changes":
      if (message === undefined || message.trim() === "") throw new UsageError("--feedback TEXT is required: what the agent should change");
      await run(() => a.tasks.requestChanges({ id, feedback: message }));
      break;
    case "retry":
      await run(() => a.tasks.retryTask({ id }));
      break;
    case "cancel":
      await run(() => a.tasks.updateTaskStatus({ id, status: TaskStatus.CANCELLED }));
      break;
  }
  if (args.flags.json) return out(jsonLine(json(TaskSchema, task!)));
  for (const line of moved(task!, verb, p())) out(line);
}
