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
  logLevel: LogLevel;
  /** Origins allowed to call from a browser; "*" allows any. Empty allows none. */
  corsOrigins: string[];
  /** Largest request or response message, in bytes. */
  maxMessageBytes: number;
  /** How long a graceful shutdown waits for in-flight calls before closing them. */
  shutdownTimeoutMs: number;
  dbPoolSize: number;
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

export function loadConfig(env: Env = process.env): Config {
  const databaseUrl = read(env, "DATABASE_URL");
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError("DATABASE_URL", "must be a postgres:// or postgresql:// URL");
  }
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
  const logLevel = (read(env, "FOREMAN_LOG_LEVEL") ?? "info").toLowerCase() as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError("FOREMAN_LOG_LEVEL", `must be one of ${LOG_LEVELS.join(", ")}, got "${logLevel}"`);
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
  return {
    port: readInt(env, "FOREMAN_PORT", 54871, 0, 65535),
    host,
    dataDir: path.resolve(read(env, "FOREMAN_DATA_DIR") ?? "data"),
    databaseUrl,
    singleUserMode,
    singleUserAllowRemote,
    logLevel,
    corsOrigins,
    maxMessageBytes: readInt(env, "FOREMAN_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 256 * 1024 * 1024),
    shutdownTimeoutMs: readInt(env, "FOREMAN_SHUTDOWN_TIMEOUT_SECONDS", 10, 0, 600) * 1000,
    dbPoolSize: readInt(env, "FOREMAN_DB_POOL_SIZE", 10, 1, 1000),
  };
}
