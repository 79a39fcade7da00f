// Row types as kysely sees them. Times are written as ISO-8601 strings and read back as a Date
// (PostgreSQL) or a string (SQLite); JSON is written as text and read back parsed (PostgreSQL)
// or as text (SQLite). src/store/codec.ts converts both ways.
import type { ColumnType, Generated } from "kysely";

export type Time = ColumnType<Date | string, string, string>;
export type NullableTime = ColumnType<Date | string | null, string | null | undefined, string | null>;
export type Json = ColumnType<unknown, string, string>;
/** PostgreSQL returns bigint columns as strings. */
export type BigSerial = ColumnType<string | number, never, never>;

export interface UsersTable {
  id: string;
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
  created_at: ColumnType<Date | string, string | undefined, string>;
  updated_at: ColumnType<Date | string, string | undefined, string>;
}

export interface WorkspacesTable {
  id: string;
  owner_id: string;
  name: string;
  description: string;
  created_at: Time;
  updated_at: Time;
  /** Sealed (core/upstream.ts), bound to the workspace; for its repositories without their own. NULL: none. */
  upstream_credentials: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface RepositoriesTable {
  id: string;
  owner_id: string;
  workspace_id: string;
  name: string;
  remote_url: string;
  default_branch: string;
  vcs_type: ColumnType<string, string | undefined, string>;
  vcs_provider_type: string;
  webhook_secret: string | null;
  local_path: string | null;
  /** The remote's canonical spelling (core/remote-url.ts canonicalRemote), unique per workspace; NULL until start-up fills it for rows from before migration 0008. */
  remote_key: string | null;
  /** A token, or a user name and password, sealed (core/secrets.ts upstreamCredentialsAad); NULL for none. */
  upstream_credentials: string | null;
  /** How an approved task's work reaches the remote: 'branch', 'merge', 'squash' or 'rebase' (migration 0010). */
  delivery_mode: ColumnType<string, string | undefined, string>;
  created_at: Time;
  updated_at: Time;
}

export interface RepositoryGroupsTable {
  id: string;
  owner_id: string;
  workspace_id: string;
  name: string | null;
  created_at: Time;
  updated_at: Time;
}

export interface RepositoryGroupMembersTable {
  group_id: string;
  repository_id: string;
  position: number;
}

export interface CompositeTasksTable {
  id: string;
  owner_id: string;
  workspace_id: string;
  repository_group_id: string;
  title: string;
  prompt: string;
  status: string;
  execution_state: string;
  execution_agent_type: string;
  execution_agent_model: string;
  base_branch: string;
  plan: ColumnType<unknown, string | null | undefined, string | null>;
  plan_approved_at: NullableTime;
  status_reason: string | null;
  search_text: string;
  version: ColumnType<number, number | undefined, number>;
  created_at: Time;
  updated_at: Time;
}

export interface UnitTasksTable {
  id: string;
  owner_id: string;
  workspace_id: string;
  repository_group_id: string;
  composite_task_id: string | null;
  title: string;
  prompt: string;
  status: string;
  execution_state: string;
  agent_type: string;
  agent_model: string;
  base_branch: string;
  branch_name: string;
  base_commit: string | null;
  end_commit: string | null;
  linked_pr_url: string | null;
  status_reason: string | null;
  /** Title and prompt, lower-cased by the server, for ListTasks' query. */
  search_text: string;
  version: ColumnType<number, number | undefined, number>;
  created_at: Time;
  updated_at: Time;
}

export interface CompositeTaskNodesTable {
  id: string;
  composite_task_id: string;
  node_key: string;
  title: string;
  prompt: string;
  unit_task_id: string | null;
  created_at: Time;
}

export interface CompositeTaskNodeDependenciesTable {
  node_id: string;
  depends_on_node_id: string;
}

export interface AgentTasksTable {
  id: string;
  owner_id: string;
  unit_task_id: string | null;
  composite_task_id: string | null;
  kind: string;
  prompt: string;
  agent_type: string;
  agent_model: string;
  created_at: Time;
}

export interface AgentTaskBaseRemotesTable {
  agent_task_id: string;
  repository_id: string;
  base_branch: string;
  branch_name: string;
  base_commit: string | null;
  end_commit: string | null;
}

/** Where a unit task's branch stands in one repository, for every replica (migration 0011). */
export interface TaskBranchesTable {
  unit_task_id: string;
  repository_id: string;
  branch_name: string;
  base_commit: string;
  head_commit: string;
  /** The branch's commits from base_commit to head_commit as a git bundle; null while they are one. */
  bundle: Buffer | null;
  updated_at: Time;
}

export interface UnitTaskAutoFixTasksTable {
  unit_task_id: string;
  agent_task_id: string;
  reason: string;
  created_at: Time;
}

export interface WorkerRegistrationTokensTable {
  id: string;
  owner_id: string | null;
  name: string;
  token_hash: string;
  created_at: Time;
  expires_at: NullableTime;
  revoked_at: NullableTime;
  last_used_at: NullableTime;
}

export interface WorkersTable {
  id: string;
  owner_id: string | null;
  registration_token_id: string | null;
  name: string;
  hostname: string;
  version: string;
  credential_hash: string;
  status: string;
  agent_types: Json;
  labels: Json;
  max_concurrent_sessions: number;
  last_heartbeat_at: Time;
  registered_at: Time;
  unregistered_at: NullableTime;
}

export interface AgentSessionsTable {
  id: string;
  owner_id: string;
  agent_task_id: string;
  attempt: number;
  state: string;
  agent_type: string;
  agent_model: string;
  worker_id: string | null;
  lease_token_hash: string | null;
  lease_expires_at: NullableTime;
  claim_poll_id: string | null;
  stop_requested_at: NullableTime;
  stop_reason: string | null;
  started_at: NullableTime;
  ended_at: NullableTime;
  exit_code: number | null;
  error_message: string | null;
  head_commit: string | null;
  last_log_sequence: ColumnType<number, number | undefined, number>;
  created_at: Time;
  updated_at: Time;
}

export interface LogBatchesTable {
  session_id: string;
  sequence: number;
  lines: Json;
  line_count: number;
  byte_count: number;
  created_at: Time;
}

/** Kept until the worker acknowledges it (migrations/0006_worker_commands.ts). */
export interface WorkerCommandsTable {
  id: string;
  worker_id: string;
  session_id: string;
  kind: string;
  payload: Json;
  created_at: Time;
}

/** Which replica holds a task's secrets in memory, until when; never a value or a name (migrations/0007_secret_holders.ts). */
export interface SecretHoldersTable {
  task_id: string;
  owner_id: string;
  replica_id: string;
  replica_url: string | null;
  generation: string;
  ended_runs: number;
  sent_at: Time;
  expires_at: Time;
}

export interface TtyInputRequestsTable {
  id: string;
  owner_id: string;
  session_id: string;
  task_id: string;
  client_request_id: string;
  prompt: string;
  input_type: string;
  options: Json;
  status: string;
  response: string | null;
  created_at: Time;
  answered_at: NullableTime;
}

export interface TodoItemsTable {
  id: string;
  owner_id: string;
  workspace_id: string;
  repository_id: string;
  type: string;
  source: string;
  status: string;
  data: Json;
  created_at: Time;
  updated_at: Time;
}

export interface WebhookDeliveriesTable {
  delivery_id: string;
  repository_id: string | null;
  event: string;
  received_at: Time;
}

export interface TaskEventsTable {
  id: Generated<BigSerial>;
  owner_id: string;
  workspace_id: string;
  task_id: string;
  type: string;
  created_at: Time;
}

export interface AuthStatesTable {
  state: string;
  code_verifier: string;
  nonce: string;
  redirect_uri: string;
  created_at: Time;
  expires_at: Time;
  used_at: NullableTime;
}

export interface RefreshTokensTable {
  id: string;
  user_id: string;
  family_id: string;
  token_hash: string;
  created_at: Time;
  expires_at: Time;
  used_at: NullableTime;
  revoked_at: NullableTime;
}

export interface Database {
  users: UsersTable;
  workspaces: WorkspacesTable;
  repositories: RepositoriesTable;
  repository_groups: RepositoryGroupsTable;
  repository_group_members: RepositoryGroupMembersTable;
  composite_tasks: CompositeTasksTable;
  unit_tasks: UnitTasksTable;
  composite_task_nodes: CompositeTaskNodesTable;
  composite_task_node_dependencies: CompositeTaskNodeDependenciesTable;
  agent_tasks: AgentTasksTable;
  agent_task_base_remotes: AgentTaskBaseRemotesTable;
  task_branches: TaskBranchesTable;
  unit_task_auto_fix_tasks: UnitTaskAutoFixTasksTable;
  worker_registration_tokens: WorkerRegistrationTokensTable;
  workers: WorkersTable;
  agent_sessions: AgentSessionsTable;
  log_batches: LogBatchesTable;
  worker_commands: WorkerCommandsTable;
  tty_input_requests: TtyInputRequestsTable;
  todo_items: TodoItemsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  task_events: TaskEventsTable;
  auth_states: AuthStatesTable;
  refresh_tokens: RefreshTokensTable;
  secret_holders: SecretHoldersTable;
}
