// Server configuration, read once from environment variables. A bad value stops the start
// with a ConfigError naming the variable; every default is documented in the README.
import path from "node:path";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  /** PostgreSQL URL; undefined means SQLite in dataDir. */
  databaseUrl: string | undefined;
  singleUserMode: boolean;
  /** Lets single-user mode (no login) bind a non-loopback address. */
  singleUserAllowRemote: boolean;
  /** Accept remote URLs whose host is loopback, link-local, private or reserved (the server will fetch them). */
  allowPrivateRemotes: boolean;
  /**
   * FOREMAN_CONTACT_REMOTES: the server talks to repositories' remotes (AddRepository and
   * SetRepositoryCredentials check them, clones are made and fetched). Off (false) only where
   * remotes are made up: tests of other features, benchmarks.
   */
  contactRemotes: boolean;
  /** How many worker daemons `foreman serve` starts as its children (the local pool). */
  localWorkers: number;
  /** FOREMAN_REMOTE_TIMEOUT_SECONDS: the longest a remote check may take, and a clone or fetch may wait for the remote's next bytes. */
  remoteTimeoutMs: number;
  logLevel: LogLevel;
  /** Origins allowed to call from a browser; "*" allows any. Empty allows none. */
  corsOrigins: string[];
  /** Largest request or response message, in bytes. */
  maxMessageBytes: number;
  /** FOREMAN_MAX_LOG_BYTES_PER_SESSION: past this many bytes a session's log is cut off (a SYSTEM line says so). */
  maxLogBytesPerSession: number;
  /** How long a graceful shutdown waits for in-flight calls before closing them. */
  shutdownTimeoutMs: number;
  dbPoolSize: number;
  /** Keep-alive interval of long-lived streams (WatchTasks, later StreamLog). */
  streamKeepAliveMs: number;
  /** How often a stream (or a waiting GetTask) looks for changes itself, in case a wake-up from another replica was lost. */
  streamPollMs: number;
  /** The longest a GetTask long poll waits for work before it answers with none. */
  maxPollSeconds: number;
  /** How often workers heartbeat; a lease lasts three intervals, and three missed ones make a worker unhealthy. */
  heartbeatSeconds: number;
  /** How often the worker health monitor looks for silent workers and expired leases. */
  healthCheckMs: number;
  /** Attempts a run gets: a run lost this many times fails its task. */
  maxAttempts: number;
  /** Serve GET /metrics (Prometheus text format). */
  metrics: boolean;
  /** A request must have arrived whole, headers and body, this long after it began (HTTP/2 request streams are exempt). */
  requestBodyTimeoutMs: number;
  /** A connection with no request in progress is closed after this long; a ping unanswered this long (at most 20 s) ends it too. */
  idleTimeoutMs: number;
  /** Most connections open at once from one client address (IPv6: one /64); 0 means no cap. */
  maxConnectionsPerAddress: number;
  /** FOREMAN_REPLICA_URL: where other replicas reach this one (http(s)://host:port); undefined: derived at start (server/replica-secrets.ts). */
  replicaUrl: string | undefined;
  auth: AuthConfig;
  secrets: SecretKeys;
}

/** The keys that encrypt secrets at rest (src/auth/secret-box.ts). */
export interface SecretKeys {
  /**
   * FOREMAN_SECRET_KEY: seals new secrets and opens its own. Required in multi-user mode;
   * undefined in single-user mode means the key file in the data folder (made when absent).
   */
  key: Buffer | undefined;
  /** FOREMAN_SECRET_KEYS_PREVIOUS: keys that only open what they sealed, while a rotation is under way. */
  previousKeys: Buffer[];
}

/** The OpenID provider that vouches for users in multi-user mode. */
export interface OidcConfig {
  issuer: string;
  clientId: string;
  /** Absent for a public client (PKCE alone authenticates the exchange). */
  clientSecret: string | undefined;
  scopes: string;
  /** Where the provider may send the browser back; GetLoginUrl refuses any other. */
  redirectUris: string[];
}

