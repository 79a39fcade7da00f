// The one port's HTTP routes: CORS first, then a table of the paths the server answers itself
// (/healthz, /metrics, POST /webhooks/github), the workspaces under /git/sessions/ (git's smart
// HTTP for workers), then Connect, gRPC and gRPC-Web, then 404.
import type http from "node:http";
import type http2 from "node:http2";
import { sql } from "kysely";
import type { Config } from "../config.js";
import type { Db } from "../db/database.js";
import type { Logger } from "../logger.js";
import type { Services } from "./compose.js";
import { applyCors } from "./cors.js";
import { GITHUB_WEBHOOK_PATH, handleGithubWebhook } from "./github-webhook.js";
import { gitRoute, WORKSPACE_PATH_PREFIX } from "./git-route.js";
import { REPLICA_SECRETS_PATH, replicaSecretsRoute } from "./replica-secrets.js";
import type { RequestHandler } from "./listener.js";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

interface HttpRoute {
  /** The methods it answers; a request with another falls through (to Connect, then 404). Absent: all. */
  methods?: readonly string[];
  /** Whether the path may carry a query string; otherwise only the bare path matches. */
  query?: boolean;
  handle(req: Request, res: Response): void;
}

const READS = ["GET", "HEAD"];

/** `closing`: whether shutdown has begun, when /healthz answers 503 so a balancer drains the server. */
export function httpRoutes(config: Config, db: Db, services: Services, logger: Logger, closing: () => boolean): RequestHandler {
  const routes = new Map<string, HttpRoute>();
  routes.set("/healthz", { methods: READS, handle: (_req, res) => void healthz(res, db, logger, closing) });
  if (config.metrics) routes.set("/metrics", { methods: READS, handle: (_req, res) => serveMetrics(res, services) });
  // Any method: the webhook answers a wrong one with 405 itself.
  routes.set(GITHUB_WEBHOOK_PATH, { query: true, handle: (req, res) => void handleGithubWebhook(services.core, config.maxMessageBytes, req, res) });
  // Replica to replica only (signed with FOREMAN_SECRET_KEY): a task's secrets, sealed.
  routes.set(REPLICA_SECRETS_PATH, { methods: ["POST"], handle: replicaSecretsRoute(config, services.core, logger) });
  const workspaces = gitRoute(services.core);

  return (req, res) => {
    if (applyCors(config.corsOrigins, req, res)) return;
    const url = req.url ?? "";
    const queryAt = url.indexOf("?");
    const route = routes.get(queryAt === -1 ? url : url.slice(0, queryAt));
    if (route !== undefined && (queryAt === -1 || route.query) && (route.methods === undefined || route.methods.includes(req.method ?? ""))) {
      route.handle(req, res);
      return;
    }
    if (url.startsWith(WORKSPACE_PATH_PREFIX)) {
      workspaces(req, res);
      return;
    }
    if (services.connect(req, res)) return;
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
    res.end("not found\n");
  };
}

async function healthz(res: Response, db: Db, logger: Logger, closing: () => boolean): Promise<void> {
  let status = 200;
  let body: Record<string, string> = { status: "ok" };
  if (closing()) {
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

function serveMetrics(res: Response, { metrics, core }: Services): void {
  res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" });
  res.end(
    metrics.render([
      { name: "foreman_task_watchers", help: "WatchTasks streams waiting for changes on this server.", value: core.taskFeeds.streams },
      { name: "foreman_log_readers", help: "StreamLog streams following a session's log on this server.", value: core.logFeeds.streams },
    ]),
  );
}
