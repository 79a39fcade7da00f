// Where an agent asks its user a question: one small HTTP server per daemon on 127.0.0.1, an
// address per session (FOREMAN_ASK_URL, with a random path only that session's agent is given).
// The agent POSTs the question, as plain text (a TEXT question) or as a JSON AgentQuestion,
// and the response body is the answer once a user gives it (SessionService.SubmitTtyInput):
//   answer=$(curl -sf --data 'Deploy to staging?' "$FOREMAN_ASK_URL")
// 410 when the session ended first, 400 for a malformed question.
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { AgentQuestion } from "./agents/agent.js";

const MAX_QUESTION_BYTES = 64 * 1024;

export type Asker = (question: AgentQuestion) => Promise<string>;

export class AskServer {
  private server: Server | undefined;
  private readonly askers = new Map<string, Asker>();

  /** An address for one session's questions; release() when the session ends. */
  async open(ask: Asker): Promise<{ url: string; release: () => void }> {
    const port = await this.listening();
    const key = randomBytes(18).toString("base64url");
    this.askers.set(key, ask);
    return { url: `http://127.0.0.1:${port}/ask/${key}`, release: () => this.askers.delete(key) };
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async listening(): Promise<number> {
    if (this.server === undefined) {
      const server = createServer((req, res) => {
        void this.answer(req).then(
          ({ status, body }) => {
            res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
            res.end(body);
          },
          () => {
            res.writeHead(500).end("the worker could not ask the question\n");
          },
        );
      });
      // Questions wait for a person: no request timeout.
      server.requestTimeout = 0;
      server.headersTimeout = 10_000;
      await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", () => resolve()));
      this.server = server;
    }
    return (this.server.address() as AddressInfo).port;
  }

  private async answer(req: IncomingMessage): Promise<{ status: number; body: string }> {
    const key = /^\/ask\/([A-Za-z0-9_-]+)$/.exec(req.url ?? "")?.[1];
    const ask = key === undefined ? undefined : this.askers.get(key);
    if (ask === undefined) return { status: 404, body: "no such session: it may have ended\n" };
    if (req.method !== "POST") return { status: 405, body: "POST the question\n" };
    const text = await readBody(req);
    if (text === undefined) return { status: 413, body: `a question is at most ${MAX_QUESTION_BYTES} bytes\n` };
    const question = parseQuestion(text);
    if (typeof question === "string") return { status: 400, body: `${question}\n` };
    try {
      return { status: 200, body: await ask(question) };
    } catch (error) {
      return { status: 410, body: `${error instanceof Error ? error.message : String(error)}\n` };
    }
  }
}

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_QUESTION_BYTES) {
        resolve(undefined);
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/** A question from the request body, or what is wrong with it. */
export function parseQuestion(body: string): AgentQuestion | string {
  const text = body.trim();
  if (!text.startsWith("{")) return text === "" ? "the question is empty" : { prompt: text, type: "text" };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return "the question is not valid JSON";
  }
  const q = value as Partial<AgentQuestion>;
  if (typeof q.prompt !== "string" || q.prompt.trim() === "") return "prompt is required";
  const type = q.type ?? "text";
  if (type !== "text" && type !== "confirm" && type !== "choice") return "type must be text, confirm or choice";
  const choices = q.choices ?? [];
  if (!Array.isArray(choices) || choices.some((c) => typeof c !== "string")) return "choices must be a list of strings";
  if (type === "choice" && choices.length === 0) return "a choice question needs choices";
  return { prompt: q.prompt, type, ...(choices.length > 0 ? { choices } : {}) };
}