export interface AuthConfig {
  /** Set in multi-user mode, absent in single-user mode. */
  oidc: OidcConfig | undefined;
  /** Signs access tokens (HS256); shared by every replica. Set in multi-user mode. */
  jwtSecret: string | undefined;
  accessTokenTtlSeconds: number;
  refreshTokenTtlSeconds: number;
  /**
   * How long after a refresh token was rotated presenting it again answers with the same
   * rotated pair instead of counting as reuse (two tabs, a retried refresh); 0 turns it off.
   */
  refreshReuseGraceSeconds: number;
  loginTtlSeconds: number;
  /** A worker registration token configured on the server; its workers serve every user. */
  workerRegistrationToken: string | undefined;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = "ConfigError";
  }
}

const LOG_LEVELS: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

type Env = Record<string, string | undefined>;

function read(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === "" ? undefined : value;
}

function readInt(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function readBool(env: Env, name: string, fallback: boolean): boolean {
  const raw = read(env, name)?.toLowerCase();
  if (raw === undefined) return fallback;
  if (["true", "1", "yes", "on"].includes(raw)) return true;
  if (["false", "0", "no", "off"].includes(raw)) return false;
  throw new ConfigError(name, `must be true or false, got "${raw}"`);
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** What `foreman migrate` needs: where the database is, and how much to log. */
export function loadDatabaseConfig(env: Env = process.env): Pick<Config, "dataDir" | "databaseUrl" | "logLevel"> {
  const databaseUrl = read(env, "DATABASE_URL");
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError("DATABASE_URL", "must be a postgres:// or postgresql:// URL");
  }
  const logLevel = (read(env, "FOREMAN_LOG_LEVEL") ?? "info").toLowerCase() as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError("FOREMAN_LOG_LEVEL", `must be one of ${LOG_LEVELS.join(", ")}, got "${logLevel}"`);
  }
  return { dataDir: path.resolve(read(env, "FOREMAN_DATA_DIR") ?? "data"), databaseUrl, logLevel };
}

