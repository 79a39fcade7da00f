// loadConfig: the defaults a fresh checkout relies on, and a ConfigError naming the variable for
// every value it refuses.
import { randomBytes } from "node:crypto";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, isLoopback, loadConfig } from "../../src/config.js";

const PG = "postgres://postgres@127.0.0.1:5432/foreman";
/** What multi-user mode cannot start without. */
const LOGIN = {
  FOREMAN_OIDC_ISSUER: "https://login.example.com",
  FOREMAN_OIDC_CLIENT_ID: "foreman",
  FOREMAN_OIDC_REDIRECT_URIS: "https://foreman.example.com/auth/callback",
  FOREMAN_JWT_SECRET: "s".repeat(32),
  FOREMAN_SECRET_KEY: Buffer.alloc(32, 1).toString("base64"),
};

/** The ConfigError loadConfig throws for env; fails the test when it throws nothing else. */
function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe("loadConfig defaults", () => {
  it("runs single-user on SQLite, bound to loopback, with no configuration", () => {
    const config = loadConfig({});
    expect(config).toEqual({
      port: 54871,
      host: "127.0.0.1",
      dataDir: path.resolve("data"),
      databaseUrl: undefined,
      singleUserMode: true,
      singleUserAllowRemote: false,
      allowPrivateRemotes: true,
      contactRemotes: true,
      localWorkers: 2,
      remoteTimeoutMs: 20_000,
      logLevel: "info",
      corsOrigins: [],
      maxMessageBytes: 4 * 1024 * 1024,
      maxLogBytesPerSession: 100 * 1024 * 1024,
      shutdownTimeoutMs: 10_000,
      dbPoolSize: 10,
      streamKeepAliveMs: 15_000,
      streamPollMs: 2_000,
      maxPollSeconds: 30,
      heartbeatSeconds: 10,
      healthCheckMs: 10_000,
      maxAttempts: 3,
      metrics: true,
      requestBodyTimeoutMs: 60_000,
      idleTimeoutMs: 65_000,
      maxConnectionsPerAddress: 256,
      auth: {
        oidc: undefined,
        jwtSecret: undefined,
        workerRegistrationToken: undefined,
        accessTokenTtlSeconds: 900,
        refreshTokenTtlSeconds: 30 * 86_400,
        refreshReuseGraceSeconds: 10,
        loginTtlSeconds: 600,
      },
      // Single-user mode keeps its key in the data folder (made at the first start).
      secrets: { key: undefined, previousKeys: [] },
    });
  });

  it("does not read process.env when given an env", () => {
    const saved = process.env.FOREMAN_PORT;
    process.env.FOREMAN_PORT = "not-a-port";
    try {
      expect(loadConfig({}).port).toBe(54871);
    } finally {
      if (saved === undefined) delete process.env.FOREMAN_PORT;
      else process.env.FOREMAN_PORT = saved;
    }
  });

  it("treats empty and blank values as unset", () => {
    const config = loadConfig({ FOREMAN_PORT: "", FOREMAN_HOST: "  ", DATABASE_URL: "", FOREMAN_LOG_LEVEL: " " });
    expect(config.port).toBe(54871);
    expect(config.host).toBe("127.0.0.1");
    expect(config.databaseUrl).toBeUndefined();
    expect(config.singleUserMode).toBe(true);
    expect(config.logLevel).toBe("info");
  });

  it("turns multi-user and binds every address when DATABASE_URL is set", () => {
    const config = loadConfig({ DATABASE_URL: PG, ...LOGIN });
    expect(config.databaseUrl).toBe(PG);
    expect(config.singleUserMode).toBe(false);
    expect(config.host).toBe("0.0.0.0");
  });

  it("accepts postgresql:// as well as postgres://", () => {
    expect(loadConfig({ DATABASE_URL: "postgresql://u@db/x", ...LOGIN }).databaseUrl).toBe("postgresql://u@db/x");
  });

  it("binds 0.0.0.0 in multi-user mode on SQLite too", () => {
    const config = loadConfig({ FOREMAN_SINGLE_USER_MODE: "false", ...LOGIN });
    expect(config.singleUserMode).toBe(false);
    expect(config.databaseUrl).toBeUndefined();
    expect(config.host).toBe("0.0.0.0");
  });

  it("keeps single-user mode on PostgreSQL when asked, still on loopback", () => {
    const config = loadConfig({ DATABASE_URL: PG, FOREMAN_SINGLE_USER_MODE: "true" });
    expect(config.singleUserMode).toBe(true);
    expect(config.host).toBe("127.0.0.1");
  });

  it("reads every setting", () => {
    const config = loadConfig({
      FOREMAN_PORT: "8080",
      FOREMAN_HOST: "::1",
      FOREMAN_DATA_DIR: "/tmp/foreman-data",
      FOREMAN_LOG_LEVEL: "DEBUG",
      FOREMAN_CORS_ORIGINS: "http://app.example, https://other.example:8443 ,",
      FOREMAN_MAX_MESSAGE_BYTES: "2048",
      FOREMAN_SHUTDOWN_TIMEOUT_SECONDS: "3",
      FOREMAN_DB_POOL_SIZE: "4",
    });
    expect(config.port).toBe(8080);
    expect(config.host).toBe("::1");
    expect(config.dataDir).toBe("/tmp/foreman-data");
    expect(config.logLevel).toBe("debug");
    expect(config.corsOrigins).toEqual(["http://app.example", "https://other.example:8443"]);
    expect(config.maxMessageBytes).toBe(2048);
    expect(config.shutdownTimeoutMs).toBe(3000);
    expect(config.dbPoolSize).toBe(4);
  });

  it("reads the connection bounds, and 0 turns the per-address cap off", () => {
    const config = loadConfig({
      FOREMAN_REQUEST_BODY_TIMEOUT_SECONDS: "5",
      FOREMAN_IDLE_TIMEOUT_SECONDS: "1",
      FOREMAN_MAX_CONNECTIONS_PER_ADDRESS: "10000",
    });
    expect(config.requestBodyTimeoutMs).toBe(5000);
    expect(config.idleTimeoutMs).toBe(1000);
    expect(config.maxConnectionsPerAddress).toBe(10_000);
    expect(loadConfig({ FOREMAN_MAX_CONNECTIONS_PER_ADDRESS: "0" }).maxConnectionsPerAddress).toBe(0);
  });

  it("accepts port 0 (any free port) and the * CORS origin", () => {
    expect(loadConfig({ FOREMAN_PORT: "0" }).port).toBe(0);
    expect(loadConfig({ FOREMAN_CORS_ORIGINS: "*" }).corsOrigins).toEqual(["*"]);
  });

  it("lets single-user mode bind a remote address only with FOREMAN_SINGLE_USER_ALLOW_REMOTE", () => {
    const config = loadConfig({ FOREMAN_HOST: "0.0.0.0", FOREMAN_SINGLE_USER_ALLOW_REMOTE: "yes" });
    expect(config.host).toBe("0.0.0.0");
    expect(config.singleUserMode).toBe(true);
    expect(config.singleUserAllowRemote).toBe(true);
  });

  it("accepts private remotes in single-user mode only, unless FOREMAN_ALLOW_PRIVATE_REMOTES says otherwise", () => {
    expect(loadConfig({}).allowPrivateRemotes).toBe(true);
    expect(loadConfig({ DATABASE_URL: PG, ...LOGIN }).allowPrivateRemotes).toBe(false);
    expect(loadConfig({ DATABASE_URL: PG, ...LOGIN, FOREMAN_ALLOW_PRIVATE_REMOTES: "true" }).allowPrivateRemotes).toBe(true);
    expect(loadConfig({ FOREMAN_ALLOW_PRIVATE_REMOTES: "false" }).allowPrivateRemotes).toBe(false);
  });

  it("starts two local workers in single-user mode and none in multi-user mode, unless FOREMAN_LOCAL_WORKERS says otherwise", () => {
    expect(loadConfig({}).localWorkers).toBe(2);
    expect(loadConfig({ DATABASE_URL: PG, ...LOGIN }).localWorkers).toBe(0);
    expect(loadConfig({ FOREMAN_LOCAL_WORKERS: "0" }).localWorkers).toBe(0);
    expect(loadConfig({ DATABASE_URL: PG, ...LOGIN, FOREMAN_LOCAL_WORKERS: "4" }).localWorkers).toBe(4);
    expect(() => loadConfig({ FOREMAN_LOCAL_WORKERS: "65" })).toThrow(/FOREMAN_LOCAL_WORKERS: must be between 0 and 64/);
    expect(() => loadConfig({ FOREMAN_LOCAL_WORKERS: "two" })).toThrow(/FOREMAN_LOCAL_WORKERS: must be a whole number/);
  });

  it("accepts the spellings of true and false", () => {
    for (const yes of ["true", "TRUE", "1", "yes", "on"]) {
      expect(loadConfig({ FOREMAN_SINGLE_USER_MODE: yes }).singleUserMode).toBe(true);
    }
    for (const no of ["false", "False", "0", "no", "off"]) {
      expect(loadConfig({ FOREMAN_SINGLE_USER_MODE: no, ...LOGIN }).singleUserMode).toBe(false);
    }
  });
});

