// Webhook deliveries already handled, and the repositories a delivery may be for. Unlike
// every other store query, finding targets crosses owners: a delivery names a repository by its
// URL, and only the signature (checked in core) says whose it is.
import { sql, type Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { toDbTime } from "./codec.js";

/** A repository a webhook delivery may be for, with the secret that verifies it. */
export interface WebhookTarget {
  id: string;
  ownerId: string;
  workspaceId: string;
  /** null: the repository has no webhook secret and accepts no delivery. */
  webhookSecret: string | null;
}

/**
 * Every repository (of any owner) whose stored remote URL is one of urls, ignoring case (as
 * GitHub does for owner and repository names; URLs are ASCII, which both databases' lower()
 * folds alike), by id.
 */
export async function findWebhookTargets(db: Kysely<Database>, urls: string[]): Promise<WebhookTarget[]> {
  if (urls.length === 0) return [];
  const rows = await db
    .selectFrom("repositories")
    .select(["id", "owner_id", "workspace_id", "webhook_secret"])
    .where(sql<string>`lower(remote_url)`, "in", [...new Set(urls.map((url) => url.toLowerCase()))])
    .orderBy("id")
    .execute();
  return rows.map((r) => ({ id: r.id, ownerId: r.owner_id, workspaceId: r.workspace_id, webhookSecret: r.webhook_secret }));
}

/**
 * Records a delivery id as handled. Throws a unique violation when it was recorded before
 * (also by a concurrent transaction, once that commits); run it in the transaction that
 * stores what the delivery creates.
 */
export async function insertWebhookDelivery(
  db: Kysely<Database>,
  d: { deliveryId: string; repositoryId: string | null; event: string; receivedAt: Date },
): Promise<void> {
  await db
    .insertInto("webhook_deliveries")
    .values({ delivery_id: d.deliveryId, repository_id: d.repositoryId, event: d.event, received_at: toDbTime(d.receivedAt) })
    .execute();
}
