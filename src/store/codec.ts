// Conversions between JavaScript values and what each database stores and returns.
import { randomBytes } from "node:crypto";

/** Times are stored as ISO-8601 UTC strings, which sort correctly as text on SQLite. */
export function toDbTime(date: Date): string {
  return date.toISOString();
}

/** PostgreSQL returns a Date, SQLite the ISO string that was stored. */
export function fromDbTime(value: Date | string): Date {
  return value instanceof Date ? value : new Date(value);
}

export function fromDbTimeOrNull(value: Date | string | null): Date | null {
  return value === null ? null : fromDbTime(value);
}

/** PostgreSQL returns jsonb parsed, SQLite the text that was stored. */
export function fromDbJson<T>(value: unknown): T {
  return (typeof value === "string" ? JSON.parse(value) : value) as T;
}

let lastMillis = 0;
let sequence = 0;

/**
 * A UUIDv7: time-ordered, so ordering by id is ordering by creation, which keeps pages stable
 * and indexes compact. Within one millisecond a counter keeps ids from one process in order.
 * `now` is core.now() in milliseconds, so a test that moves the clock moves the ids too.
 */
export function newId(now: number): string {
  if (now <= lastMillis) {
    now = lastMillis;
    sequence++;
  } else {
    lastMillis = now;
    sequence = randomBytes(2).readUInt16BE(0) & 0x07ff;
  }
  if (sequence > 0x0fff) {
    // 4096 ids in one millisecond: borrow the next millisecond.
    lastMillis = now = now + 1;
    sequence = 0;
  }
  const bytes = randomBytes(16);
  bytes.writeUIntBE(now, 0, 6);
  bytes[6] = 0x70 | (sequence >> 8);
  bytes[7] = sequence & 0xff;
  bytes[8] = 0x80 | (bytes[8]! & 0x3f);
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
