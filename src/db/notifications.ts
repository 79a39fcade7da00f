// Wake-ups across replicas: PostgreSQL LISTEN/NOTIFY on one dedicated connection per server,
// on every channel of the in-process notifier. A notification carries a key (a workspace id;
// for claims, whose work was queued), never data; whoever is woken reads the database. NOTIFY
// sent inside a transaction is delivered when it commits, so nobody is woken before the change
// is visible. A lost connection is reopened with back-off; since notifications sent meanwhile
// are lost, every waiter is woken to look again once it is back (and the waiters' own poll
// backstop covers the gap too).
import pg from "pg";

export interface NotificationLogger {
  warn(fields: object, message: string): void;
  info(fields: object, message: string): void;
}

/** Who hears the notifications: the in-process notifier (db/ does not import core/). */
export interface NotificationTarget {
  /** The channels to listen on. */
  readonly channels: readonly string[];
  /** A NOTIFY on `channel` with `payload` (the key, and maybe more after a space) arrived. */
  deliver(channel: string, payload: string): void;
  /** The connection is back: wake everyone, for what was sent while it was down is lost. */
  notifyAll(): void;
}

const MAX_BACKOFF_MS = 30_000;

export class PgListener {
  private client: pg.Client | undefined;
  private closed = false;
  private backoffMs = 500;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly url: string,
    private readonly target: NotificationTarget,
    private readonly logger: NotificationLogger,
  ) {}

  /** Connects and listens; throws if the first connection fails (the server is not up either). */
  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 10_000 });
    client.on("notification", (message) => {
      if (message.payload !== undefined) this.target.deliver(message.channel, message.payload);
    });
    client.on("error", (error) => this.lost(client, error));
    client.on("end", () => this.lost(client, new Error("connection ended")));
    await client.connect();
    for (const channel of this.target.channels) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.backoffMs = 500;
  }

  private lost(client: pg.Client, error: Error): void {
    if (this.closed || this.client !== client) return;
    this.client = undefined;
    client.end().catch(() => undefined);
    this.logger.warn({ err: error, retry_in_ms: this.backoffMs }, "lost the LISTEN connection; reconnecting");
    this.schedule();
  }

  private schedule(): void {
    this.retry = setTimeout(() => {
      this.connect().then(
        () => {
          this.logger.info({}, "LISTEN connection restored");
          this.target.notifyAll();
        },
        (error: unknown) => {
          this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
          this.logger.warn({ err: error, retry_in_ms: this.backoffMs }, "cannot reopen the LISTEN connection");
          if (!this.closed) this.schedule();
        },
      );
    }, this.backoffMs);
    this.retry.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }
}
