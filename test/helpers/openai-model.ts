// A scripted OpenAI Responses API for the real Codex CLI: a node:http server on 127.0.0.1,
// port 0, answering `POST /v1/responses` (codex streams: `stream: true`) with SSE events
// (response.created, response.output_item.added/done per item, response.completed with usage).
//
// The script is a list of steps of the agent's turn. Which step a request gets is read from its
// conversation: every function call a step makes has a call_id naming the step, so a request
// carrying step N's calls back gets step N+1, and a retried request gets the same step again.
// Past the end of the script the model says "(end of script)".
//
// Codex 0.171 offers a model it has no metadata for (any name but its own, e.g. "test-model")
// plain function tools, among them `exec_command` ({"cmd": "..."}, run by bash -lc in the
// workspace); its own default model gets a JavaScript "code mode" tool instead. So the scripts
// here name a model. A step can also be an HTTP error, or a hang: the stream starts and never
// finishes. Every request is recorded, so a test reads what codex sent back (tool outputs, model).
import http from "node:http";
import type { AddressInfo } from "node:net";

export type ScriptItem =
  | { type: "message"; text: string }
  | { type: "reasoning"; text: string }
  /** codex's exec_command tool: a shell command. */
  | { type: "shell"; cmd: string }
  | { type: "function_call"; name: string; arguments: Record<string, unknown> };

export type ScriptStep =
  | { items: ScriptItem[]; usage?: { input_tokens: number; output_tokens: number } }
  | { error: { status: number; message: string } }
  | { hang: true };

export interface ModelRequest {
  url: string;
  headers: http.IncomingHttpHeaders;
  /** The parsed JSON body. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  /** The script step it was answered with. */
  step: number;
}

export interface ScriptedModel {
  /** A provider base URL ("http://127.0.0.1:PORT/v1"). */
  url: string;
  requests: ModelRequest[];
  /** The outputs of the tool calls a request sent back (function_call_output items), in order. */
  toolOutputs(request: ModelRequest): string[];
  /** Resolves once a request has reached step `index` (0-based). */
  reachedStep(index: number): Promise<void>;
  close(): Promise<void>;
}

export async function startOpenAIModel(script: ScriptStep[]): Promise<ScriptedModel> {
  const requests: ModelRequest[] = [];
  const stepWaiters: { index: number; resolve: () => void }[] = [];
  let highestStep = -1;

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || !(req.url ?? "").startsWith("/v1/responses")) {
        res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "not here", type: "not_found" } }));
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
      const index = stepOf(body);
      requests.push({ url: req.url ?? "", headers: req.headers, body, step: index });
      if (index > highestStep) highestStep = index;
      for (const w of [...stepWaiters]) {
        if (w.index <= highestStep) {
          stepWaiters.splice(stepWaiters.indexOf(w), 1);
          w.resolve();
        }
      }
      const step = script[index] ?? { items: [{ type: "message", text: "(end of script)" }] };
      if ("error" in step) {
        res
          .writeHead(step.error.status, { "content-type": "application/json" })
          .end(JSON.stringify({ error: { message: step.error.message, type: "server_error", code: null } }));
      } else if ("hang" in step) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        sse(res, "response.created", { response: { id: `resp_hang_${index}`, status: "in_progress" } });
        // And nothing more: close() ends the connection.
      } else {
        sendResponse(res, index, step.items, step.usage ?? { input_tokens: 25, output_tokens: 7 });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    toolOutputs: (request) =>
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      (request.body.input as any[]).filter((i) => i.type === "function_call_output").map((i) => (typeof i.output === "string" ? i.output : JSON.stringify(i.output))),
    reachedStep: (index) =>
      new Promise<void>((resolve) => {
        if (index <= highestStep) resolve();
        else stepWaiters.push({ index, resolve });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** One past the highest step whose calls the conversation carries; 0 for a fresh one. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function stepOf(body: any): number {
  let next = 0;
  for (const item of Array.isArray(body.input) ? body.input : []) {
    const step = /^call_step(\d+)_/.exec(typeof item?.call_id === "string" ? item.call_id : "")?.[1];
    if (step !== undefined) next = Math.max(next, Number(step) + 1);
  }
  return next;
}

function sse(res: http.ServerResponse, type: string, data: Record<string, unknown>) {
  res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
}

function outputItem(step: number, index: number, item: ScriptItem): Record<string, unknown> {
  const id = `${step}_${index}`;
  switch (item.type) {
    case "message":
      return { type: "message", id: `msg_${id}`, role: "assistant", status: "completed", content: [{ type: "output_text", text: item.text, annotations: [] }] };
    case "reasoning":
      return { type: "reasoning", id: `rs_${id}`, summary: [{ type: "summary_text", text: item.text }] };
    case "shell":
      return { type: "function_call", id: `fc_${id}`, call_id: `call_step${id}`, name: "exec_command", arguments: JSON.stringify({ cmd: item.cmd }) };
    case "function_call":
      return { type: "function_call", id: `fc_${id}`, call_id: `call_step${id}`, name: item.name, arguments: JSON.stringify(item.arguments) };
  }
}

function sendResponse(res: http.ServerResponse, step: number, items: ScriptItem[], usage: { input_tokens: number; output_tokens: number }) {
  const id = `resp_step${step}`;
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  sse(res, "response.created", { response: { id, status: "in_progress" } });
  const output = items.map((item, index) => outputItem(step, index, item));
  output.forEach((item, index) => {
    sse(res, "response.output_item.added", { output_index: index, item });
    sse(res, "response.output_item.done", { output_index: index, item });
  });
  sse(res, "response.completed", {
    response: {
      id,
      status: "completed",
      output,
      usage: {
        input_tokens: usage.input_tokens,
        input_tokens_details: { cached_tokens: 0 },
        output_tokens: usage.output_tokens,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: usage.input_tokens + usage.output_tokens,
      },
    },
  });
  res.end();
}
