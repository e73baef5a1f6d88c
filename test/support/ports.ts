import { createServer } from 'node:net';

/** Ports this test process handed out: never handed out twice. */
const given = new Set<number>();

function osPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it). The OS may pick the same
 * port again for the next call, before the caller's daemon binds the first one (seen in CI: a
 * relay given its tunnel's port), so a port is never returned twice in one test process.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await osPort();
    if (!given.has(port)) {
      given.add(port);
      return port;
    }
  }
}

/** Resolves once something accepts TCP connections on host:port, or rejects after `timeoutMs`. */
export async function waitForPort(
  port: number,
  host = '127.0.0.1',
  timeoutMs = 15_000,
): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, host);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (up) return;
    if (Date.now() > deadline)
      throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
