// Where each unit task's branch stands, per repository, for every replica (table task_branches,
// migration 0011): its base and head commits, and its own commits as a bundle. Read and moved by
// core/task-branches.ts; a head moves only from the head it was read at (compare and set), so
// two replicas recording one push cannot step back.
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { toDbTime } from "./codec.js";

export interface BranchHead {
  unitTaskId: string;
  repositoryId: string;
  branchName: string;
  baseCommit: string;
  headCommit: string;
}

export async function insertBranchHeads(db: Kysely<Database>, rows: BranchHead[], now: Date): Promise<void> {
  if (rows.length === 0) return;
  await db
    .insertInto("task_branches")
    .values(
      rows.map((r) => ({
        unit_task_id: r.unitTaskId,
        repository_id: r.repositoryId,
        branch_name: r.branchName,
        base_commit: r.baseCommit,
        head_commit: r.headCommit,
        bundle: null,
        updated_at: toDbTime(now),
      })),
    )
    .execute();
}

const HEAD_COLUMNS = ["unit_task_id", "repository_id", "branch_name", "base_commit", "head_commit"] as const;

function toHead(row: { unit_task_id: string; repository_id: string; branch_name: string; base_commit: string; head_commit: string }): BranchHead {
  return { unitTaskId: row.unit_task_id, repositoryId: row.repository_id, branchName: row.branch_name, baseCommit: row.base_commit, headCommit: row.head_commit };
}

/** The branch of a unit task in a repository, or undefined (no such, or made while the server kept no clones). */
export async function branchHeadOf(db: Kysely<Database>, unitTaskId: string, repositoryId: string): Promise<BranchHead | undefined> {
  const row = await db
    .selectFrom("task_branches")
    .select(HEAD_COLUMNS)
    .where("unit_task_id", "=", unitTaskId)
    .where("repository_id", "=", repositoryId)
    .executeTakeFirst();
  return row && toHead(row);
}

/** The branch's bundle, read apart (it may be large), with the head it leads to; undefined when the row is gone. */
export async function branchBundle(db: Kysely<Database>, unitTaskId: string, repositoryId: string): Promise<{ headCommit: string; bundle: Buffer | null } | undefined> {
  const row = await db
    .selectFrom("task_branches")
    .select(["head_commit", "bundle"])
    .where("unit_task_id", "=", unitTaskId)
    .where("repository_id", "=", repositoryId)
    .executeTakeFirst();
  return row && { headCommit: row.head_commit, bundle: row.bundle === null ? null : Buffer.from(row.bundle) };
}

/** Moves the head from `from` to `to` with the bundle that leads there; false when the head is no longer `from`. */
export async function advanceBranchHead(
  db: Kysely<Database>,
  head: { unitTaskId: string; repositoryId: string },
  from: string,
  to: string,
  bundle: Buffer,
  now: Date,
): Promise<boolean> {
  const result = await db
    .updateTable("task_branches")
    .set({ head_commit: to, bundle, updated_at: toDbTime(now) })
    .where("unit_task_id", "=", head.unitTaskId)
    .where("repository_id", "=", head.repositoryId)
    .where("head_commit", "=", from)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** The unit task of an agent task, for a run's branches. */
export async function unitTaskOfRun(db: Kysely<Database>, agentTaskId: string): Promise<string | undefined> {
  const row = await db.selectFrom("agent_tasks").select("unit_task_id").where("id", "=", agentTaskId).executeTakeFirst();
  return row?.unit_task_id ?? undefined;
}
