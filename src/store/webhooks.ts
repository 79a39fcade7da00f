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
 * Every repository (of any owner) whose remote's canonical key is one of keys, or whose stored
 * remote URL is one of urls ignoring case (as GitHub does for owner and repository names; URLs
 * are ASCII, which both databases' lower() folds alike: for a row stored before keys, until the
 * server fills its key at start), by id.
 */
export async function findWebhookTargets(db: Kysely<Database>, match: { urls: string[]; keys: string[] }): Promise<WebhookTarget[]> {
  if (match.urls.length === 0 && match.keys.length === 0) return [];
  const urls = [...new Set(match.urls.map((url) => url.toLowerCase()))];
  const rows = await db
    .selectFrom("repositories")
    .select(["id", "owner_id", "workspace_id", "webhook_secret"])
    .where((eb) =>
      eb.or([
        ...(match.keys.length === 0 ? [] : [eb("remote_key", "in", match.keys)]),
        ...(urls.length === 0 ? [] : [eb(sql<string>`lower(remote_url)`, "in", urls)]),
      ]),
    )
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

/**
 * Repositories (of any owner) whose stored webhook secret is not sealed under the current key:
 * rows not starting with `currentPrefix` ("v1:<kid>:"; the key id is hex, so LIKE sees no
 * wildcard in it), by id, after afterId, at most limit. Start-up re-encrypts them.
 */
export async function webhookSecretsToReseal(
  db: Kysely<Database>,
  currentPrefix: string,
  afterId: string | undefined,
  limit: number,
): Promise<{ id: string; webhookSecret: string }[]> {
  let query = db
    .selectFrom("repositories")
    .select(["id", "webhook_secret"])
    .where("webhook_secret", "is not", null)
    .where("webhook_secret", "not like", `${currentPrefix}%`);
  if (afterId !== undefined) query = query.where("id", ">", afterId);
  const rows = await query.orderBy("id").limit(limit).execute();
  return rows.map((r) => ({ id: r.id, webhookSecret: r.webhook_secret! }));
}

/**
 * Replaces a repository's stored webhook secret if it still is `expected`; false when it changed
 * meanwhile (another replica re-encrypted it first). The plaintext never passes through here.
 */
export async function replaceWebhookSecret(db: Kysely<Database>, id: string, expected: string, replacement: string): Promise<boolean> {
  const result = await db
    .updateTable("repositories")
    .set({ webhook_secret: replacement })
    .where("id", "=", id)
    .where("webhook_secret", "=", expected)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}