describe("login settings", () => {
  it("reads the provider, the signing secret and the token lifetimes in multi-user mode", () => {
    const config = loadConfig({
      ...LOGIN,
      DATABASE_URL: PG,
      FOREMAN_OIDC_CLIENT_SECRET: "client-secret",
      FOREMAN_OIDC_SCOPES: "openid email",
      FOREMAN_OIDC_REDIRECT_URIS: "https://foreman.example.com/auth/callback, http://localhost:5173/cb",
      FOREMAN_ACCESS_TOKEN_TTL_SECONDS: "60",
      FOREMAN_REFRESH_TOKEN_TTL_SECONDS: "3600",
      FOREMAN_REFRESH_REUSE_GRACE_SECONDS: "0",
      FOREMAN_LOGIN_TTL_SECONDS: "120",
      FOREMAN_WORKER_REGISTRATION_TOKEN: "w".repeat(40),
    });
    expect(config.auth).toEqual({
      oidc: {
        issuer: "https://login.example.com",
        clientId: "foreman",
        clientSecret: "client-secret",
        scopes: "openid email",
        redirectUris: ["https://foreman.example.com/auth/callback", "http://localhost:5173/cb"],
      },
      jwtSecret: "s".repeat(32),
      workerRegistrationToken: "w".repeat(40),
      accessTokenTtlSeconds: 60,
      refreshTokenTtlSeconds: 3600,
      refreshReuseGraceSeconds: 0,
      loginTtlSeconds: 120,
    });
  });

  it("needs no login settings in single-user mode, and ignores them there", () => {
    const config = loadConfig({ ...LOGIN, FOREMAN_SINGLE_USER_MODE: "true" });
    expect(config.auth.oidc).toBeUndefined();
    expect(config.auth.jwtSecret).toBeUndefined();
  });

  it("lets a plain-http provider through only on a loopback host", () => {
    expect(loadConfig({ ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_OIDC_ISSUER: "http://127.0.0.1:9000" }).auth.oidc?.issuer).toBe(
      "http://127.0.0.1:9000",
    );
    expect(configError({ ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_OIDC_ISSUER: "http://login.example.com" }).variable).toBe(
      "FOREMAN_OIDC_ISSUER",
    );
  });
});

