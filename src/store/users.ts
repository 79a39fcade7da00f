// Users (model/users.ts says what one is): the local user, and the users an OpenID
// provider vouches for, stored by (issuer, subject).
import type { Kysely, Selectable } from "kysely";
import type { Database, UsersTable } from "../db/schema.js";
import { LOCAL_USER_ID, type User } from "../model/users.js";
import { fromDbTime, toDbTime } from "./codec.js";

export async function ensureLocalUser(db: Kysely<Database>, now: Date): Promise<void> {
  await db
    .insertInto("users")
    .values({ id: LOCAL_USER_ID, issuer: "", subject: "local", name: "Local user", created_at: toDbTime(now), updated_at: toDbTime(now) })
    .onConflict((oc) => oc.column("id").doNothing())
    .execute();
}

function toUser(row: Selectable<UsersTable>): User {
  return {
    id: row.id,
    issuer: row.issuer,
    subject: row.subject,
    email: row.email,
    name: row.name,
    createdAt: fromDbTime(row.created_at),
  };
}

/** Creates the user an OpenID provider vouches for, or refreshes their email and name. */
export async function upsertUserByIdentity(
  db: Kysely<Database>,
  user: { id: string; issuer: string; subject: string; email: string | null; name: string | null },
  now: Date,
): Promise<User> {
  const row = await db
    .insertInto("users")
    .values({ ...user, created_at: toDbTime(now), updated_at: toDbTime(now) })
    .onConflict((oc) =>
      oc.columns(["issuer", "subject"]).doUpdateSet({ email: user.email, name: user.name, updated_at: toDbTime(now) }),
    )
    .returningAll()
    .executeTakeFirstOrThrow();
  return toUser(row);
}

export async function getUser(db: Kysely<Database>, id: string): Promise<User | undefined> {
  const row = await db.selectFrom("users").selectAll().where("id", "=", id).executeTakeFirst();
  return row && toUser(row);
}
