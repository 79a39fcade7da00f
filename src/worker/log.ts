// The worker daemon's log: JSON lines on stderr (stdout stays free for a caller that reads it),
// at FOREMAN_LOG_LEVEL. Never a secret value, a lease token or a credential in a field.
import pino, { type Logger } from "pino";

export function workerLogger(level: string | undefined): Logger {
  return pino({ level: level?.trim() || "info", base: { component: "worker", pid: process.pid } }, pino.destination(2));
}
