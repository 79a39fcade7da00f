// A unit task's branches as its runs recorded them (agent_task_base_remotes): per run, per
// repository, the branch, the commit the run started from and the one it ended at. Read for
// GetTaskDiff (core/task-diff.ts); written by core/tasks.ts and core/dispatch.ts.
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";

export interface RunBranch {
  repositoryId: string;
  /** The repository's name; empty when the repository was removed since. */
  repositoryName: string;
  baseBranch: string;
  branchName: string;
  /** Where the run started (null: not recorded, the server held no clone). */
  baseCommit: string | null;
  /** Where the run's branch was when it succeeded (null: not, or not yet). */
  endCommit: string | null;
}

export interface RunBranches {
  agentTaskId: string;
  /** In the order the repositories were added (repository id). */
  repositories: RunBranch[];
}

/** Every run of the owner's unit task, oldest first, each with its branches; [] when there is none. */
export async function runBranchesOf(db: Kysely<Database>, ownerId: string, unitTaskId: string): Promise<RunBranches[]> {
  const rows = await db
    .selectFrom("agent_tasks as a")
    .leftJoin("agent_task_base_remotes as b", "b.agent_task_id", "a.id")
    .leftJoin("repositories as r", "r.id", "b.repository_id")
    .select(["a.id as agent_task_id", "b.repository_id", "r.name", "b.base_branch", "b.branch_name", "b.base_commit", "b.end_commit"])
    .where("a.unit_task_id", "=", unitTaskId)
    .where("a.owner_id", "=", ownerId)
    .orderBy("a.id")
    .orderBy("b.repository_id")
    .execute();
  const runs: RunBranches[] = [];
  for (const row of rows) {
    let run = runs[runs.length - 1];
    if (run === undefined || run.agentTaskId !== row.agent_task_id) {
      run = { agentTaskId: row.agent_task_id, repositories: [] };
      runs.push(run);
    }
    if (row.repository_id === null) continue;
    run.repositories.push({
      repositoryId: row.repository_id,
      repositoryName: row.name ?? "",
      baseBranch: row.base_branch ?? "",
      branchName: row.branch_name ?? "",
      baseCommit: row.base_commit,
      endCommit: row.end_commit,
    });
  }
  return runs;
}
