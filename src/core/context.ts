// What core operations run against: the database, a clock (tests may move time), and the
// server's login settings.
import type { Kysely } from "kysely";
import type { AccessTokens } from "../auth/access-token.js";
import type { OidcProvider } from "../auth/oidc.js";
import type { AuthConfig } from "../config.js";
import type { Database } from "../db/schema.js";
import type { DialectName } from "../db/dialect.js";
import type { Logger } from "../logger.js";
import type { LiveLogins } from "./live-logins.js";
import type { Notifier } from "./notifier.js";

export interface Core {
  db: Kysely<Database>;
  dialect: DialectName;
  now(): Date;
  logger: Logger;
  auth: AuthSettings;
  /** Wakes WatchTasks streams of a workspace (key: workspace id) when its tasks change. */
  taskChanges: Notifier;
  streams: StreamTiming;
}

export interface StreamTiming {
  /** A long-lived stream sends a keep-alive after this long without a message. */
  keepAliveMs: number;
  /** How often a stream looks for changes made by other replicas. */
  pollMs: number;
}

export interface AuthSettings {
  config: AuthConfig;
  /** Absent in single-user mode, which has no login. */
  login: { oidc: OidcProvider; accessTokens: AccessTokens; liveLogins: LiveLogins } | undefined;
}
