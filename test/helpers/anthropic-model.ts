// A scripted Anthropic Messages API for the real Claude Code CLI: a node:http server on
// 127.0.0.1, port 0, answering `HEAD /` and `POST /v1/messages` (the CLI adds `?beta=true`)
// with SSE streams (message_start, content_block_start/delta/stop, message_delta, message_stop).
//
// The script is a list of turns of the agent's main loop. Which turn a request gets is the
// number of assistant messages already in its conversation, so a retried request gets the same
// turn again. The CLI's side requests (a session title, with no tools offered) do not count: they
// get a short text. Past the end of the script the model says "(end of script)".
//
// A turn can also be an error (an HTTP status with Anthropic's error body) or a hang: the
// stream starts and never finishes. Every request is recorded, so a test can read what the CLI
// sent back (its tool results, its model, its system prompt).
import http from "node:http";
import type { AddressInfo } from "node:net";

export type ScriptBlock =
  | { type: "text"; text: string }
  | { type: "thinking"; thinking: string }
  | { type: "tool_use"; name: string; input: Record<string, unknown> };

export type ScriptTurn =
  | { blocks: ScriptBlock[] }
  | { error: { status: number; type: string; message: string } }
  | { hang: true };

export interface ModelRequest {
  url: string;
  headers: http.IncomingHttpHeaders;
  /** The parsed JSON body. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  /** A request of the agent's main loop (it offers tools), not a side request such as a title. */
  main: boolean;
}

export interface ScriptedModel {
  /** For ANTHROPIC_BASE_URL. */
  url: string;
  requests: ModelRequest[];
  /** The main loop's requests only. */
  mainRequests(): ModelRequest[];
  /** Resolves once a main request has reached turn `index` (0-based). */
  reachedTurn(index: number): Promise<void>;
  close(): Promise<void>;
}

export async function startAnthropicModel(script: ScriptTurn[]): Promise<ScriptedModel> {
  const requests: ModelRequest[] = [];
  const turnWaiters: { index: number; resolve: () => void }[] = [];
  let highestTurn = -1;

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method === "HEAD" || req.method === "GET") {
        res.writeHead(200).end();
        return;
      }
      if (req.method !== "POST" || !(req.url ?? "").startsWith("/v1/messages")) {
        res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ type: "error", error: { type: "not_found_error", message: "not here" } }));
        return;
      }
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      let body: any;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        res.writeHead(400).end();
        return;
      }
      const main = Array.isArray(body.tools) && body.tools.length > 0;
      requests.push({ url: req.url ?? "", headers: req.headers, body, main });
      if (!main) {
        sendMessage(res, body.model, [{ type: "text", text: '{"title":"Scripted session"}' }]);
        return;
      }
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const index = (body.messages as any[]).filter((m) => m.role === "assistant").length;
      if (index > highestTurn) highestTurn = index;
      for (const w of [...turnWaiters]) {
        if (w.index <= highestTurn) {
          turnWaiters.splice(turnWaiters.indexOf(w), 1);
          w.resolve();
        }
      }
      const turn = script[index] ?? { blocks: [{ type: "text", text: "(end of script)" }] };
      if ("error" in turn) {
        res
          .writeHead(turn.error.status, { "content-type": "application/json" })
          .end(JSON.stringify({ type: "error", error: { type: turn.error.type, message: turn.error.message } }));
      } else if ("hang" in turn) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        sse(res, "message_start", { message: messageStart(body.model) });
        // And nothing more: close() ends the connection.
      } else {
        sendMessage(res, body.model, turn.blocks);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    mainRequests: () => requests.filter((r) => r.main),
    reachedTurn: (index) =>
      new Promise<void>((resolve) => {
        if (index <= highestTurn) resolve();
        else turnWaiters.push({ index, resolve });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

let messageCount = 0;

function messageStart(model: string) {
  return {
    id: `msg_scripted_${++messageCount}`,
    type: "message",
    role: "assistant",
    model,
    content: [],
    stop_reason: null,
    stop_sequence: null,
    usage: { input_tokens: 12, output_tokens: 1, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
  };
}

function sse(res: http.ServerResponse, type: string, data: Record<string, unknown>) {
  res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
}

function sendMessage(res: http.ServerResponse, model: string, blocks: ScriptBlock[]) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  sse(res, "message_start", { message: messageStart(model) });
  blocks.forEach((block, index) => {
    if (block.type === "text") {
      sse(res, "content_block_start", { index, content_block: { type: "text", text: "" } });
      sse(res, "content_block_delta", { index, delta: { type: "text_delta", text: block.text } });
    } else if (block.type === "thinking") {
      sse(res, "content_block_start", { index, content_block: { type: "thinking", thinking: "", signature: "" } });
      sse(res, "content_block_delta", { index, delta: { type: "thinking_delta", thinking: block.thinking } });
      sse(res, "content_block_delta", { index, delta: { type: "signature_delta", signature: "c2NyaXB0ZWQ=" } });
    } else {
      const id = `toolu_scripted_${messageCount}_${index}`;
      sse(res, "content_block_start", { index, content_block: { type: "tool_use", id, name: block.name, input: {} } });
      sse(res, "content_block_delta", { index, delta: { type: "input_json_delta", partial_json: JSON.stringify(block.input) } });
    }
    sse(res, "content_block_stop", { index });
  });
  const stopReason = blocks.some((b) => b.type === "tool_use") ? "tool_use" : "end_turn";
  sse(res, "message_delta", { delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: 7 } });
  sse(res, "message_stop", {});
  res.end();
}
