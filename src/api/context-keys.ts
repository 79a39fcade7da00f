// Values every handler can read from its call's context.
import { createContextKey } from "@connectrpc/connect";
import type { Logger } from "../logger.js";

/** Fires when the server begins a graceful shutdown: long-lived streams end cleanly on it. */
export const shutdownSignalKey = createContextKey<AbortSignal>(new AbortController().signal, {
  description: "server shutdown",
});

export const requestIdKey = createContextKey<string>("", { description: "request id" });

export const loggerKey = createContextKey<Logger | undefined>(undefined, { description: "the call's logger" });
