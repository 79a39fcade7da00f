// A real git remote for tests: bare repositories in a temporary folder, served over git's smart
// HTTP protocol by Debian's `git http-backend` (run as CGI, one process a request) behind a small
// node:http server on 127.0.0.1, port 0. Clone, fetch, ls-refs and push all work (receive-pack is
// on). A remote is public, or asks for HTTP basic-auth (401 without the right user and password).
// A test can make it go away: stop it (connections refused from then on), make it hang (it
// accepts and never answers), or cut the next answer off midway.
//
// Commits are made with git's plumbing in the bare repository itself (a temporary index, no
// work tree), with a fixed author and no global or system git configuration read.
import { execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const HTTP_BACKEND = "/usr/lib/git-core/git-http-backend";

/** The environment every git command here runs in: no user's configuration, a fixed identity and clock. */
export function gitEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: os.tmpdir(),
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_AUTHOR_NAME: "Test Author",
    GIT_AUTHOR_EMAIL: "author@example.com",
    GIT_COMMITTER_NAME: "Test Author",
    GIT_COMMITTER_EMAIL: "author@example.com",
    GIT_TERMINAL_PROMPT: "0",
    ...extra,
  };
}

/** Runs git with args (never through a shell) and returns its stdout, trimmed at the end. */
export async function git(args: string[], options: { cwd?: string; env?: Record<string, string>; input?: string } = {}): Promise<string> {
  if (options.input === undefined) {
    const { stdout } = await run("git", args, { cwd: options.cwd, env: gitEnv(options.env), maxBuffer: 64 * 1024 * 1024 });
    return stdout.trimEnd();
  }
  return new Promise((resolve, reject) => {
    const child = spawn("git", args, { cwd: options.cwd, env: gitEnv(options.env), stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString("utf8").trimEnd());
      else reject(new Error(`git ${args.join(" ")} exited ${code}: ${Buffer.concat(err).toString("utf8")}`));
    });
    child.stdin.end(options.input);
  });
}

export interface BasicAuth {
  username: string;
  password: string;
}

/** What the remote does with the next request(s). */
export type Misbehaviour =
  /** Answer normally. */
  | "none"
  /** Accept the request and never answer (a timeout on the client's side). */
  | "hang"
  /** Send the status, the headers and part of the body, then destroy the connection. */
  | "cut-off";

export interface GitRemote {
  /** http://127.0.0.1:<port>, no trailing slash. */
  readonly baseUrl: string;
  /** The folder holding the bare repositories (<name>.git). */
  readonly root: string;
  /** The user and password this remote asks for; undefined for a public remote. */
  readonly auth: BasicAuth | undefined;
  /** Requests answered or refused so far (every status), for a test to see that a remote was (not) asked. */
  readonly requests: number;
  /** The URL of repository `name` (http://127.0.0.1:<port>/<name>.git). */
  url(name: string): string;
  /**
   * A new bare repository with one commit on `defaultBranch` (HEAD names it), holding `files`
   * (a README unless given). Returns its URL.
   */
  createRepository(name: string, options?: { defaultBranch?: string; files?: Record<string, string> }): Promise<string>;
  /**
   * A commit on `branch` (created from `from`, else from the default branch, when it does not
   * exist) writing `files` (a null value deletes the file). Returns the commit's id.
   */
  commit(name: string, options: { branch?: string; from?: string; files: Record<string, string | null>; message?: string }): Promise<string>;
  /** Every ref of the repository and what it points at (HEAD as "ref: refs/heads/…" when symbolic). */
  refs(name: string): Promise<Record<string, string>>;
  /** The bare repository's folder. */
  gitDir(name: string): string;
  /** What the next requests meet: "hang" and "cut-off" last until set back to "none". */
  misbehave(mode: Misbehaviour): void;
  /** Stops listening and ends every open connection: from now on connections are refused. */
  stop(): Promise<void>;
  /** Stops and removes the repositories. */
  close(): Promise<void>;
}

/**
 * Starts a remote. `auth: true` makes a remote that asks for a fresh user and password (see
 * `remote.auth`); an object chooses them.
 */
