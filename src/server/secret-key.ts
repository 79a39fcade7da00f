// The box that seals stored secrets, from configuration: FOREMAN_SECRET_KEY (required in
// multi-user mode), or in single-user mode the key file in the data folder, made on the first
// start. FOREMAN_SECRET_KEYS_PREVIOUS add keys that only open. No key is ever logged.
import path from "node:path";
import { readOrCreateKeyFile, SecretBox, SecretBoxError } from "../auth/secret-box.js";
import { ConfigError, type Config } from "../config.js";
import type { Logger } from "../logger.js";

/** Where single-user mode keeps its key when FOREMAN_SECRET_KEY is unset. */
export function secretKeyFile(config: Pick<Config, "dataDir">): string {
  return path.join(config.dataDir, "secret.key");
}

export async function openSecretBox(config: Pick<Config, "dataDir" | "secrets">, logger: Logger): Promise<SecretBox> {
  let key = config.secrets.key;
  if (key === undefined) {
    const file = secretKeyFile(config);
    let kept;
    try {
      kept = await readOrCreateKeyFile(file);
    } catch (error) {
      if (error instanceof SecretBoxError) {
        throw new ConfigError("FOREMAN_SECRET_KEY", `is unset, and ${error.message}: restore the file, or set FOREMAN_SECRET_KEY to the key it held`);
      }
      throw error;
    }
    key = kept.key;
    const box = new SecretBox(key, config.secrets.previousKeys);
    if (kept.created) logger.info({ key_file: file, key_id: box.currentKeyId }, "made a secret key for stored secrets; back it up with the data folder");
    if (kept.readableByOthers) logger.warn({ key_file: file }, "the secret key file is readable by other users; chmod 600 it");
    return box;
  }
  return new SecretBox(key, config.secrets.previousKeys);
}