export function loadConfig(env: Env = process.env): Config {
  const { dataDir, databaseUrl, logLevel } = loadDatabaseConfig(env);
  const singleUserMode = readBool(env, "FOREMAN_SINGLE_USER_MODE", databaseUrl === undefined);
  const singleUserAllowRemote = readBool(env, "FOREMAN_SINGLE_USER_ALLOW_REMOTE", false);
  const host = read(env, "FOREMAN_HOST") ?? (singleUserMode ? "127.0.0.1" : "0.0.0.0");
  if (singleUserMode && !isLoopback(host) && !singleUserAllowRemote) {
    throw new ConfigError(
      "FOREMAN_HOST",
      `single-user mode checks no login, so it binds only a loopback address; got "${host}". ` +
        "Set FOREMAN_SINGLE_USER_ALLOW_REMOTE=true to expose it anyway.",
    );
  }
  const corsOrigins = (read(env, "FOREMAN_CORS_ORIGINS") ?? "")
    .split(",")
    .map((origin) => origin.trim())
    .filter((origin) => origin !== "");
  for (const origin of corsOrigins) {
    if (origin !== "*" && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError("FOREMAN_CORS_ORIGINS", `"${origin}" is not an origin like https://app.example.com`);
    }
  }
  const heartbeatSeconds = readInt(env, "FOREMAN_HEARTBEAT_SECONDS", 10, 1, 3600);
  return {
    port: readInt(env, "FOREMAN_PORT", 54871, 0, 65535),
    host,
    dataDir,
    databaseUrl,
    singleUserMode,
    singleUserAllowRemote,
    // One local user may fetch from their own machine and network; many users must not be able
    // to make the server reach what only it can reach.
    allowPrivateRemotes: readBool(env, "FOREMAN_ALLOW_PRIVATE_REMOTES", singleUserMode),
    contactRemotes: readBool(env, "FOREMAN_CONTACT_REMOTES", true),
    localWorkers: readInt(env, "FOREMAN_LOCAL_WORKERS", singleUserMode ? 2 : 0, 0, 64),
    remoteTimeoutMs: readInt(env, "FOREMAN_REMOTE_TIMEOUT_SECONDS", 20, 1, 600) * 1000,
    logLevel,
    corsOrigins,
    maxMessageBytes: readInt(env, "FOREMAN_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 256 * 1024 * 1024),
    maxLogBytesPerSession: readInt(env, "FOREMAN_MAX_LOG_BYTES_PER_SESSION", 100 * 1024 * 1024, 1024, Number.MAX_SAFE_INTEGER),
    shutdownTimeoutMs: readInt(env, "FOREMAN_SHUTDOWN_TIMEOUT_SECONDS", 10, 0, 600) * 1000,
    dbPoolSize: readInt(env, "FOREMAN_DB_POOL_SIZE", 10, 1, 1000),
    streamKeepAliveMs: readInt(env, "FOREMAN_STREAM_KEEPALIVE_SECONDS", 15, 1, 300) * 1000,
    streamPollMs: readInt(env, "FOREMAN_STREAM_POLL_SECONDS", 2, 1, 3600) * 1000,
    maxPollSeconds: readInt(env, "FOREMAN_MAX_POLL_SECONDS", 30, 1, 300),
    heartbeatSeconds,
    healthCheckMs: readInt(env, "FOREMAN_HEALTH_CHECK_SECONDS", heartbeatSeconds, 1, 3600) * 1000,
    maxAttempts: readInt(env, "FOREMAN_MAX_ATTEMPTS", 3, 1, 100),
    metrics: readBool(env, "FOREMAN_METRICS", true),
    requestBodyTimeoutMs: readInt(env, "FOREMAN_REQUEST_BODY_TIMEOUT_SECONDS", 60, 1, 3600) * 1000,
    idleTimeoutMs: readInt(env, "FOREMAN_IDLE_TIMEOUT_SECONDS", 65, 1, 3600) * 1000,
    maxConnectionsPerAddress: readInt(env, "FOREMAN_MAX_CONNECTIONS_PER_ADDRESS", 256, 0, 1_000_000),
    replicaUrl: readReplicaUrl(env),
    auth: loadAuthConfig(env, singleUserMode),
    secrets: loadSecretKeys(env, singleUserMode),
  };
}

/** An http(s) origin, with no path, query or fragment: what the replica route is reached at. */
function readReplicaUrl(env: Env): string | undefined {
  const raw = read(env, "FOREMAN_REPLICA_URL");
  if (raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError("FOREMAN_REPLICA_URL", `"${raw}" is not a URL like http://10.0.0.5:54871`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.pathname !== "/" || url.search !== "" || url.hash !== "" || url.username !== "") {
    throw new ConfigError("FOREMAN_REPLICA_URL", `"${raw}" must be an http or https address with no path, like http://10.0.0.5:54871`);
  }
  return url.origin;
}

/**
 * A secret key from its text form: 64 hex digits, or base64 (or base64url) of 32 bytes;
 * undefined when it is neither. Here rather than in auth/secret-box.ts, so that reading the
 * configuration (the CLI does) loads no server code.
 */
export function parseSecretKey(text: string): Buffer | undefined {
  const value = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(value)) return Buffer.from(value, "hex");
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(value)) {
    const key = Buffer.from(value, "base64");
    if (key.length === 32) return key;
  }
  return undefined;
}

const KEY_FORM = "must be 32 random bytes written as 64 hex digits or in base64 (e.g. the output of `openssl rand -base64 32`)";

function loadSecretKeys(env: Env, singleUserMode: boolean): SecretKeys {
  const raw = read(env, "FOREMAN_SECRET_KEY");
  // The value is never echoed: it is a key.
  const key = raw === undefined ? undefined : parseSecretKey(raw);
  if (raw !== undefined && key === undefined) throw new ConfigError("FOREMAN_SECRET_KEY", `${KEY_FORM}; got ${raw.length} characters`);
  if (key === undefined && !singleUserMode) {
    throw new ConfigError(
      "FOREMAN_SECRET_KEY",
      "is required in multi-user mode: it encrypts secrets at rest, and every replica needs the same one " +
        "(`openssl rand -base64 32` makes one); or set FOREMAN_SINGLE_USER_MODE=true, which keeps a key in the data folder",
    );
  }
  const previousKeys = (read(env, "FOREMAN_SECRET_KEYS_PREVIOUS") ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "")
    .map((entry, i) => {
      const previous = parseSecretKey(entry);
      if (previous === undefined) throw new ConfigError("FOREMAN_SECRET_KEYS_PREVIOUS", `key ${i + 1} ${KEY_FORM}; got ${entry.length} characters`);
      return previous;
    });
  return { key, previousKeys };
}

