import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { fromDbTime, toDbTime } from "./codec.js";

export interface User {
  id: string;
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
  createdAt: Date;
}

/** The single-user mode's one user: a fixed id, so data survives restarts and mode switches. */
export const LOCAL_USER_ID = "00000000-0000-7000-8000-000000000001";

export async function ensureLocalUser(db: Kysely<Database>, now: Date): Promise<void> {
  await db
    .insertInto("users")
    .values({ id: LOCAL_USER_ID, issuer: "", subject: "local", name: "Local user", created_at: toDbTime(now), updated_at: toDbTime(now) })
    .onConflict((oc) => oc.column("id").doNothing())
    .execute();
}

export async function getUser(db: Kysely<Database>, id: string): Promise<User | undefined> {
  const row = await db.selectFrom("users").selectAll().where("id", "=", id).executeTakeFirst();
  if (row === undefined) return undefined;
  return { id: row.id, issuer: row.issuer, subject: row.subject, email: row.email, name: row.name, createdAt: fromDbTime(row.created_at) };
}