describe("secret keys", () => {
  const key = randomBytes(32);

  it("reads FOREMAN_SECRET_KEY as 64 hex digits, base64 or base64url, in either mode", () => {
    for (const text of [key.toString("hex"), key.toString("hex").toUpperCase(), key.toString("base64"), key.toString("base64url"), ` ${key.toString("base64")} `]) {
      expect(loadConfig({ FOREMAN_SECRET_KEY: text }).secrets.key).toEqual(key);
      expect(loadConfig({ ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_SECRET_KEY: text }).secrets.key).toEqual(key);
    }
  });

  it("reads the previous keys, comma-separated, for reading only", () => {
    const older = [randomBytes(32), randomBytes(32)];
    const config = loadConfig({ ...LOGIN, DATABASE_URL: PG, FOREMAN_SECRET_KEYS_PREVIOUS: ` ${older[0]!.toString("hex")} , ${older[1]!.toString("base64")},` });
    expect(config.secrets).toEqual({ key: Buffer.alloc(32, 1), previousKeys: older });
  });

  it("requires FOREMAN_SECRET_KEY in multi-user mode, naming it and saying how to make one", () => {
    const { FOREMAN_SECRET_KEY: _omitted, ...withoutKey } = LOGIN;
    const error = configError({ ...withoutKey, DATABASE_URL: PG });
    expect(error.variable).toBe("FOREMAN_SECRET_KEY");
    expect(error.message).toMatch(/^FOREMAN_SECRET_KEY: is required in multi-user mode/);
    expect(error.message).toContain("openssl rand -base64 32");
  });

  it.each([
    ["too short", key.subarray(0, 16).toString("base64")],
    ["too long", Buffer.concat([key, key]).toString("hex")],
    ["not hex or base64", "k".repeat(20) + "!".repeat(24)],
    ["a passphrase", "correct horse battery staple and then some"],
  ])("refuses a key that is %s, without echoing it", (_label, text) => {
    for (const env of [{ FOREMAN_SECRET_KEY: text }, { ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_SECRET_KEY: text }]) {
      const error = configError(env);
      expect(error.variable).toBe("FOREMAN_SECRET_KEY");
      expect(error.message).toContain("32 random bytes");
      expect(error.message).not.toContain(text);
    }
    const previous = configError({ FOREMAN_SECRET_KEYS_PREVIOUS: `${key.toString("hex")},${text}` });
    expect(previous.variable).toBe("FOREMAN_SECRET_KEYS_PREVIOUS");
    expect(previous.message).toContain("key 2 ");
    expect(previous.message).not.toContain(text);
    expect(previous.message).not.toContain(key.toString("hex"));
  });
});

