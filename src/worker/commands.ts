// The worker's commands (stop a session, a TTY answer), from whichever channel brings them
// first: the ReceiveCommands stream, which this file keeps open (reconnecting with backoff), or
// the Heartbeat and GetTask responses that carry the same pending commands when the stream is
// down. Delivery is at least once, so each command id is acted on once and then acknowledged.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { WorkerCommand, WorkerService } from "../../gen/foreman/v1/worker_pb.js";
import { backoffMs, isTransient, sleep } from "./retry.js";

export interface CommandTarget {
  stopSession(sessionId: string, reason: string): void;
  answer(sessionId: string, requestId: string, response: string): void;
}

/** Ids acted on are remembered this long, so a command redelivered before its acknowledgement lands is not acted on twice. */
const REMEMBERED_IDS = 10_000;

export class Commands {
  private readonly done = new Set<string>();
  private unacknowledged: string[] = [];
  private acknowledging: Promise<void> | undefined;

  constructor(
    private readonly worker: Client<typeof WorkerService>,
    private readonly target: CommandTarget,
    private readonly log: Logger,
  ) {}

  /** Acts on each command not yet acted on, then acknowledges them. */
  handle(commands: readonly WorkerCommand[]): void {
    for (const command of commands) {
      if (!this.done.has(command.id)) {
        this.done.add(command.id);
        if (this.done.size > REMEMBERED_IDS) this.done.delete(this.done.values().next().value!);
        this.act(command);
      }
      this.unacknowledged.push(command.id);
    }
    if (commands.length > 0) this.acknowledge();
  }

  private act(command: WorkerCommand): void {
    const c = command.command;
    if (c.case === "stopSession") {
      this.log.info({ session_id: c.value.sessionId, reason: c.value.reason }, "stop command");
      this.target.stopSession(c.value.sessionId, c.value.reason);
    } else if (c.case === "ttyInputAnswer") {
      this.log.info({ session_id: c.value.sessionId, request_id: c.value.requestId }, "a question was answered");
      this.target.answer(c.value.sessionId, c.value.requestId, c.value.response);
    } else {
      this.log.warn({ command_id: command.id }, "a command this worker does not know; acknowledged and ignored");
    }
  }

  private acknowledge(): void {
    if (this.acknowledging !== undefined) return;
    this.acknowledging = (async () => {
      for (let attempt = 1; this.unacknowledged.length > 0; ) {
        const ids = this.unacknowledged.slice(0, 1000);
        try {
          await this.worker.acknowledgeCommands({ commandIds: ids });
          this.unacknowledged = this.unacknowledged.slice(ids.length);
          attempt = 1;
        } catch (error) {
          // Not acknowledged: the server sends them again, and the ids above are remembered.
          if (!isTransient(error)) {
            this.log.warn({ code: Code[ConnectError.from(error).code] }, "commands could not be acknowledged");
            this.unacknowledged = this.unacknowledged.slice(ids.length);
          } else await sleep(backoffMs(attempt++));
        }
      }
    })().finally(() => (this.acknowledging = undefined));
  }

  /** Keeps the command stream open until the signal aborts. */
  async stream(signal: AbortSignal): Promise<void> {
    for (let attempt = 1; !signal.aborted; ) {
      try {
        for await (const event of this.worker.receiveCommands({}, { signal })) {
          attempt = 1;
          if (event.event.case === "command") this.handle([event.event.value]);
        }
      } catch (error) {
        if (signal.aborted) return;
        const e = ConnectError.from(error);
        // An ended credential is the registration's business (the heartbeat sees it too).
        if (e.code === Code.Unauthenticated) this.log.error({ error: e.rawMessage }, "the command stream was refused");
        else this.log.warn({ code: Code[e.code], error: e.rawMessage, attempt }, "the command stream broke; reopening it");
      }
      await sleep(backoffMs(attempt++), signal);
    }
  }
}
