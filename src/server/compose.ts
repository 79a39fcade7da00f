// Composes what the server serves from its configuration, database, logger and clock: core
// (the domain's context, with the notifier and the shared feeds) and the Connect services
// behind their interceptors. It opens no port and no connection; server.ts does.
import type http from "node:http";
import type http2 from "node:http2";
import { createContextValues } from "@connectrpc/connect";
import { Shutdown, shutdownKey } from "../api/context-keys.js";
import { HealthStatus } from "../api/health-service.js";
import { registerRoutes } from "../api/routes.js";
import { AccessTokens } from "../auth/access-token.js";
import { OidcProvider } from "../auth/oidc.js";
import type { SecretBox } from "../auth/secret-box.js";
import type { Config } from "../config.js";
import type { Core } from "../core/context.js";
import { RepositoryClones } from "../core/clones.js";
import { Dispatcher } from "../core/dispatch.js";
import { HeartbeatWriter } from "../core/heartbeat-writer.js";
import { LiveLogins } from "../core/live-logins.js";
import { Notifier } from "../core/notifier.js";
import { SecretVault } from "../core/secret-vault.js";
import { LogFeeds } from "../core/log-stream.js";
import { TaskFeeds } from "../core/task-feed.js";
import { WorkerCredentials } from "../core/worker-credentials.js";
import type { Db } from "../db/database.js";
import type { Logger } from "../logger.js";
import { CLAIMS_CHANNEL } from "../store/agent-sessions.js";
import { TASK_CHANGES_CHANNEL } from "../store/task-events.js";
import { LOGS_CHANNEL } from "../store/log-batches.js";
import { COMMANDS_CHANNEL } from "../store/worker-commands.js";
import { WORKER_CREDENTIALS_CHANNEL } from "../store/workers.js";
import { authInterceptor } from "./auth-interceptor.js";
import { connectAdapter } from "./connect-adapter.js";
import { installConnectErrorGuard } from "./connect-errors.js";
import { loggingInterceptor } from "./interceptors.js";
import { Metrics } from "./metrics.js";
import { requestBoundsInterceptor } from "./request-bounds.js";

export interface Services {
  core: Core;
  /** Every channel of wake-ups; on PostgreSQL the server listens on them all across replicas. */
  notifier: Notifier;
  health: HealthStatus;
  metrics: Metrics;
  /** Begun at shutdown, which ends every open stream and long poll. */
  shutdown: Shutdown;
  /** Answers a Connect, gRPC or gRPC-Web call, or returns false for a path that is none. */
  connect: (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => boolean;
}

export function composeServices(config: Config, db: Db, logger: Logger, clock: () => Date, secrets: SecretBox): Services {
  // A NOTIFY about queued work wakes one waiting poll per replica, not all of them.
  const notifier = new Notifier([TASK_CHANGES_CHANNEL, CLAIMS_CHANNEL, COMMANDS_CHANNEL, LOGS_CHANNEL, WORKER_CREDENTIALS_CHANNEL], { wakeOne: [CLAIMS_CHANNEL] });
  const core = composeCore(config, db, logger, clock, notifier, secrets);
  const health = new HealthStatus();
  const metrics = new Metrics();
  const shutdown = new Shutdown();
  installConnectErrorGuard();
  const connect = connectAdapter({
    routes: (router) => registerRoutes(router, core, health),
    // Credentials are checked before the bounds, and both before a handler reads the request.
    interceptors: [loggingInterceptor(logger, metrics), authInterceptor(core), requestBoundsInterceptor()],
    readMaxBytes: config.maxMessageBytes,
    writeMaxBytes: config.maxMessageBytes,
    contextValues: () => createContextValues().set(shutdownKey, shutdown),
    logger,
    // Counts what connect-es refuses before the logging interceptor sees it.
    metrics,
  });
  return { core, notifier, health, metrics, shutdown, connect };
}

function composeCore(config: Config, db: Db, logger: Logger, clock: () => Date, notifier: Notifier, secrets: SecretBox): Core {
  const auth = config.auth;
  const taskChanges = notifier.channel(TASK_CHANGES_CHANNEL);
  const logs = notifier.channel(LOGS_CHANNEL);
  // A credential another replica revoked is forgotten here when its NOTIFY arrives; all are
  // when notifications may have been lost.
  const workerCredentials = new WorkerCredentials();
  notifier.observe(WORKER_CREDENTIALS_CHANNEL, (workerId) => (workerId === undefined ? workerCredentials.forgetAll() : workerCredentials.forgetWorker(workerId)));
  return {
    db: db.kysely,
    adapter: db.adapter,
    now: clock,
    logger,
    auth: {
      config: auth,
      login:
        auth.oidc === undefined
          ? undefined
          : {
              oidc: new OidcProvider(auth.oidc),
              accessTokens: new AccessTokens(auth.jwtSecret!, auth.accessTokenTtlSeconds),
              liveLogins: new LiveLogins(),
            },
    },
    taskChanges,
    // NOTIFY wakes feeds on other replicas at once; their poll bounds how late a change shows
    // up when a notification is lost.
    taskFeeds: new TaskFeeds(db.kysely, taskChanges, config.streamPollMs, logger),
    // Likewise for long polls waiting for work: one read of the queue per backstop, for all.
    dispatch: new Dispatcher(
      db.kysely,
      notifier.channel(CLAIMS_CHANNEL),
      { maxPollSeconds: config.maxPollSeconds, backstopMs: config.streamPollMs, heartbeatSeconds: config.heartbeatSeconds, maxAttempts: config.maxAttempts },
      logger,
    ),
    heartbeats: new HeartbeatWriter(db.kysely),
    workerCredentials,
    commands: notifier.channel(COMMANDS_CHANNEL),
    logs,
    logLimits: { maxBytesPerSession: config.maxLogBytesPerSession },
    // One reader per followed session, woken like the task feeds.
    logFeeds: new LogFeeds(db.kysely, logs, config.streamPollMs, logger),
    streams: { keepAliveMs: config.streamKeepAliveMs, pollMs: config.streamPollMs },
    remotes: { allowPrivate: config.allowPrivateRemotes, contact: config.contactRemotes, timeoutMs: config.remoteTimeoutMs },
    secrets,
    taskSecrets: new SecretVault(),
    clones: new RepositoryClones(config.dataDir),
  };
}