describe("isLoopback", () => {
  it("knows loopback addresses from the rest", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "::1"]) expect(isLoopback(host)).toBe(true);
    for (const host of ["0.0.0.0", "::", "10.0.0.1", "192.168.1.10", "example.com", "128.0.0.1"]) {
      expect(isLoopback(host)).toBe(false);
    }
  });
});

describe("loadConfig errors name their variable", () => {
  const cases: [string, Record<string, string>, RegExp?][] = [
    ["FOREMAN_PORT", { FOREMAN_PORT: "abc" }, /whole number.*"abc"/],
    ["FOREMAN_PORT", { FOREMAN_PORT: "-1" }],
    ["FOREMAN_PORT", { FOREMAN_PORT: "8080.5" }],
    ["FOREMAN_PORT", { FOREMAN_PORT: "65536" }, /between 0 and 65535/],
    ["FOREMAN_HOST", { FOREMAN_HOST: "0.0.0.0" }, /single-user.*loopback.*FOREMAN_SINGLE_USER_ALLOW_REMOTE/],
    ["FOREMAN_HOST", { FOREMAN_HOST: "::" }],
    ["FOREMAN_HOST", { FOREMAN_HOST: "192.168.1.10", FOREMAN_SINGLE_USER_ALLOW_REMOTE: "false" }],
    ["FOREMAN_LOG_LEVEL", { FOREMAN_LOG_LEVEL: "loud" }, /must be one of .*info/],
    ["DATABASE_URL", { DATABASE_URL: "mysql://x" }, /postgres/],
    ["DATABASE_URL", { DATABASE_URL: "127.0.0.1:5432/foreman" }],
    ["FOREMAN_SINGLE_USER_MODE", { FOREMAN_SINGLE_USER_MODE: "maybe" }, /true or false/],
    ["FOREMAN_SINGLE_USER_ALLOW_REMOTE", { FOREMAN_SINGLE_USER_ALLOW_REMOTE: "2" }],
    ["FOREMAN_ALLOW_PRIVATE_REMOTES", { FOREMAN_ALLOW_PRIVATE_REMOTES: "sometimes" }, /true or false/],
    ["FOREMAN_CORS_ORIGINS", { FOREMAN_CORS_ORIGINS: "app.example" }, /app\.example/],
    ["FOREMAN_CORS_ORIGINS", { FOREMAN_CORS_ORIGINS: "http://app.example/path" }],
    ["FOREMAN_MAX_MESSAGE_BYTES", { FOREMAN_MAX_MESSAGE_BYTES: "10" }, /between 1024/],
    ["FOREMAN_MAX_MESSAGE_BYTES", { FOREMAN_MAX_MESSAGE_BYTES: "4MB" }],
    ["FOREMAN_SHUTDOWN_TIMEOUT_SECONDS", { FOREMAN_SHUTDOWN_TIMEOUT_SECONDS: "601" }],
    ["FOREMAN_SHUTDOWN_TIMEOUT_SECONDS", { FOREMAN_SHUTDOWN_TIMEOUT_SECONDS: "ten" }],
    ["FOREMAN_DB_POOL_SIZE", { FOREMAN_DB_POOL_SIZE: "0" }, /between 1/],
    ["FOREMAN_DB_POOL_SIZE", { FOREMAN_DB_POOL_SIZE: "x" }],
    ["FOREMAN_REQUEST_BODY_TIMEOUT_SECONDS", { FOREMAN_REQUEST_BODY_TIMEOUT_SECONDS: "0" }, /between 1 and 3600/],
    ["FOREMAN_REQUEST_BODY_TIMEOUT_SECONDS", { FOREMAN_REQUEST_BODY_TIMEOUT_SECONDS: "1.5" }],
    ["FOREMAN_IDLE_TIMEOUT_SECONDS", { FOREMAN_IDLE_TIMEOUT_SECONDS: "0" }, /between 1 and 3600/],
    ["FOREMAN_IDLE_TIMEOUT_SECONDS", { FOREMAN_IDLE_TIMEOUT_SECONDS: "3601" }],
    ["FOREMAN_MAX_CONNECTIONS_PER_ADDRESS", { FOREMAN_MAX_CONNECTIONS_PER_ADDRESS: "-1" }, /whole number/],
    ["FOREMAN_MAX_CONNECTIONS_PER_ADDRESS", { FOREMAN_MAX_CONNECTIONS_PER_ADDRESS: "1000001" }, /between 0 and 1000000/],
    ["FOREMAN_MAX_POLL_SECONDS", { FOREMAN_MAX_POLL_SECONDS: "0" }, /between 1 and 300/],
    ["FOREMAN_MAX_POLL_SECONDS", { FOREMAN_MAX_POLL_SECONDS: "301" }],
    ["FOREMAN_HEARTBEAT_SECONDS", { FOREMAN_HEARTBEAT_SECONDS: "0" }, /between 1 and 3600/],
    ["FOREMAN_HEALTH_CHECK_SECONDS", { FOREMAN_HEALTH_CHECK_SECONDS: "0" }],
    ["FOREMAN_MAX_ATTEMPTS", { FOREMAN_MAX_ATTEMPTS: "0" }, /between 1 and 100/],
    ["FOREMAN_OIDC_ISSUER", { DATABASE_URL: PG }, /required in multi-user mode.*FOREMAN_SINGLE_USER_MODE=true/],
    ["FOREMAN_OIDC_ISSUER", { ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_OIDC_ISSUER: "not a url" }, /not a URL/],
    ["FOREMAN_OIDC_CLIENT_ID", { ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_OIDC_CLIENT_ID: "" }, /required/],
    ["FOREMAN_OIDC_REDIRECT_URIS", { ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_OIDC_REDIRECT_URIS: " , " }, /required/],
    ["FOREMAN_OIDC_REDIRECT_URIS", { ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_OIDC_REDIRECT_URIS: "https://a.example/cb?x=1" }, /query/],
    ["FOREMAN_OIDC_REDIRECT_URIS", { ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_OIDC_REDIRECT_URIS: "ftp://a.example/cb" }, /https/],
    ["FOREMAN_OIDC_SCOPES", { ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_OIDC_SCOPES: "email profile" }, /openid/],
    ["FOREMAN_JWT_SECRET", { ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_JWT_SECRET: "" }, /required/],
    ["FOREMAN_JWT_SECRET", { ...LOGIN, FOREMAN_SINGLE_USER_MODE: "false", FOREMAN_JWT_SECRET: "short" }, /at least 32/],
    ["FOREMAN_ACCESS_TOKEN_TTL_SECONDS", { FOREMAN_ACCESS_TOKEN_TTL_SECONDS: "5" }, /between 30/],
    ["FOREMAN_REFRESH_REUSE_GRACE_SECONDS", { FOREMAN_REFRESH_REUSE_GRACE_SECONDS: "61" }, /between 0 and 60/],
    ["FOREMAN_REFRESH_REUSE_GRACE_SECONDS", { FOREMAN_REFRESH_REUSE_GRACE_SECONDS: "soon" }, /whole number/],
    ["FOREMAN_WORKER_REGISTRATION_TOKEN", { FOREMAN_WORKER_REGISTRATION_TOKEN: "short" }, /at least 32/],
    ["FOREMAN_WORKER_REGISTRATION_TOKEN", { FOREMAN_WORKER_REGISTRATION_TOKEN: "w".repeat(1025) }, /at most 1024/],
  ];

  it.each(cases)("%s: %j", (variable, env, detail) => {
    const error = configError(env);
    expect(error.variable).toBe(variable);
    expect(error.message.startsWith(`${variable}: `)).toBe(true);
    expect(error.name).toBe("ConfigError");
    if (detail !== undefined) expect(error.message).toMatch(detail);
  });
});
