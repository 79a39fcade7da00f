// Secrets at rest are sealed (src/auth/secret-box.ts: "v1:<key id>:<iv>:<ciphertext>") from now
// on. The webhook secrets stored before were in clear, and a clear secret might itself look
// like a sealed one, so this marks each of them "clear:" first: from here on a stored value says
// its format. Sealing needs the key, which a migration does not have (`foreman migrate` runs
// without one), so the server seals the marked values when it starts (core/secrets.ts), and
// until then reads them as they are.
//
// Down takes the mark off the values still in clear; those already sealed stay sealed (there is
// no key here to open them), so after a down a repository whose secret was sealed needs its
// secret set again.
import { sql, type Kysely, type Migration } from "kysely";

export const CLEAR_SECRET_MARK = "clear:";

export function markClearSecrets(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await sql`update repositories set webhook_secret = ${sql.lit(CLEAR_SECRET_MARK)} || webhook_secret where webhook_secret is not null`.execute(db);
    },
    async down(db: Kysely<unknown>) {
      await sql`update repositories set webhook_secret = substr(webhook_secret, ${sql.lit(CLEAR_SECRET_MARK.length + 1)})
        where webhook_secret like ${sql.lit(`${CLEAR_SECRET_MARK}%`)}`.execute(db);
    },
  };
}
