// A claim remembers the poll that made it (agent_sessions.claim_poll_id), so that a retried
// GetTask returns the same claim. Every poll looks its id up first, and a poll id names at most
// one claim, of one worker: unique, which also makes two workers that send the same id at the
// same moment fail rather than both claim under it. Rows never claimed hold NULL, which both
// databases leave out of uniqueness.
import type { Kysely, Migration } from "kysely";

export function claimPollIds(): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await db.schema.createIndex("agent_sessions_claim_poll_id_key").on("agent_sessions").column("claim_poll_id").unique().execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex("agent_sessions_claim_poll_id_key").execute();
    },
  };
}