export async function startGitRemote(options: { auth?: boolean | BasicAuth } = {}): Promise<GitRemote> {
  const root = await mkdtemp(path.join(os.tmpdir(), "foreman-git-remote-"));
  const auth: BasicAuth | undefined =
    options.auth === true ? { username: `user-${randomUUID().slice(0, 8)}`, password: `pw-${randomUUID()}` } : options.auth || undefined;
  const expected = auth === undefined ? undefined : `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}`;
  let mode: Misbehaviour = "none";
  let requests = 0;
  const sockets = new Set<Socket>();
  const children = new Set<ReturnType<typeof spawn>>();

  const server = http.createServer((req, res) => {
    requests += 1;
    if (expected !== undefined && req.headers.authorization !== expected) {
      req.resume();
      res.writeHead(401, { "WWW-Authenticate": 'Basic realm="test git remote"', "Content-Type": "text/plain" });
      res.end("authentication required\n");
      return;
    }
    if (mode === "hang") {
      req.resume();
      return;
    }
    serveCgi(req, res, root, auth?.username, mode === "cut-off", children);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const baseUrl = `http://127.0.0.1:${port}`;
  let stopped: Promise<void> | undefined;

  const gitDir = (name: string) => {
    if (!/^[A-Za-z0-9._-]+$/.test(name) || name.startsWith(".")) throw new Error(`not a test repository name: ${name}`);
    return path.join(root, `${name}.git`);
  };

  const remote: GitRemote = {
    baseUrl,
    root,
    auth,
    get requests() {
      return requests;
    },
    url: (name) => `${baseUrl}/${name}.git`,
    gitDir,
    async createRepository(name, init = {}) {
      const dir = gitDir(name);
      const branch = init.defaultBranch ?? "trunk";
      await mkdir(dir, { recursive: true });
      await git(["init", "--quiet", "--bare", `--initial-branch=${branch}`, dir]);
      // Pushes over HTTP need receive-pack, which git http-backend enables only for a
      // REMOTE_USER otherwise; uploadarchive and the like stay off.
      await git(["config", "http.receivepack", "true"], { cwd: dir });
      await remote.commit(name, { branch, files: init.files ?? { "README.md": `# ${name}\n` }, message: "Initial commit" });
      return remote.url(name);
    },
    async commit(name, { branch, from, files, message = "A commit" }) {
      const dir = gitDir(name);
      const target = branch ?? (await git(["symbolic-ref", "--short", "HEAD"], { cwd: dir }));
      const parent = await resolve(dir, `refs/heads/${target}`) ?? (from === undefined ? undefined : await resolve(dir, from));
      const index = path.join(root, `index-${randomUUID()}`);
      const env = { GIT_INDEX_FILE: index };
      try {
        if (parent !== undefined) await git(["read-tree", parent], { cwd: dir, env });
        const lines: string[] = [];
        for (const [file, content] of Object.entries(files)) {
          if (content === null) {
            lines.push(`0 ${"0".repeat(40)}\t${file}`);
            continue;
          }
          const blob = await git(["hash-object", "-w", "--stdin"], { cwd: dir, input: content });
          lines.push(`100644 ${blob}\t${file}`);
        }
        await git(["update-index", "--index-info"], { cwd: dir, env, input: `${lines.join("\n")}\n` });
        const tree = await git(["write-tree"], { cwd: dir, env });
        const commit = await git(["commit-tree", tree, ...(parent === undefined ? [] : ["-p", parent]), "-m", message], { cwd: dir });
        await git(["update-ref", `refs/heads/${target}`, commit], { cwd: dir });
        return commit;
      } finally {
        await rm(index, { force: true });
      }
    },
    async refs(name) {
      const dir = gitDir(name);
      const out = await git(["for-each-ref", "--format=%(refname) %(objectname)"], { cwd: dir });
      const refs: Record<string, string> = {};
      for (const line of out.split("\n").filter((l) => l !== "")) {
        const [ref, oid] = line.split(" ") as [string, string];
        refs[ref] = oid;
      }
      refs.HEAD = `ref: ${await git(["symbolic-ref", "HEAD"], { cwd: dir })}`;
      return refs;
    },
    misbehave(next) {
      mode = next;
    },
    stop() {
      stopped ??= new Promise<void>((done) => {
        server.close(() => done());
        for (const socket of sockets) socket.destroy();
        for (const child of children) child.kill("SIGKILL");
      });
      return stopped;
    },
    async close() {
      await remote.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
  return remote;
}

async function resolve(dir: string, rev: string): Promise<string | undefined> {
  try {
    return await git(["rev-parse", "--verify", "--quiet", `${rev}^{commit}`], { cwd: dir });
  } catch {
    return undefined;
  }
}

/** Runs git http-backend for one request (RFC 3875 CGI) and copies its answer to res. */
function serveCgi(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  root: string,
  user: string | undefined,
  cutOff: boolean,
  children: Set<ReturnType<typeof spawn>>,
): void {
  const url = new URL(req.url ?? "/", "http://remote");
  const env = gitEnv({
    GIT_PROJECT_ROOT: root,
    GIT_HTTP_EXPORT_ALL: "1",
    GATEWAY_INTERFACE: "CGI/1.1",
    REQUEST_METHOD: req.method ?? "GET",
    PATH_INFO: decodeURIComponent(url.pathname),
    QUERY_STRING: url.search.replace(/^\?/, ""),
    CONTENT_TYPE: req.headers["content-type"] ?? "",
    REMOTE_ADDR: req.socket.remoteAddress ?? "",
    ...(req.headers["content-length"] === undefined ? {} : { CONTENT_LENGTH: req.headers["content-length"] }),
    ...(req.headers["content-encoding"] === undefined ? {} : { HTTP_CONTENT_ENCODING: String(req.headers["content-encoding"]) }),
    // Protocol v2 (ls-refs) is asked for in this header.
    ...(req.headers["git-protocol"] === undefined ? {} : { GIT_PROTOCOL: String(req.headers["git-protocol"]) }),
    ...(user === undefined ? {} : { REMOTE_USER: user, AUTH_TYPE: "Basic" }),
  });
  const child = spawn(HTTP_BACKEND, [], { env, stdio: ["pipe", "pipe", "pipe"] });
  children.add(child);
  child.on("close", () => children.delete(child));
  child.on("error", () => {
    if (!res.headersSent) res.writeHead(500).end();
  });
  child.stderr.resume();
  req.pipe(child.stdin);
  child.stdin.on("error", () => {});
  let head = Buffer.alloc(0);
  let headerDone = false;
  let sent = 0;
  child.stdout.on("data", (chunk: Buffer) => {
    if (headerDone) {
      write(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    const crlf = head.indexOf("\r\n\r\n");
    const lf = head.indexOf("\n\n");
    const end = crlf !== -1 && (lf === -1 || crlf < lf) ? crlf : lf;
    if (end === -1) return;
    const sepLength = end === crlf ? 4 : 2;
    const headerText = head.subarray(0, end).toString("latin1");
    const body = head.subarray(end + sepLength);
    headerDone = true;
    let status = 200;
    const headers: Record<string, string> = {};
    for (const line of headerText.split(/\r?\n/)) {
      const colon = line.indexOf(":");
      if (colon === -1) continue;
      const name = line.slice(0, colon).trim();
      const value = line.slice(colon + 1).trim();
      if (name.toLowerCase() === "status") status = Number.parseInt(value, 10) || 200;
      else headers[name] = value;
    }
    res.writeHead(status, headers);
    if (body.length > 0) write(body);
  });
  child.stdout.on("end", () => {
    if (!headerDone) {
      if (!res.headersSent) res.writeHead(502).end();
      return;
    }
    if (cutOff) res.socket?.destroy();
    else res.end();
  });

  function write(chunk: Buffer): void {
    if (cutOff) {
      // Half of what came first, then the connection goes: an answer cut off midway.
      if (sent === 0) {
        res.write(chunk.subarray(0, Math.max(1, Math.floor(chunk.length / 2))));
        sent += chunk.length;
        res.flushHeaders();
        setImmediate(() => {
          res.socket?.destroy();
          child.kill("SIGKILL");
        });
      }
      return;
    }
    res.write(chunk);
  }
}

/** A work tree cloned from url with the git command (credentials, if any, in the URL), for tests that look at what a remote holds. */
export async function cloneWithGit(url: string, into?: string): Promise<string> {
  const dir = into ?? (await mkdtemp(path.join(os.tmpdir(), "foreman-git-clone-")));
  await git(["clone", "--quiet", url, dir]);
  return dir;
}

/** Writes files into a work tree (folders made as needed). */
export async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  for (const [file, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await writeFile(path.join(dir, file), content);
  }
}

/** url with user and password in it, as the git command takes them. */
export function withCredentials(url: string, auth: BasicAuth): string {
  const u = new URL(url);
  u.username = encodeURIComponent(auth.username);
  u.password = encodeURIComponent(auth.password);
  return u.toString();
}

/**
 * Commits on `branch` of the bare repository `gitDir` (after its head, when it has one), all in
 * one `git fast-import` stream: a repository of thousands of files in a second or two, where a
 * hash-object per file would take minutes. Each commit writes its files (a null value deletes
 * the file). Returns the commits' ids, oldest first.
 */
export async function importCommits(gitDir: string, branch: string, commits: { message: string; files: Record<string, string | null> }[]): Promise<string[]> {
  if (commits.length === 0) return [];
  const parent = await resolve(gitDir, `refs/heads/${branch}`);
  const when = `${Math.floor(Date.now() / 1000)} +0000`;
  const data = (text: string) => `data ${Buffer.byteLength(text)}\n${text}\n`;
  const parts: string[] = [];
  commits.forEach(({ message, files }, i) => {
    parts.push(`commit refs/heads/${branch}\n`, `committer Test Author <author@example.com> ${when}\n`, data(message));
    if (i === 0 && parent !== undefined) parts.push(`from ${parent}\n`);
    for (const [file, content] of Object.entries(files)) {
      if (/[\n"]/.test(file) || file.startsWith(" ")) throw new Error(`not a path fast-import takes unquoted: ${JSON.stringify(file)}`);
      parts.push(content === null ? `D ${file}\n` : `M 100644 inline ${file}\n${data(content)}`);
    }
    parts.push("\n");
  });
  await git(["fast-import", "--quiet", "--done"], { cwd: gitDir, input: `${parts.join("")}done\n` });
  const ids = await git(["rev-list", "--reverse", `--max-count=${commits.length}`, `refs/heads/${branch}`], { cwd: gitDir });
  return ids.split("\n");
}
