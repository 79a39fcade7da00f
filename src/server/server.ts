// Starts and stops the server: opens and migrates the database, builds the services and the
// one-port listener over their routes (build, apart from listen, as connectrpc's examples do),
// listens, and shuts down gracefully: stops accepting, ends streams, finishes in-flight calls,
// then closes the LISTEN connection and the database.
import path from "node:path";
import { ServingStatus } from "../api/health-service.js";
import type { SecretBox } from "../auth/secret-box.js";
import type { Config } from "../config.js";
import { openDatabase, type Db } from "../db/database.js";
import { migrateToLatest } from "../db/migrator.js";
import { PgListener } from "../db/notifications.js";
import type { Logger } from "../logger.js";
import { ensureLocalUser } from "../store/users.js";
import { fillRemoteKeys } from "../core/repositories.js";
import { resealStoredSecrets } from "../core/secrets.js";
import { resealUpstreamCredentials } from "../core/upstream.js";
import { WorkerHealth } from "../core/worker-health.js";
import { composeServices, type Services } from "./compose.js";
import { httpRoutes } from "./http-routes.js";
import { createDualServer, type DualServer } from "./listener.js";
import { replicaAddress, startReplicaSecrets } from "./replica-secrets.js";
import { openSecretBox } from "./secret-key.js";

export interface RunningServer {
  /** http://host:port, with the port actually bound (config.port may be 0). */
  url: string;
  port: number;
  db: Db;
  /** The replica's worker health monitor (tests run its sweep themselves with tick()). */
  workerHealth: WorkerHealth;
  /** Graceful shutdown; safe to call more than once. */
  close(): Promise<void>;
}

export function sqlitePath(config: Pick<Config, "dataDir">): string {
  return path.join(config.dataDir, "foreman.db");
}

/** clock: the one clock core reads (tests move it); the wall clock by default. */
export async function startServer(config: Config, logger: Logger, clock: () => Date = () => new Date()): Promise<RunningServer> {
  // Before anything opens: a replica other replicas could not reach stops here, saying what to set.
  const replicaUrl = replicaAddress(config);
  const secrets = await openSecretBox(config, logger);
  const db = await openMigratedDatabase(config, logger, clock);
  const { services, listener } = build(config, db, logger, clock, secrets);
  const workerHealth = new WorkerHealth(
    services.core,
    { heartbeatSeconds: config.heartbeatSeconds, maxAttempts: config.maxAttempts, intervalMs: config.healthCheckMs },
    logger,
  );
  let notifications: PgListener | undefined;
  let port: number;
  try {
    // Before serving: what is stored in clear, or under an older key, is sealed with the current one.
    await resealStoredSecrets(services.core, logger);
    await resealUpstreamCredentials(services.core, logger);
    // Repositories from before one repository per remote get their remote keys (migration 0008).
    await fillRemoteKeys(services.core, logger);
    if (config.databaseUrl !== undefined) {
      notifications = new PgListener(config.databaseUrl, services.notifier, logger);
      await notifications.start();
    }
    port = await listener.listen(config.port, config.host);
  } catch (error) {
    await notifications?.close();
    await db.close();
    throw error;
  }
  startReplicaSecrets(config, services.core, logger, replicaUrl(port));
  services.health.set("", ServingStatus.SERVING);
  workerHealth.start();
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const url = `http://${host === "0.0.0.0" || host === "[::]" ? "127.0.0.1" : host}:${port}`;
  logger.info({ url, database: db.dialect, single_user_mode: config.singleUserMode, data_dir: config.dataDir }, "foreman serving");

  let closed: Promise<void> | undefined;
  return {
    url,
    port,
    db,
    workerHealth,
    close() {
      closed ??= (async () => {
        logger.info("shutting down: no new connections, ending streams, finishing calls");
        services.health.shutdown();
        services.shutdown.begin();
        await listener.close(config.shutdownTimeoutMs);
        await workerHealth.stop();
        // Clones and fetches in progress end (a clone cut short leaves nothing in the data folder).
        await services.core.clones.close();
        // Task secrets live in memory only: they end with the process.
        services.core.taskSecrets.close();
        await notifications?.close();
        await db.close();
        logger.info("shut down");
      })();
      return closed;
    },
  };
}

async function openMigratedDatabase(config: Config, logger: Logger, clock: () => Date): Promise<Db> {
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
    return db;
  } catch (error) {
    await db.close();
    throw error;
  }
}

/** The services and the listener that will serve them, not yet listening. */
function build(config: Config, db: Db, logger: Logger, clock: () => Date, secrets: SecretBox): { services: Services; listener: DualServer } {
  const services = composeServices(config, db, logger, clock, secrets);
  const listener: DualServer = createDualServer(
    httpRoutes(config, db, services, logger, () => listener.closing),
    {
      requestBodyTimeoutMs: config.requestBodyTimeoutMs,
      idleTimeoutMs: config.idleTimeoutMs,
      maxConnectionsPerAddress: config.maxConnectionsPerAddress,
      // The methods whose request body stays open on purpose (buf curl and grpcurl keep it open
      // while they work); add any new client-streaming or bidi method here, or the body deadline cuts it.
      openRequestPaths: ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"],
      logger,
    },
  );
  return { services, listener };
}
