import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { toDbTime } from "./codec.js";

/** The single-user mode's one user: a fixed id, so data survives restarts and mode switches. */
export const LOCAL_USER_ID = "00000000-0000-7000-8000-000000000001";

export async function ensureLocalUser(db: Kysely<Database>, now: Date): Promise<void> {
  await db
    .insertInto("users")
    .values({ id: LOCAL_USER_ID, issuer: "", subject: "local", name: "Local user", created_at: toDbTime(now), updated_at: toDbTime(now) })
    .onConflict((oc) => oc.column("id").doNothing())
    .execute();
}
