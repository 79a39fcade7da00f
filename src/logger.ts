// Structured JSON logs (pino). Secret-bearing fields are redacted by path as a second line of
// defence; the first is never passing secrets to a logger at all.
import { pino, type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "./config.js";

export type { Logger };

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "foreman" },
      redact: {
        paths: ["*.authorization", "*.password", "*.secret", "*.secrets", "*.token", "*.leaseToken", "*.webhookSecret", "*.upstreamCredentials", "*.credentials"],
        censor: "[redacted]",
      },
    },
    destination,
  );
}
