// The CLI's stored login: per server URL, the tokens `foreman login` got, in a file only the
// user can read (FOREMAN_CREDENTIALS, default ~/.config/foreman/credentials.json). Written
// whole to a temporary file and renamed, so a crash never leaves half a file.
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ClientError } from "./errors.js";

export interface StoredLogin {
  accessToken: string;
  /** ISO time. */
  accessTokenExpireTime: string;
  refreshToken: string;
  refreshTokenExpireTime: string;
  userId: string;
  email: string;
}

type CredentialsFile = Record<string, StoredLogin>;

export function credentialsPath(env: NodeJS.ProcessEnv): string {
  const explicit = env.FOREMAN_CREDENTIALS?.trim();
  if (explicit) return path.resolve(explicit);
  const config = env.XDG_CONFIG_HOME?.trim() || path.join(os.homedir(), ".config");
  return path.join(config, "foreman", "credentials.json");
}

async function readAll(file: string): Promise<CredentialsFile> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw error;
  }
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === "object" && parsed !== null ? (parsed as CredentialsFile) : {};
  } catch {
    throw new ClientError(`${file} is not valid JSON; delete it and run foreman login again`);
  }
}

async function writeAll(file: string, all: CredentialsFile): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify(all, null, 2)}\n`, { mode: 0o600 });
  await chmod(temporary, 0o600);
  await rename(temporary, file);
}

export async function loadLogin(env: NodeJS.ProcessEnv, server: string): Promise<StoredLogin | undefined> {
  return (await readAll(credentialsPath(env)))[server];
}

export async function saveLogin(env: NodeJS.ProcessEnv, server: string, login: StoredLogin): Promise<void> {
  const file = credentialsPath(env);
  const all = await readAll(file);
  all[server] = login;
  await writeAll(file, all);
}

export async function forgetLogin(env: NodeJS.ProcessEnv, server: string): Promise<boolean> {
  const file = credentialsPath(env);
  const all = await readAll(file);
  if (!(server in all)) return false;
  delete all[server];
  await writeAll(file, all);
  return true;
}
