import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';

/**
 * Ports that fetch() refuses to call ("bad port", the Fetch standard's port blocking: undici
 * fails with `TypeError: fetch failed`, cause `bad port`). 10080 lies in the first worker's
 * block, and each test file starts the block at the same place (pid % BLOCK), so a run whose
 * pid led there failed every file that took that many ports (seen in CI: four e2e files).
 */
export const FETCH_BAD_PORTS = new Set([
  1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102,
  103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465,
  512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993,
  995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668,
  6669, 6679, 6697, 10080,
]);

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
    if (port !== undefined && !given.has(port) && !FETCH_BAD_PORTS.has(port)) {
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
