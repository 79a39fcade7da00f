// Secrets at rest: AES-256-GCM (node:crypto) under the server's key (FOREMAN_SECRET_KEY), with
// older keys (FOREMAN_SECRET_KEYS_PREVIOUS) kept for reading so that the key can be rotated.
//
// A sealed secret is one line of text: "v1:<kid>:<iv>:<ciphertext and tag>", the last two in
// base64url. The key id (kid) is a short hash of the key, so open() knows which key to use and
// can say which one is missing; a fresh 96-bit IV per seal. The additional data (aad) names
// what the secret belongs to (say "repositories.webhook_secret:<id>"): a sealed value copied
// into another row, or under another key id, does not open. Errors name key ids, never a
// plaintext, a ciphertext or a key.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { link, mkdir, readFile, stat, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseSecretKey } from "../config.js";

export const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const VERSION = "v1";
const SEALED = /^v1:([0-9a-f]{12}):([A-Za-z0-9_-]{16}):([A-Za-z0-9_-]{22,})$/;

/** A sealed secret that does not open: unknown key id, wrong key, altered text, or not sealed at all. */
export class SecretBoxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SecretBoxError";
  }
}

/** The key's id: the first 6 bytes of a SHA-256 of it, in hex. It says which key, and reveals nothing of it. */
export function keyId(key: Buffer): string {
  return createHash("sha256").update("foreman secret key id\0").update(key).digest("hex").slice(0, 12);
}

/** Whether the text has the form of a sealed secret (it may still not open). */
export function isSealed(text: string): boolean {
  return SEALED.test(text);
}

/** The key id a sealed secret names, or undefined for text that is not one. */
export function sealedKeyId(text: string): string | undefined {
  return SEALED.exec(text)?.[1];
}

function additionalData(kid: string, aad: string): Buffer {
  return Buffer.from(`foreman secret ${VERSION}\0${kid}\0${aad}`, "utf8");
}

export class SecretBox {
  /** The id of the key seal() uses. */
  readonly currentKeyId: string;
  private readonly keys = new Map<string, Buffer>();

  constructor(current: Buffer, previous: readonly Buffer[] = []) {
    for (const key of [current, ...previous]) {
      if (key.length !== KEY_BYTES) throw new Error(`a secret key must be ${KEY_BYTES} bytes, got ${key.length}`);
    }
    this.currentKeyId = keyId(current);
    this.keys.set(this.currentKeyId, current);
    for (const key of previous) {
      const kid = keyId(key);
      if (!this.keys.has(kid)) this.keys.set(kid, key);
    }
  }

  /** The ids of every key open() can use, the current one first. */
  get keyIds(): string[] {
    return [...this.keys.keys()];
  }

  /** Encrypts plaintext under the current key, bound to aad (which open() must be given again). */
  seal(plaintext: string, aad = ""): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.keys.get(this.currentKeyId)!, iv);
    cipher.setAAD(additionalData(this.currentKeyId, aad));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final(), cipher.getAuthTag()]);
    return `${VERSION}:${this.currentKeyId}:${iv.toString("base64url")}:${body.toString("base64url")}`;
  }

  /** The plaintext of a sealed secret; SecretBoxError when it does not open. */
  open(sealed: string, aad = ""): string {
    const parts = SEALED.exec(sealed);
    if (parts === null) throw new SecretBoxError("the stored value is not a sealed secret (expected v1:<key id>:<iv>:<ciphertext>)");
    const [, kid, ivText, bodyText] = parts as unknown as [string, string, string, string];
    const key = this.keys.get(kid);
    if (key === undefined) {
      throw new SecretBoxError(
        `it was sealed with key ${kid}, which is neither FOREMAN_SECRET_KEY (key ${this.currentKeyId}) ` +
          "nor in FOREMAN_SECRET_KEYS_PREVIOUS; configure the key it was sealed with",
      );
    }
    const iv = Buffer.from(ivText, "base64url");
    const body = Buffer.from(bodyText, "base64url");
    if (iv.length !== IV_BYTES || body.length < TAG_BYTES) throw new SecretBoxError("the stored value is not a sealed secret (truncated)");
    try {
      const decipher = createDecipheriv("aes-256-gcm", key, iv);
      decipher.setAAD(additionalData(kid, aad));
      decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
      return Buffer.concat([decipher.update(body.subarray(0, body.length - TAG_BYTES)), decipher.final()]).toString("utf8");
    } catch {
      throw new SecretBoxError(`it does not open with key ${kid}: the stored value was altered or belongs to another record`);
    }
  }
}

/**
 * The key kept in a file (single-user mode keeps it in the data folder), made when there is none:
 * 32 random bytes in base64, mode 0600. Two servers starting at once on one folder agree on one
 * key: the file appears whole (written aside, then hard-linked into place) and only if absent.
 */
export async function readOrCreateKeyFile(file: string): Promise<{ key: Buffer; created: boolean; readableByOthers: boolean }> {
  let created = false;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const aside = `${file}.${randomBytes(6).toString("hex")}.tmp`;
    await writeFile(aside, `${randomBytes(KEY_BYTES).toString("base64")}\n`, { mode: 0o600, flag: "wx" });
    try {
      await link(aside, file);
      created = true;
    } catch (linkError) {
      if ((linkError as NodeJS.ErrnoException).code !== "EEXIST") throw linkError;
    } finally {
      await unlink(aside);
    }
    text = await readFile(file, "utf8");
  }
  const key = parseSecretKey(text);
  if (key === undefined) throw new SecretBoxError(`${file} does not hold a secret key (32 bytes in base64 or hex)`);
  const readableByOthers = ((await stat(file)).mode & 0o077) !== 0;
  return { key, created, readableByOthers };
}
