// Every migration, in order. Names sort in the order they run; never rename or edit one that
// has shipped: add a new one.
import type { Migration } from "kysely";
import type { DialectName } from "./dialect.js";
import { initial } from "./0001_initial.js";
import { taskReviewAndSearch } from "./0002_task_review_and_search.js";
import { lookupIndexes } from "./0003_lookup_indexes.js";
import { markClearSecrets } from "./0004_mark_clear_secrets.js";
import { claimPollIds } from "./0005_claim_poll_ids.js";
import { workerCommands } from "./0006_worker_commands.js";
import { secretHolders } from "./0007_secret_holders.js";
import { repositoryRemotes } from "./0008_repository_remotes.js";
import { taskEventsCommitOrder } from "./0009_task_events_commit_order.js";
import { repositoryDelivery } from "./0010_repository_delivery.js";
import { taskBranches } from "./0011_task_branches.js";
import { workspaceCredentials } from "./0012_workspace_credentials.js";

export function migrations(dialect: DialectName): Record<string, Migration> {
  return {
    "0001_initial": initial(dialect),
    "0002_task_review_and_search": taskReviewAndSearch(dialect),
    "0003_lookup_indexes": lookupIndexes(),
    "0004_mark_clear_secrets": markClearSecrets(),
    "0005_claim_poll_ids": claimPollIds(),
    "0006_worker_commands": workerCommands(dialect),
    "0007_secret_holders": secretHolders(dialect),
    "0008_repository_remotes": repositoryRemotes(),
    "0009_task_events_commit_order": taskEventsCommitOrder(dialect),
    "0010_repository_delivery": repositoryDelivery(),
    "0011_task_branches": taskBranches(dialect),
    "0012_workspace_credentials": workspaceCredentials(),
  };
}
