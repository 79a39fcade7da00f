// Composes the server: database (migrated), services, interceptors, the one-port listener,
// /healthz, POST /webhooks/github, CORS, and a graceful shutdown that stops accepting, ends
// streams, finishes in-flight calls and closes the database.
import path from "node:path";
import type http from "node:http";
import type http2 from "node:http2";
import { sql } from "kysely";
import { createContextValues } from "@connectrpc/connect";
import { HealthStatus, ServingStatus } from "../api/health-service.js";
import { shutdownSignalKey } from "../api/context-keys.js";
import { registerRoutes } from "../api/routes.js";
import { AccessTokens } from "../auth/access-token.js";
import { authInterceptor } from "./auth-interceptor.js";
import { OidcProvider } from "../auth/oidc.js";
import type { Config } from "../config.js";
import type { Core } from "../core/context.js";
import { LiveLogins } from "../core/live-logins.js";
import { Notifier } from "../core/notifier.js";
import { TaskFeeds } from "../core/task-feed.js";
import { openDatabase, type Db } from "../db/database.js";
import { migrateToLatest } from "../db/migrator.js";
import { PgListener } from "../db/notifications.js";
import { TASK_CHANGES_CHANNEL } from "../store/task-events.js";
import type { Logger } from "../logger.js";
import { ensureLocalUser } from "../store/users.js";
import { connectAdapter } from "./connect-adapter.js";
import { installConnectErrorGuard } from "./connect-errors.js";
import { applyCors } from "./cors.js";
import { loggingInterceptor } from "./interceptors.js";
import { Metrics } from "./metrics.js";
import { requestBoundsInterceptor } from "./request-bounds.js";
import { GITHUB_WEBHOOK_PATH, handleGithubWebhook } from "./github-webhook.js";
import { createDualServer } from "./listener.js";

export interface RunningServer {
  /** http://host:port, with the port actually bound (config.port may be 0). */
  url: string;
  port: number;
  db: Db;
  /** Graceful shutdown; safe to call more than once. */
  close(): Promise<void>;
}

export function sqlitePath(config: Pick<Config, "dataDir">): string {
  return path.join(config.dataDir, "foreman.db");
}

/** clock: the one clock core reads (tests move it); the wall clock by default. */
export async function startServer(config: Config, logger: Logger, clock: () => Date = () => new Date()): Promise<RunningServer> {
  const db = openDatabase({
    databaseUrl: config.databaseUrl,
    sqlitePath: sqlitePath(config),
    poolSize: config.dbPoolSize,
    onIdleConnectionError: (error) => logger.warn({ err: error }, "database connection lost while idle; it will be replaced"),
  });
  try {
    const ran = await migrateToLatest(db);
    if (ran.length > 0) logger.info({ migrations: ran }, "database migrated");
    if (config.singleUserMode) await ensureLocalUser(db.kysely, clock());
  } catch (error) {
    await db.close();
    throw error;
  }

  const auth = config.auth;
  // Every channel there is: the LISTEN connection listens on them all.
  const notifier = new Notifier([TASK_CHANGES_CHANNEL]);
  const taskChanges = notifier.channel(TASK_CHANGES_CHANNEL);
  const core: Core = {
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
    streams: { keepAliveMs: config.streamKeepAliveMs },
    remotes: { allowPrivate: config.allowPrivateRemotes },
  };
  let notifications: PgListener | undefined;
  if (config.databaseUrl !== undefined) {
    notifications = new PgListener(config.databaseUrl, notifier, logger);
    try {
      await notifications.start();
    } catch (error) {
      await db.close();
      throw error;
    }
  }
  const health = new HealthStatus();
  const metrics = new Metrics();
  const shutdown = new AbortController();
  installConnectErrorGuard();
  const connect = connectAdapter({
    routes: (router) => registerRoutes(router, core, health),
    // Credentials are checked before the bounds, and both before a handler reads the request.
    interceptors: [loggingInterceptor(logger, metrics), authInterceptor(core), requestBoundsInterceptor()],
    readMaxBytes: config.maxMessageBytes,
    writeMaxBytes: config.maxMessageBytes,
    contextValues: () => createContextValues().set(shutdownSignalKey, shutdown.signal),
    logger,
  });

  const handler = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ): void => {
    if (applyCors(config.corsOrigins, req, res)) return;
    if (req.url === "/healthz" && (req.method === "GET" || req.method === "HEAD")) {
      void healthz(res);
      return;
    }
    if (config.metrics && req.url === "/metrics" && (req.method === "GET" || req.method === "HEAD")) {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" });
      res.end(
        metrics.render([
          { name: "foreman_task_watchers", help: "WatchTasks streams waiting for changes on this server.", value: core.taskFeeds.streams },
        ]),
      );
      return;
    }
    if (req.url !== undefined && req.url.split("?")[0] === GITHUB_WEBHOOK_PATH) {
      void handleGithubWebhook(core, config.maxMessageBytes, req, res);
      return;
    }
    if (connect(req, res)) return;
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
    res.end("not found\n");
  };

  async function healthz(res: http.ServerResponse | http2.Http2ServerResponse): Promise<void> {
    let status = 200;
    let body: Record<string, string> = { status: "ok" };
    if (listener.closing) {
      status = 503;
      body = { status: "shutting down" };
    } else {
      try {
        await sql`select 1`.execute(db.kysely);
      } catch (error) {
        logger.error({ err: error }, "health check: database unreachable");
        status = 503;
        body = { status: "database unreachable" };
      }
    }
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
    res.end(JSON.stringify(body));
  }

  const listener = createDualServer(handler, {
    requestBodyTimeoutMs: config.requestBodyTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    maxConnectionsPerAddress: config.maxConnectionsPerAddress,
    // The one method whose request body stays open on purpose (buf curl keeps it open while it
    // works); add any new client-streaming or bidi method here, or the body deadline cuts it.
    openRequestPaths: ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"],
    logger,
  });
  let port: number;
  try {
    port = await listener.listen(config.port, config.host);
  } catch (error) {
    await notifications?.close();
    await db.close();
    throw error;
  }
  health.set("", ServingStatus.SERVING);
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const url = `http://${host === "0.0.0.0" || host === "[::]" ? "127.0.0.1" : host}:${port}`;
  logger.info({ url, database: db.dialect, single_user_mode: config.singleUserMode, data_dir: config.dataDir }, "foreman serving");

  let closed: Promise<void> | undefined;
  return {
    url,
    port,
    db,
    close() {
      closed ??= (async () => {
        logger.info("shutting down: no new connections, ending streams, finishing calls");
        health.shutdown();
        shutdown.abort();
        await listener.close(config.shutdownTimeoutMs);
        await notifications?.close();
        await db.close();
        logger.info("shut down");
      })();
      return closed;
    },
  };
}
