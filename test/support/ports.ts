import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';

/** Ports this test process handed out: never handed out twice. */
const given = new Set<number>();

/**
 * Where test ports come from: below the kernel's ephemeral range. A port the OS picks for
 * listen(0) lies in that range, and between freePort() and the daemon's bind, any outgoing
 * connection on the machine (a fetch, a Redis or Docker client) may take it as its local port:
 * the daemon then fails with EADDRINUSE. Ports below the range are never given to outgoing
 * connections. Each Jest worker takes its own block, so parallel workers never race for one.
 */
const BLOCK = 2_000;
const FIRST = 10_000;

/** The low end of the kernel's ephemeral port range. */
export function ephemeralLow(): number {
  try {
    return Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
  } catch {
    return 32_768; // Linux's default; elsewhere, the bind check below still finds a free port
  }
}

// GPU_SIDECAR_TEST_PORT_BLOCK shifts the block, so two test runs on one machine (two checkouts,
// each run in band as Jest worker 1) never hand out the same ports.
const worker =
  Math.max(1, Number(process.env.JEST_WORKER_ID ?? 1)) +
  Math.max(0, Number(process.env.GPU_SIDECAR_TEST_PORT_BLOCK ?? 0) || 0);
const blocks = Math.floor((ephemeralLow() - FIRST) / BLOCK);
const block = blocks > 0 ? FIRST + ((worker - 1) % blocks) * BLOCK : 0;
let cursor = process.pid % BLOCK;

/** Binds `port` (0: one the OS picks) on `host` and lets it go: the port, or undefined if taken. */
function tryBind(port: number, host: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(undefined));
    srv.listen(port, host, () => {
      const bound = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(bound));
    });
  });
}

/**
 * A TCP port that was free on every address a moment ago, from this worker's block below the
 * ephemeral range (or, where there is no room below it, one the OS picks on 127.0.0.1). A port
 * is never returned twice in one test process (the OS may pick the same one again before the
 * caller's daemon binds the first: seen in CI).
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; ; tries++) {
    const fromBlock = block > 0 && tries < BLOCK;
    const port = fromBlock
      ? await tryBind(block + (cursor++ % BLOCK), '0.0.0.0')
      : await tryBind(0, '127.0.0.1');
    if (port === undefined && !fromBlock) throw new Error('cannot bind any port on 127.0.0.1');
    if (port !== undefined && !given.has(port)) {
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
