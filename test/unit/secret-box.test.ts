// The secret box (AES-256-GCM with a key id per ciphertext) and the key file single-user mode
// keeps in its data folder.
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isSealed, keyId, readOrCreateKeyFile, SecretBox, SecretBoxError, sealedKeyId } from "../../src/auth/secret-box.js";

const SEALED = /^v1:[0-9a-f]{12}:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]{22,}$/;

function openError(box: SecretBox, sealed: string, aad?: string): SecretBoxError {
  try {
    box.open(sealed, aad);
  } catch (error) {
    expect(error).toBeInstanceOf(SecretBoxError);
    return error as SecretBoxError;
  }
  throw new Error("the sealed value opened");
}

describe("SecretBox", () => {
  const key = randomBytes(32);
  const box = new SecretBox(key);

  it("seals to one line with the key's id, a fresh IV each time, and opens it again", () => {
    for (const secret of ["s3cret", "", "🔑".repeat(256), "x".repeat(10_000)]) {
      const sealed = box.seal(secret, "row:1");
      expect(sealed).toMatch(SEALED);
      expect(sealed).not.toContain(secret === "" ? "\0" : secret);
      expect(sealedKeyId(sealed)).toBe(keyId(key));
      expect(isSealed(sealed)).toBe(true);
      expect(box.open(sealed, "row:1")).toBe(secret);
      expect(box.seal(secret, "row:1")).not.toBe(sealed);
    }
  });

  it("refuses another record's additional data, an altered ciphertext and what is not sealed", () => {
    const sealed = box.seal("s3cret", "row:1");
    expect(openError(box, sealed, "row:2").message).toContain("altered or belongs to another record");
    expect(openError(box, sealed).message).toContain("altered or belongs to another record");
    const body = sealed.split(":")[3]!;
    const flipped = sealed.slice(0, sealed.length - body.length) + (body[0] === "A" ? "B" : "A") + body.slice(1);
    expect(openError(box, flipped, "row:1").message).toContain("altered");
    expect(openError(box, "s3cret").message).toContain("not a sealed secret");
    expect(isSealed("s3cret")).toBe(false);
  });

  it("says which key a ciphertext needs when it is not configured, naming key ids only", () => {
    const other = new SecretBox(randomBytes(32));
    const sealed = other.seal("s3cret", "row:1");
    const error = openError(box, sealed, "row:1");
    expect(error.message).toContain(`sealed with key ${other.currentKeyId}`);
    expect(error.message).toContain(`FOREMAN_SECRET_KEY (key ${box.currentKeyId})`);
    expect(error.message).toContain("FOREMAN_SECRET_KEYS_PREVIOUS");
    expect(error.message).not.toContain("s3cret");
    expect(error.message).not.toContain(sealed.split(":")[3]!);
  });

  it("rotates: the previous keys open what they sealed, and seal() uses the new key", () => {
    const oldKey = randomBytes(32);
    const sealedBefore = new SecretBox(oldKey).seal("s3cret", "row:1");
    const rotated = new SecretBox(randomBytes(32), [oldKey]);
    expect(rotated.open(sealedBefore, "row:1")).toBe("s3cret");
    const sealedAfter = rotated.seal("s3cret", "row:1");
    expect(sealedKeyId(sealedAfter)).toBe(rotated.currentKeyId);
    expect(rotated.currentKeyId).not.toBe(keyId(oldKey));
    expect(rotated.keyIds).toEqual([rotated.currentKeyId, keyId(oldKey)]);
    // The old key alone cannot open what the new one sealed.
    expect(openError(new SecretBox(oldKey), sealedAfter, "row:1").message).toContain(`sealed with key ${rotated.currentKeyId}`);
  });

  it("refuses a key that is not 32 bytes", () => {
    expect(() => new SecretBox(randomBytes(16))).toThrow("32 bytes");
    expect(() => new SecretBox(randomBytes(32), [randomBytes(31)])).toThrow("32 bytes");
  });
});

describe("readOrCreateKeyFile", () => {
  const folders: string[] = [];
  afterEach(async () => {
    for (const folder of folders.splice(0)) await rm(folder, { recursive: true, force: true });
  });
  async function folder(): Promise<string> {
    const made = await mkdtemp(path.join(tmpdir(), "foreman-key-"));
    folders.push(made);
    return made;
  }

  it("makes a 32-byte key readable by its owner alone, then reads the same one", async () => {
    const file = path.join(await folder(), "nested", "secret.key");
    const made = await readOrCreateKeyFile(file);
    expect(made.created).toBe(true);
    expect(made.key).toHaveLength(32);
    expect(made.readableByOthers).toBe(false);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(Buffer.from((await readFile(file, "utf8")).trim(), "base64")).toEqual(made.key);
    const again = await readOrCreateKeyFile(file);
    expect(again).toEqual({ key: made.key, created: false, readableByOthers: false });
  });

  it("gives every server starting at once on one folder the same key, and leaves nothing aside", async () => {
    const dir = await folder();
    const file = path.join(dir, "secret.key");
    const results = await Promise.all(Array.from({ length: 8 }, () => readOrCreateKeyFile(file)));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    for (const r of results) expect(r.key).toEqual(results[0]!.key);
    expect(await readdir(dir)).toEqual(["secret.key"]);
  });

  it("refuses a file that holds no key, and says which file", async () => {
    const file = path.join(await folder(), "secret.key");
    await writeFile(file, "not a key\n", { mode: 0o600 });
    await expect(readOrCreateKeyFile(file)).rejects.toThrow(`${file} does not hold a secret key`);
  });

  it("tells when the file is readable by others", async () => {
    const file = path.join(await folder(), "secret.key");
    await writeFile(file, `${randomBytes(32).toString("hex")}\n`, { mode: 0o644 });
    expect((await readOrCreateKeyFile(file)).readableByOthers).toBe(true);
  });
});
