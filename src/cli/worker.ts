// `foreman worker`: the worker daemon's settings read from its options and environment, its
// agents chosen (the ones asked for, or every one found on PATH, plus the command agent), then
// the daemon (src/worker/daemon.ts) run until SIGTERM or SIGINT: the first drains, a second
// stops now.
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { DEFAULT_SERVER } from "../client/client.js";
import type { AgentAdapter } from "../worker/agents/agent.js";
import { claudeCodeAgent } from "../worker/agents/claude-code.js";
import { codexAgent } from "../worker/agents/codex.js";
import { commandAgent } from "../worker/agents/command.js";
import { WorkerDaemon } from "../worker/daemon.js";
import { RegistrationFailed } from "../worker/identity.js";
import { workerLogger } from "../worker/log.js";
import { CommandFailed, UsageError } from "./errors.js";

export const WORKER_VERSION = "0.1.0";

/** The agents a worker can offer, and the executable each needs on PATH. */
const AGENT_EXECUTABLES: Record<string, string | undefined> = { command: undefined, "claude-code": "claude", codex: "codex" };

/** Variables of the worker's environment every agent gets: what a shell and the agents' own keys need; never FOREMAN_*. */
const PASSED = ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM"];
const PASSED_PREFIXES = ["ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_"];

export function agentEnvironment(env: NodeJS.ProcessEnv): Record<string, string> {
  const base: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || name.startsWith("FOREMAN_")) continue;
    if (PASSED.includes(name) || PASSED_PREFIXES.some((p) => name.startsWith(p))) base[name] = value;
  }
  return base;
}

function onPath(executable: string, env: NodeJS.ProcessEnv): boolean {
  return (env.PATH ?? "").split(path.delimiter).some((dir) => dir !== "" && existsSync(path.join(dir, executable)));
}

function defaultStateDir(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_STATE_HOME?.trim() || path.join(env.HOME?.trim() || os.homedir(), ".local", "state");
  return path.join(base, "foreman", "worker");
}

async function registrationToken(values: Record<string, string | undefined>, env: NodeJS.ProcessEnv): Promise<string> {
  if (values.token !== undefined && values["token-file"] !== undefined) throw new UsageError("give --token or --token-file, not both");
  const file = values["token-file"] ?? (values.token === undefined ? env.FOREMAN_WORKER_TOKEN_FILE?.trim() || undefined : undefined);
  if (file !== undefined) {
    try {
      const token = (await readFile(file, "utf8")).trim();
      if (token === "") throw new CommandFailed(`the token file ${file} is empty`);
      return token;
    } catch (error) {
      if (error instanceof CommandFailed) throw error;
      throw new CommandFailed(`cannot read the token file ${file}: ${(error as Error).message}`);
    }
  }
  const token = values.token ?? env.FOREMAN_WORKER_TOKEN?.trim();
  if (token === undefined || token === "") {
    throw new UsageError("a registration token is required: --token, --token-file, FOREMAN_WORKER_TOKEN or FOREMAN_WORKER_TOKEN_FILE (foreman worker-token create makes one)");
  }
  return token;
}

function positiveInteger(name: string, value: string | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max) throw new UsageError(`--${name} must be a whole number from 1 to ${max}, not '${value}'`);
  return Number(value);
}

function labels(value: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (value ?? "").split(",").filter((p) => p.trim() !== "")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`--labels takes KEY=VALUE pairs separated by commas, not '${pair}'`);
    out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return out;
}

/** The agents to offer: those asked for (each must be available), or every one on PATH plus command. */
export function chooseAgents(values: Record<string, string | undefined>, env: NodeJS.ProcessEnv): AgentAdapter[] {
  const asked = values.agents?.split(",").map((a) => a.trim()).filter((a) => a !== "");
  const names = asked ?? Object.keys(AGENT_EXECUTABLES).filter((name) => AGENT_EXECUTABLES[name] === undefined || onPath(AGENT_EXECUTABLES[name], env));
  const adapters: AgentAdapter[] = [];
  for (const name of names) {
    if (!Object.hasOwn(AGENT_EXECUTABLES, name)) throw new UsageError(`unknown agent '${name}' in --agents (known: ${Object.keys(AGENT_EXECUTABLES).join(", ")})`);
    const executable = AGENT_EXECUTABLES[name];
    if (executable !== undefined && !onPath(executable, env)) throw new CommandFailed(`no agent available: ${name} needs ${executable} on PATH, and it is not there`);
    adapters.push(makeAgent(name, values, env));
  }
  if (adapters.length === 0) throw new CommandFailed("no agent available: --agents names none");
  return adapters;
}

function makeAgent(name: string, values: Record<string, string | undefined>, env: NodeJS.ProcessEnv): AgentAdapter {
  if (name === "command") {
    // Without --command the prompt itself is the script: `sh -s` reads it from stdin.
    return commandAgent({ argv: values.command === undefined ? ["sh", "-s"] : ["sh", "-c", values.command] });
  }
  if (name === "claude-code") return claudeCodeAgent();
  // codex itself ignores OPENAI_BASE_URL (it speaks to OpenAI by its own configuration); the
  // worker honours it, as a Responses API server such as a proxy or a self-hosted model.
  const base = env.OPENAI_BASE_URL?.trim();
  return codexAgent(base ? { providerBaseUrl: base } : {});
}

export async function worker(values: Record<string, string | undefined>, env: NodeJS.ProcessEnv): Promise<number> {
  const server = (values.server ?? (env.FOREMAN_URL?.trim() || DEFAULT_SERVER)).replace(/\/+$/, "");
  try {
    new URL(server);
  } catch {
    throw new UsageError(`--server must be a URL such as ${DEFAULT_SERVER}, not '${server}'`);
  }
  const token = await registrationToken(values, env);
  const concurrency = positiveInteger("concurrency", values.concurrency, 1, 64);
  const connectTimeoutMs = positiveInteger("connect-timeout", values["connect-timeout"], 30, 3600) * 1000;
  const agents = chooseAgents(values, env);
  const stateDir = path.resolve(values["state-dir"] ?? (env.FOREMAN_WORKER_STATE_DIR?.trim() || defaultStateDir(env)));
  const name = values.name ?? `${os.hostname()} worker`;
  const log = workerLogger(env.FOREMAN_LOG_LEVEL);

  const daemon = new WorkerDaemon({
    server,
    registrationToken: token,
    stateDir,
    name,
    concurrency,
    agents,
    labels: labels(values.labels),
    version: WORKER_VERSION,
    connectTimeoutMs,
    log,
    baseEnv: agentEnvironment(env),
  });

  // A child of the local pool: its parent gone (stdin ended) is a stop, so none outlives the server.
  if (env.FOREMAN_WORKER_STOP_WITH_STDIN === "1") {
    process.stdin.resume();
    process.stdin.once("end", () => daemon.stopNow());
    process.stdin.once("error", () => daemon.stopNow());
  }

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    log.info({ signal }, signals === 1 ? "draining (a second signal stops now)" : "stopping now");
    if (signals === 1) daemon.drain();
    else daemon.stopNow();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  let started;
  try {
    started = await daemon.start();
  } catch (error) {
    if (error instanceof RegistrationFailed) throw new CommandFailed(error.message, { cause: error });
    throw error;
  }
  log.info({ worker_id: started.workerId, again: started.again, server, agents: agents.map((a) => a.name), concurrency, state_dir: stateDir }, "worker registered");
  const code = await daemon.run(started);
  // Done: nothing is left to wait for (stdin, when watched, and the HTTP agent's idle sockets
  // would keep the process a while longer).
  log.flush();
  process.exit(code);
}
