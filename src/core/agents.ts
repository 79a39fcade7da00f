// The agents Foreman can run, as lower-case AgentType names.
export const AGENT_TYPES = ["claude_code", "codex", "gemini_cli", "opencode", "aider", "amp", "command"] as const;
export type AgentTypeName = (typeof AGENT_TYPES)[number];

export const DEFAULT_AGENT_TYPE: AgentTypeName = "claude_code";

export function isAgentType(name: string): name is AgentTypeName {
  return (AGENT_TYPES as readonly string[]).includes(name);
}
