// What core operations run against: the database, a clock (tests may move time), the
// server's login settings, and the box that seals stored secrets.
import type { Kysely } from "kysely";
import type { AccessTokens } from "../auth/access-token.js";
import type { OidcProvider } from "../auth/oidc.js";
import type { SecretBox } from "../auth/secret-box.js";
import type { AuthConfig } from "../config.js";
import type { Database } from "../db/schema.js";
import type { DialectAdapter } from "../db/dialect-adapter.js";
import type { Logger } from "../logger.js";
import type { RepositoryClones } from "./clones.js";
import type { Dispatcher } from "./dispatch.js";
import type { HeartbeatWriter } from "./heartbeat-writer.js";
import type { LiveLogins } from "./live-logins.js";
import type { LogFeeds } from "./log-stream.js";
import type { NotifierChannel } from "./notifier.js";
import type { SecretVault } from "./secret-vault.js";
import type { WorkerCredentials } from "./worker-credentials.js";
import type { LogLimits } from "./session-logs.js";
import type { TaskFeeds } from "./task-feed.js";

export interface Core {
  db: Kysely<Database>;
  /** What the database's dialect does differently; store functions that differ take it. */
  adapter: DialectAdapter;
  now(): Date;
  logger: Logger;
  auth: AuthSettings;
  /** Told (key: workspace id) when a workspace's tasks change, here or on another replica. */
  taskChanges: NotifierChannel;
  /** The shared readers WatchTasks streams follow, one per watched workspace. */
  taskFeeds: TaskFeeds;
  /** The long polls' wake-ups (the claims channel, here and across replicas) and settings. */
  dispatch: Dispatcher;
  /** Writes workers' heartbeats together (core/heartbeat-writer.ts). */
  heartbeats: HeartbeatWriter;
  /** Worker credentials recently found valid (core/worker-credentials.ts). */
  workerCredentials: WorkerCredentials;
  /** Told (key: worker id) when a worker has a new command, here or on another replica (core/commands.ts). */
  commands: NotifierChannel;
  /**
   * Told when a session's log grows or the session ends (key: the session id), or when one of
   * its TTY requests is raised or answered (key: log-stream.ts ttyKey), here or on another replica.
   */
  logs: NotifierChannel;
  /** Bounds of a session's log (FOREMAN_MAX_LOG_BYTES_PER_SESSION); absent: the defaults. */
  logLimits?: LogLimits;
  /** The shared readers StreamLog streams follow, one per followed session. */
  logFeeds: LogFeeds;
  streams: StreamTiming;
  remotes: RemoteRules;
  /** Seals and opens the secrets the server stores (core/secrets.ts). */
  secrets: SecretBox;
  /** This replica's task secrets, in memory only (SecretsService; core/secret-vault.ts). */
  taskSecrets: SecretVault;
  /** This replica's clone of each repository, in its data folder (core/clones.ts). */
  clones: RepositoryClones;
}

export interface RemoteRules {
  /** Accept remote URLs that point at loopback, link-local, private or reserved addresses (FOREMAN_ALLOW_PRIVATE_REMOTES). */
  allowPrivate: boolean;
  /** Talk to remotes: check them before storing, clone and fetch them (FOREMAN_CONTACT_REMOTES; off only where remotes are made up). */
  contact: boolean;
  /** The longest one exchange with a remote may take (FOREMAN_REMOTE_TIMEOUT_SECONDS). */
  timeoutMs: number;
}

export interface StreamTiming {
  /** A long-lived stream sends a keep-alive after this long without a message. */
  keepAliveMs: number;
  /** How often a stream that follows the database looks itself, in case a notification was lost (FOREMAN_STREAM_POLL_SECONDS). */
  pollMs: number;
}

export interface AuthSettings {
  config: AuthConfig;
  /** Absent in single-user mode, which has no login. */
  login: { oidc: OidcProvider; accessTokens: AccessTokens; liveLogins: LiveLogins } | undefined;
}
