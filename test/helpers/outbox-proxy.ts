// A TCP proxy between a worker's outbox and the test server, which a test can cut (every
// connection dropped, new ones refused), point at another server (a restart on another port),
// or make lose answers (the request reaches the server, its answer never reaches the worker).
import net from "node:net";

export interface OutboxProxy {
  /** http://127.0.0.1:<port>, for the worker's client. */
  url: string;
  /** Connections made through it so far. */
  connections(): number;
  /** Drops every connection and refuses new ones until up(). */
  cut(): void;
  /** Forwards again, to `port` if given. */
  up(port?: number): void;
  /** The next `count` answers are lost: the connection is dropped as the server starts to answer. */
  loseAnswers(count: number): void;
  /** Answers lost so far. */
  lostAnswers(): number;
  close(): Promise<void>;
}

export const portOf = (url: string) => Number(new URL(url).port);

export async function startOutboxProxy(targetUrl: string): Promise<OutboxProxy> {
  let target = portOf(targetUrl);
  let open = true;
  let toLose = 0;
  let lost = 0;
  let made = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    made++;
    const upstream = net.connect(target, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.on("data", (chunk) => upstream.write(chunk));
    upstream.on("data", (chunk) => {
      if (toLose > 0) {
        toLose--;
        lost++;
        drop();
        return;
      }
      client.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  const dropAll = () => {
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => made,
    cut() {
      open = false;
      dropAll();
    },
    up(port?: number) {
      if (port !== undefined) target = port;
      open = true;
    },
    loseAnswers(count: number) {
      toLose = count;
    },
    lostAnswers: () => lost,
    async close() {
      open = false;
      dropAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