const MIN_SECRET_LENGTH = 32;

function loadAuthConfig(env: Env, singleUserMode: boolean): AuthConfig {
  const workerRegistrationToken = read(env, "FOREMAN_WORKER_REGISTRATION_TOKEN");
  if (workerRegistrationToken !== undefined && workerRegistrationToken.length < MIN_SECRET_LENGTH) {
    throw new ConfigError("FOREMAN_WORKER_REGISTRATION_TOKEN", `must be at least ${MIN_SECRET_LENGTH} characters`);
  }
  // RegisterWorker refuses a longer token unread (core/workers.ts MAX_TOKEN_LENGTH).
  if (workerRegistrationToken !== undefined && workerRegistrationToken.length > 1024) {
    throw new ConfigError("FOREMAN_WORKER_REGISTRATION_TOKEN", "must be at most 1024 characters");
  }
  const ttls = {
    accessTokenTtlSeconds: readInt(env, "FOREMAN_ACCESS_TOKEN_TTL_SECONDS", 900, 30, 86_400),
    refreshTokenTtlSeconds: readInt(env, "FOREMAN_REFRESH_TOKEN_TTL_SECONDS", 30 * 86_400, 60, 365 * 86_400),
    refreshReuseGraceSeconds: readInt(env, "FOREMAN_REFRESH_REUSE_GRACE_SECONDS", 10, 0, 60),
    loginTtlSeconds: readInt(env, "FOREMAN_LOGIN_TTL_SECONDS", 600, 10, 86_400),
  };
  if (singleUserMode) return { oidc: undefined, jwtSecret: undefined, workerRegistrationToken, ...ttls };

  // Multi-user mode cannot work without a provider to log in with and a key to sign tokens.
  const required = (name: string): string => {
    const value = read(env, name);
    if (value === undefined) {
      throw new ConfigError(
        name,
        "is required in multi-user mode (FOREMAN_SINGLE_USER_MODE=false, the default with DATABASE_URL); " +
          "set it, or set FOREMAN_SINGLE_USER_MODE=true for one local user with no login",
      );
    }
    return value;
  };
  const issuer = required("FOREMAN_OIDC_ISSUER");
  checkProviderUrl("FOREMAN_OIDC_ISSUER", issuer);
  const clientId = required("FOREMAN_OIDC_CLIENT_ID");
  const redirectUris = required("FOREMAN_OIDC_REDIRECT_URIS")
    .split(",")
    .map((uri) => uri.trim())
    .filter((uri) => uri !== "");
  if (redirectUris.length === 0) throw new ConfigError("FOREMAN_OIDC_REDIRECT_URIS", "is required in multi-user mode: a comma-separated list of URLs");
  for (const uri of redirectUris) {
    checkProviderUrl("FOREMAN_OIDC_REDIRECT_URIS", uri);
    if (uri.includes("?") || uri.includes("#")) {
      throw new ConfigError("FOREMAN_OIDC_REDIRECT_URIS", `"${uri}" must not have a query or fragment`);
    }
  }
  const jwtSecret = required("FOREMAN_JWT_SECRET");
  if (jwtSecret.length < MIN_SECRET_LENGTH) {
    throw new ConfigError("FOREMAN_JWT_SECRET", `must be at least ${MIN_SECRET_LENGTH} characters (random, shared by every replica)`);
  }
  const scopes = read(env, "FOREMAN_OIDC_SCOPES") ?? "openid email profile";
  if (!scopes.split(/\s+/).includes("openid")) throw new ConfigError("FOREMAN_OIDC_SCOPES", `must include "openid", got "${scopes}"`);
  return {
    oidc: { issuer, clientId, clientSecret: read(env, "FOREMAN_OIDC_CLIENT_SECRET"), scopes, redirectUris },
    jwtSecret,
    workerRegistrationToken,
    ...ttls,
  };
}

/** An https URL, or plain http on a loopback host (a provider on the same machine, or tests). */
function checkProviderUrl(name: string, value: string): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(name, `"${value}" is not a URL`);
  }
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (url.protocol !== "https:" && !(url.protocol === "http:" && isLoopback(host))) {
    throw new ConfigError(name, `"${value}" must be https (plain http only on a loopback host)`);
  }
}
