import { create } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { notFound } from "../core/errors.js";
import { quote } from "../core/text.js";
import { waitForWake } from "../core/wait.js";
import {
  Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthCheckRequest,
  type HealthCheckResponse,
} from "../../gen/health/v1/health_pb.js";

export { HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/health/v1/health_pb.js";

/** Receives status changes for one service until the server shuts down. */
export interface HealthListener {
  change(status: ServingStatus): void;
  close(): void;
}

/**
 * Serving status per service name; "" is the whole server. Starts with ""
 * SERVING, like grpc-go's health server.
 */
export class HealthStatus {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly listeners = new Map<string, Set<HealthListener>>();
  private closed = false;

  constructor(initial: Iterable<[string, ServingStatus]> = [["", ServingStatus.SERVING]]) {
    for (const [service, status] of initial) {
      this.statuses.set(service, status);
    }
  }

  get isShutdown(): boolean {
    return this.closed;
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  entries(): [string, ServingStatus][] {
    return [...this.statuses];
  }

  /** Ignored after shutdown(), so a draining server never reports SERVING again. */
  set(service: string, status: ServingStatus): void {
    if (this.closed || this.statuses.get(service) === status) {
      return;
    }
    this.statuses.set(service, status);
    for (const listener of this.listeners.get(service) ?? []) {
      listener.change(status);
    }
  }

  /** Marks everything NOT_SERVING and ends every Watch stream. */
  shutdown(): void {
    if (this.closed) {
      return;
    }
    for (const service of this.statuses.keys()) {
      this.set(service, ServingStatus.NOT_SERVING);
    }
    this.closed = true;
    for (const set of this.listeners.values()) {
      for (const listener of set) {
        listener.close();
      }
    }
    this.listeners.clear();
  }

  /** Returns an unsubscribe function. After shutdown the listener is closed at once. */
  subscribe(service: string, listener: HealthListener): () => void {
    if (this.closed) {
      listener.close();
      return () => {};
    }
    let set = this.listeners.get(service);
    if (!set) {
      set = new Set();
      this.listeners.set(service, set);
    }
    set.add(listener);
    return () => {
      const current = this.listeners.get(service);
      current?.delete(listener);
      if (current?.size === 0) {
        this.listeners.delete(service);
      }
    };
  }
}

function response(status: ServingStatus): HealthCheckResponse {
  return create(HealthCheckResponseSchema, { status });
}

async function* watch(health: HealthStatus, req: HealthCheckRequest, ctx: HandlerContext) {
  const queue: ServingStatus[] = [];
  let closed = false;
  let wake: (() => void) | undefined;
  const unsubscribe = health.subscribe(req.service, {
    change(status) {
      queue.push(status);
      wake?.();
    },
    close() {
      closed = true;
      wake?.();
    },
  });
  const signal = ctx.signal;
  try {
    let last = health.get(req.service) ?? ServingStatus.SERVICE_UNKNOWN;
    yield response(last);
    for (;;) {
      // Drain before checking `closed` so the final NOT_SERVING reaches the client.
      let next: ServingStatus | undefined;
      while ((next = queue.shift()) !== undefined) {
        if (next !== last) {
          last = next;
          yield response(next);
        }
      }
      if (closed || signal.aborted) {
        return;
      }
      await waitForWake(signal, undefined, (w) => (wake = w));
    }
  } finally {
    unsubscribe();
  }
}

/** grpc.health.v1.Health, per https://github.com/grpc/grpc/blob/master/doc/health-checking.md */
export function registerHealthService(router: ConnectRouter, health: HealthStatus): void {
  router.service(Health, {
    check(req) {
      const status = health.get(req.service);
      if (status === undefined) {
        // The message is logged: the name is anyone's (Check needs no login), so escaped and cut.
        const name = quote(req.service);
        throw notFound("service", name, `unknown service ${name}`);
      }
      return response(status);
    },
    watch: (req, ctx) => watch(health, req, ctx),
    list() {
      return {
        statuses: Object.fromEntries(health.entries().map(([service, status]) => [service, response(status)])),
      };
    },
  });
}
