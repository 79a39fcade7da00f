// WatchTasks reads a workspace's task_events by increasing id and keeps the last id it read as
// its cursor, so within a workspace the ids must become visible in the order they are given: a
// watcher that has read id N must never later find an N-1 that committed late. Until now the
// inserting transaction took an advisory lock per workspace and held it to its end, which made
// every change of a workspace wait for the previous one's remaining statements, its client's
// round trips and its commit: dispatch (three changes per run) topped out at about 330 changes
// a second in one workspace, whatever the workers did (bench/dispatch.ts, issue 16).
//
// On PostgreSQL the order is now made at commit time instead: a deferred constraint trigger runs
// as the transaction commits, takes the workspace's lock and gives the row its final id then, so
// the lock is held only while the commit itself finishes. SQLite needs none of this: one writer
// at a time, and its ids are given in commit order already.
import { sql, type Kysely, type Migration } from "kysely";
import type { DialectName } from "./dialect.js";

export function taskEventsCommitOrder(dialect: DialectName): Migration {
  if (dialect !== "postgres") return { async up() {}, async down() {} };
  return {
    async up(db: Kysely<unknown>) {
      await sql`
        CREATE FUNCTION foreman_task_event_commit_order() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          -- Released when the commit is visible: the next transaction's id is given after it.
          PERFORM pg_advisory_xact_lock(hashtext('task_events:' || NEW.workspace_id::text));
          UPDATE task_events SET id = nextval(pg_get_serial_sequence('task_events', 'id')) WHERE id = NEW.id;
          RETURN NULL;
        END
        $$`.execute(db);
      await sql`
        CREATE CONSTRAINT TRIGGER task_events_commit_order
          AFTER INSERT ON task_events DEFERRABLE INITIALLY DEFERRED
          FOR EACH ROW EXECUTE FUNCTION foreman_task_event_commit_order()`.execute(db);
    },
    async down(db: Kysely<unknown>) {
      await sql`DROP TRIGGER task_events_commit_order ON task_events`.execute(db);
      await sql`DROP FUNCTION foreman_task_event_commit_order()`.execute(db);
    },
  };
}
