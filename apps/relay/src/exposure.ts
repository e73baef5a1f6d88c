import { BlockList, isIP } from 'node:net';

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** Whether `host` (an IP as bound, or `localhost`) can be reached only from this host. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost') return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h)?.[1];
  if (mapped) return LOOPBACK.check(mapped, 'ipv4');
  const family = isIP(h);
  return family !== 0 && LOOPBACK.check(h, family === 4 ? 'ipv4' : 'ipv6');
}

/** One of the relay's plain TCP listeners: RELAY_LISTEN (target `api`) or a RELAY_FORWARDS entry. */
export interface RelayListener {
  /** `RELAY_LISTEN`, or `RELAY_FORWARDS <name>`. */
  name: string;
  /** The worker target its connections are relayed to. */
  target: string;
  host: string;
  port: number;
}

/**
 * The warning for a listener that is not on loopback, undefined for one that is. Whoever can
 * open a TCP connection to it reaches the worker's target through the tunnel: the tunnel key
 * authenticates the two daemons, never the clients of these listeners.
 */
export function exposureWarning(l: RelayListener): string | undefined {
  if (isLoopback(l.host)) return undefined;
  const address = `${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`;
  return (
    `${l.name} listens on ${address}, not on loopback: anyone who can reach this host there ` +
    `reaches the worker's target '${l.target}' through the tunnel, unauthenticated. ` +
    `Bind 127.0.0.1 unless that is meant, and then firewall the port.`
  );
}
