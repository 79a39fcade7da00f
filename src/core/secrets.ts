// Secrets the server keeps (webhook secrets today, upstream credentials with the git issue) are
// stored sealed (src/auth/secret-box.ts), bound to the record they belong to. A value stored
// before sealing began is marked "clear:" (migrations/0004_mark_clear_secrets.ts) and read as it
// is until start-up seals it; start-up also re-seals values of an older key under the current one,
// so that after a rotation and one start the previous key may go.
import { sealedKeyId, SecretBoxError } from "../auth/secret-box.js";
import type { Logger } from "../logger.js";
import { replaceWebhookSecret, webhookSecretsToReseal } from "../store/webhooks.js";
import type { Core } from "./context.js";

export { SecretBoxError };

/** The mark migration 0004 put on secrets stored in clear (it must not change: stored values carry it). */
const CLEAR_MARK = "clear:";

/** What a repository's webhook secret is bound to: a sealed value moved to another row does not open. */
export function webhookSecretAad(repositoryId: string): string {
  return `repositories.webhook_secret:${repositoryId}`;
}

/**
 * The plaintext of a stored secret: sealed, marked clear, or (written by a replica of the
 * version before sealing, after the migration) neither. SecretBoxError when a sealed one does
 * not open, with a message that names key ids and nothing secret.
 */
export function openStoredSecret(core: Core, stored: string, aad: string): string {
  if (stored.startsWith(CLEAR_MARK)) return stored.slice(CLEAR_MARK.length);
  if (sealedKeyId(stored) === undefined) return stored;
  return core.secrets.open(stored, aad);
}

const BATCH = 200;
/** How many unreadable rows the start-up log names. */
const NAMED = 10;

/**
 * Seals every stored webhook secret that is not sealed under the current key: the ones in
 * clear, and those of an older key. Each row is replaced only if it did not change meanwhile,
 * so replicas starting at once each seal a row at most once between them. A value that does
 * not open (sealed with a key no longer configured) is left as it is and reported.
 */
export async function resealStoredSecrets(core: Core, log: Logger): Promise<{ resealed: number; unreadable: number }> {
  const prefix = `v1:${core.secrets.currentKeyId}:`;
  let resealed = 0;
  const unreadable: { repository_id: string; problem: string }[] = [];
  let unreadableCount = 0;
  let afterId: string | undefined;
  for (;;) {
    const rows = await webhookSecretsToReseal(core.db, prefix, afterId, BATCH);
    for (const row of rows) {
      const aad = webhookSecretAad(row.id);
      let plaintext: string;
      try {
        plaintext = openStoredSecret(core, row.webhookSecret, aad);
      } catch (error) {
        if (!(error instanceof SecretBoxError)) throw error;
        unreadableCount += 1;
        if (unreadable.length < NAMED) unreadable.push({ repository_id: row.id, problem: error.message });
        continue;
      }
      if (await replaceWebhookSecret(core.db, row.id, row.webhookSecret, core.secrets.seal(plaintext, aad))) resealed += 1;
    }
    if (rows.length < BATCH) break;
    afterId = rows[rows.length - 1]!.id;
  }
  if (resealed > 0) log.info({ resealed, key_id: core.secrets.currentKeyId }, "stored webhook secrets sealed with the current key");
  if (unreadableCount > 0) {
    log.error(
      { unreadable: unreadableCount, examples: unreadable, key_ids: core.secrets.keyIds },
      "stored webhook secrets that no configured key opens: their webhooks fail until FOREMAN_SECRET_KEY or FOREMAN_SECRET_KEYS_PREVIOUS holds the key they were sealed with",
    );
  }
  return { resealed, unreadable: unreadableCount };
}
