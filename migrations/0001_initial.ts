// The whole data model, written once for both dialects. Column types differ only where the
// databases do: ids are uuid on PostgreSQL and text on SQLite, times are timestamptz and
// ISO-8601 text, JSON is jsonb and text. The store writes ISO strings and JSON text, which
// both accept, and reads either form back.
import { sql, type Kysely, type Migration } from "kysely";
import type { DialectName } from "./dialect.js";

export function initial(dialect: DialectName): Migration {
  const pg = dialect === "postgres";
  const id = pg ? "uuid" : "text";
  const time = pg ? "timestamptz" : "text";
  const json = pg ? "jsonb" : "text";
  const now = pg ? sql`now()` : sql`(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`;

  return {
    async up(db: Kysely<unknown>) {
      const schema = db.schema;

      await schema
        .createTable("users")
        .addColumn("id", id, (c) => c.primaryKey())
        // Empty for the single-user mode's local user.
        .addColumn("issuer", "text", (c) => c.notNull())
        .addColumn("subject", "text", (c) => c.notNull())
        .addColumn("email", "text")
        .addColumn("name", "text")
        .addColumn("created_at", time, (c) => c.notNull().defaultTo(now))
        .addColumn("updated_at", time, (c) => c.notNull().defaultTo(now))
        .addUniqueConstraint("users_issuer_subject_key", ["issuer", "subject"])
        .execute();

      await schema
        .createTable("workspaces")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("updated_at", time, (c) => c.notNull())
        .addUniqueConstraint("workspaces_owner_name_key", ["owner_id", "name"])
        .execute();

      await schema
        .createTable("repositories")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("workspace_id", id, (c) => c.notNull().references("workspaces.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("remote_url", "text", (c) => c.notNull())
        .addColumn("default_branch", "text", (c) => c.notNull())
        .addColumn("vcs_type", "text", (c) => c.notNull().defaultTo("git"))
        .addColumn("vcs_provider_type", "text", (c) => c.notNull())
        .addColumn("webhook_secret", "text")
        // The server's own clone, once fetched.
        .addColumn("local_path", "text")
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("updated_at", time, (c) => c.notNull())
        .addUniqueConstraint("repositories_workspace_remote_key", ["workspace_id", "remote_url"])
        .execute();

      await schema
        .createTable("repository_groups")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("workspace_id", id, (c) => c.notNull().references("workspaces.id").onDelete("cascade"))
        // NULL for a single-repository group.
        .addColumn("name", "text")
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("updated_at", time, (c) => c.notNull())
        .addUniqueConstraint("repository_groups_workspace_name_key", ["workspace_id", "name"])
        .execute();

      await schema
        .createTable("repository_group_members")
        .addColumn("group_id", id, (c) => c.notNull().references("repository_groups.id").onDelete("cascade"))
        .addColumn("repository_id", id, (c) => c.notNull().references("repositories.id").onDelete("cascade"))
        .addColumn("position", "integer", (c) => c.notNull())
        .addPrimaryKeyConstraint("repository_group_members_pkey", ["group_id", "repository_id"])
        .execute();
      await schema
        .createIndex("repository_group_members_repository_idx")
        .on("repository_group_members")
        .column("repository_id")
        .execute();

      await schema
        .createTable("composite_tasks")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("workspace_id", id, (c) => c.notNull().references("workspaces.id").onDelete("cascade"))
        .addColumn("repository_group_id", id, (c) => c.notNull().references("repository_groups.id"))
        .addColumn("title", "text", (c) => c.notNull())
        .addColumn("prompt", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("execution_state", "text", (c) => c.notNull())
        .addColumn("execution_agent_type", "text", (c) => c.notNull())
        .addColumn("execution_agent_model", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("base_branch", "text", (c) => c.notNull())
        // The planner's DAG as it proposed it, kept for review.
        .addColumn("plan", json)
        .addColumn("version", "integer", (c) => c.notNull().defaultTo(1))
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("updated_at", time, (c) => c.notNull())
        .execute();

      await schema
        .createTable("unit_tasks")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("workspace_id", id, (c) => c.notNull().references("workspaces.id").onDelete("cascade"))
        .addColumn("repository_group_id", id, (c) => c.notNull().references("repository_groups.id"))
        .addColumn("composite_task_id", id, (c) => c.references("composite_tasks.id").onDelete("cascade"))
        .addColumn("title", "text", (c) => c.notNull())
        .addColumn("prompt", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("execution_state", "text", (c) => c.notNull())
        .addColumn("agent_type", "text", (c) => c.notNull())
        .addColumn("agent_model", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("base_branch", "text", (c) => c.notNull())
        .addColumn("branch_name", "text", (c) => c.notNull())
        .addColumn("base_commit", "text")
        .addColumn("end_commit", "text")
        .addColumn("linked_pr_url", "text")
        // Raised on every change, so concurrent updates can be detected.
        .addColumn("version", "integer", (c) => c.notNull().defaultTo(1))
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("updated_at", time, (c) => c.notNull())
        .execute();
      await schema.createIndex("unit_tasks_workspace_idx").on("unit_tasks").columns(["workspace_id", "id"]).execute();
      await schema
        .createIndex("composite_tasks_workspace_idx")
        .on("composite_tasks")
        .columns(["workspace_id", "id"])
        .execute();

      await schema
        .createTable("composite_task_nodes")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("composite_task_id", id, (c) => c.notNull().references("composite_tasks.id").onDelete("cascade"))
        .addColumn("node_key", "text", (c) => c.notNull())
        .addColumn("title", "text", (c) => c.notNull())
        .addColumn("prompt", "text", (c) => c.notNull())
        .addColumn("unit_task_id", id, (c) => c.references("unit_tasks.id").onDelete("set null"))
        .addColumn("created_at", time, (c) => c.notNull())
        .addUniqueConstraint("composite_task_nodes_task_key_key", ["composite_task_id", "node_key"])
        .execute();

      await schema
        .createTable("composite_task_node_dependencies")
        .addColumn("node_id", id, (c) => c.notNull().references("composite_task_nodes.id").onDelete("cascade"))
        .addColumn("depends_on_node_id", id, (c) =>
          c.notNull().references("composite_task_nodes.id").onDelete("cascade"),
        )
        .addPrimaryKeyConstraint("composite_task_node_dependencies_pkey", ["node_id", "depends_on_node_id"])
        .execute();

      // An agent task belongs to a unit task (its chain of runs) or is a composite task's planner.
      await schema
        .createTable("agent_tasks")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("unit_task_id", id, (c) => c.references("unit_tasks.id").onDelete("cascade"))
        .addColumn("composite_task_id", id, (c) => c.references("composite_tasks.id").onDelete("cascade"))
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("prompt", "text", (c) => c.notNull())
        .addColumn("agent_type", "text", (c) => c.notNull())
        .addColumn("agent_model", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("created_at", time, (c) => c.notNull())
        .execute();
      await schema.createIndex("agent_tasks_unit_task_idx").on("agent_tasks").column("unit_task_id").execute();
      await schema.createIndex("agent_tasks_composite_task_idx").on("agent_tasks").column("composite_task_id").execute();

      await schema
        .createTable("agent_task_base_remotes")
        .addColumn("agent_task_id", id, (c) => c.notNull().references("agent_tasks.id").onDelete("cascade"))
        .addColumn("repository_id", id, (c) => c.notNull().references("repositories.id"))
        .addColumn("base_branch", "text", (c) => c.notNull())
        .addColumn("branch_name", "text", (c) => c.notNull())
        .addColumn("base_commit", "text")
        .addColumn("end_commit", "text")
        .addPrimaryKeyConstraint("agent_task_base_remotes_pkey", ["agent_task_id", "repository_id"])
        .execute();

      await schema
        .createTable("unit_task_auto_fix_tasks")
        .addColumn("unit_task_id", id, (c) => c.notNull().references("unit_tasks.id").onDelete("cascade"))
        .addColumn("agent_task_id", id, (c) => c.notNull().references("agent_tasks.id").onDelete("cascade"))
        // What triggered the fix, e.g. a failing check's name.
        .addColumn("reason", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("created_at", time, (c) => c.notNull())
        .addPrimaryKeyConstraint("unit_task_auto_fix_tasks_pkey", ["unit_task_id", "agent_task_id"])
        .execute();

      await schema
        .createTable("worker_registration_tokens")
        .addColumn("id", id, (c) => c.primaryKey())
        // NULL for a token configured on the server.
        .addColumn("owner_id", id, (c) => c.references("users.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("token_hash", "text", (c) => c.notNull().unique())
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("expires_at", time)
        .addColumn("revoked_at", time)
        .addColumn("last_used_at", time)
        .execute();

      await schema
        .createTable("workers")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.references("users.id").onDelete("cascade"))
        .addColumn("registration_token_id", id, (c) => c.references("worker_registration_tokens.id").onDelete("set null"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("hostname", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("version", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("credential_hash", "text", (c) => c.notNull().unique())
        // active, unhealthy, unregistered
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("agent_types", json, (c) => c.notNull())
        .addColumn("labels", json, (c) => c.notNull())
        .addColumn("max_concurrent_sessions", "integer", (c) => c.notNull().defaultTo(1))
        .addColumn("last_heartbeat_at", time, (c) => c.notNull())
        .addColumn("registered_at", time, (c) => c.notNull())
        .addColumn("unregistered_at", time)
        .execute();
      await schema.createIndex("workers_status_heartbeat_idx").on("workers").columns(["status", "last_heartbeat_at"]).execute();

      // One attempt to run an agent task; the claimable unit of work. A lease is
      // (id, attempt, lease token); only the hash of the token is stored.
      await schema
        .createTable("agent_sessions")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("agent_task_id", id, (c) => c.notNull().references("agent_tasks.id").onDelete("cascade"))
        .addColumn("attempt", "integer", (c) => c.notNull().defaultTo(1))
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("agent_type", "text", (c) => c.notNull())
        .addColumn("agent_model", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("worker_id", id, (c) => c.references("workers.id").onDelete("set null"))
        .addColumn("lease_token_hash", "text")
        .addColumn("lease_expires_at", time)
        // The worker's poll id that made the claim, so a retried poll gets the same claim.
        .addColumn("claim_poll_id", "text")
        .addColumn("stop_requested_at", time)
        .addColumn("stop_reason", "text")
        .addColumn("started_at", time)
        .addColumn("ended_at", time)
        .addColumn("exit_code", "integer")
        .addColumn("error_message", "text")
        .addColumn("head_commit", "text")
        .addColumn("last_log_sequence", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("updated_at", time, (c) => c.notNull())
        .execute();
      await schema.createIndex("agent_sessions_queue_idx").on("agent_sessions").columns(["state", "id"]).execute();
      await schema.createIndex("agent_sessions_agent_task_idx").on("agent_sessions").column("agent_task_id").execute();
      await schema.createIndex("agent_sessions_worker_idx").on("agent_sessions").column("worker_id").execute();

      // Log lines arrive in batches with a per-session sequence; the primary key makes a
      // retried batch a no-op.
      await schema
        .createTable("log_batches")
        .addColumn("session_id", id, (c) => c.notNull().references("agent_sessions.id").onDelete("cascade"))
        .addColumn("sequence", "integer", (c) => c.notNull())
        .addColumn("lines", json, (c) => c.notNull())
        .addColumn("line_count", "integer", (c) => c.notNull())
        .addColumn("byte_count", "integer", (c) => c.notNull())
        .addColumn("created_at", time, (c) => c.notNull())
        .addPrimaryKeyConstraint("log_batches_pkey", ["session_id", "sequence"])
        .execute();

      // Commands for a worker (stop a session, a TTY answer), kept until acknowledged.
      await schema
        .createTable("worker_commands")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("session_id", id, (c) => c.notNull().references("agent_sessions.id").onDelete("cascade"))
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("payload", json, (c) => c.notNull())
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("acknowledged_at", time)
        .execute();
      await schema.createIndex("worker_commands_session_idx").on("worker_commands").column("session_id").execute();

      await schema
        .createTable("tty_input_requests")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("session_id", id, (c) => c.notNull().references("agent_sessions.id").onDelete("cascade"))
        // The unit or composite task the session works for.
        .addColumn("task_id", id, (c) => c.notNull())
        .addColumn("client_request_id", "text", (c) => c.notNull())
        .addColumn("prompt", "text", (c) => c.notNull())
        .addColumn("input_type", "text", (c) => c.notNull())
        .addColumn("options", json, (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("response", "text")
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("answered_at", time)
        .addUniqueConstraint("tty_input_requests_session_client_key", ["session_id", "client_request_id"])
        .execute();
      await schema.createIndex("tty_input_requests_task_idx").on("tty_input_requests").column("task_id").execute();

      await schema
        .createTable("todo_items")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("owner_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("workspace_id", id, (c) => c.notNull().references("workspaces.id").onDelete("cascade"))
        .addColumn("repository_id", id, (c) => c.notNull().references("repositories.id").onDelete("cascade"))
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("source", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("data", json, (c) => c.notNull())
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("updated_at", time, (c) => c.notNull())
        .execute();
      await schema.createIndex("todo_items_workspace_idx").on("todo_items").columns(["workspace_id", "id"]).execute();

      // Webhook delivery ids already handled, so a replayed delivery creates nothing twice.
      await schema
        .createTable("webhook_deliveries")
        .addColumn("delivery_id", "text", (c) => c.primaryKey())
        .addColumn("repository_id", id, (c) => c.references("repositories.id").onDelete("cascade"))
        .addColumn("event", "text", (c) => c.notNull())
        .addColumn("received_at", time, (c) => c.notNull())
        .execute();

      // Changes for WatchTasks, read in id order after a cursor.
      await schema
        .createTable("task_events")
        .addColumn("id", pg ? "bigserial" : "integer", (c) => (pg ? c.primaryKey() : c.primaryKey().autoIncrement()))
        .addColumn("owner_id", id, (c) => c.notNull())
        .addColumn("workspace_id", id, (c) => c.notNull())
        .addColumn("task_id", id, (c) => c.notNull())
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("created_at", time, (c) => c.notNull())
        .execute();
      await schema.createIndex("task_events_workspace_idx").on("task_events").columns(["workspace_id", "id"]).execute();

      // OIDC logins in flight: PKCE verifier and nonce, one use each, with an expiry.
      await schema
        .createTable("auth_states")
        .addColumn("state", "text", (c) => c.primaryKey())
        .addColumn("code_verifier", "text", (c) => c.notNull())
        .addColumn("nonce", "text", (c) => c.notNull())
        .addColumn("redirect_uri", "text", (c) => c.notNull())
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("expires_at", time, (c) => c.notNull())
        .addColumn("used_at", time)
        .execute();

      // Refresh tokens, hashed; a family is one login's chain of rotations.
      await schema
        .createTable("refresh_tokens")
        .addColumn("id", id, (c) => c.primaryKey())
        .addColumn("user_id", id, (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("family_id", id, (c) => c.notNull())
        .addColumn("token_hash", "text", (c) => c.notNull().unique())
        .addColumn("created_at", time, (c) => c.notNull())
        .addColumn("expires_at", time, (c) => c.notNull())
        .addColumn("used_at", time)
        .addColumn("revoked_at", time)
        .execute();
      await schema.createIndex("refresh_tokens_family_idx").on("refresh_tokens").column("family_id").execute();
    },

    async down(db: Kysely<unknown>) {
      const tables = [
        "refresh_tokens",
        "auth_states",
        "task_events",
        "webhook_deliveries",
        "todo_items",
        "tty_input_requests",
        "worker_commands",
        "log_batches",
        "agent_sessions",
        "workers",
        "worker_registration_tokens",
        "unit_task_auto_fix_tasks",
        "agent_task_base_remotes",
        "agent_tasks",
        "composite_task_node_dependencies",
        "composite_task_nodes",
        "unit_tasks",
        "composite_tasks",
        "repository_group_members",
        "repository_groups",
        "repositories",
        "workspaces",
        "users",
      ];
      for (const table of tables) await db.schema.dropTable(table).ifExists().execute();
    },
  };
}
