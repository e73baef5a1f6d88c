import { isIP } from 'node:net';
import { redactUrl } from './redact';

/**
 * Parsers for the value formats used in the environment (.env.template lists them).
 * Each returns the parsed value or throws an Error whose message says what a valid value is;
 * the schema (env.ts) prefixes it with the variable's name. A value that may hold a secret (a
 * URL) is quoted back redacted.
 */

/** A `host:port` pair. IPv6 hosts are written in brackets: `[::1]:8000`. */
export interface HostPort {
  host: string;
  port: number;
}

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Parses `500ms`, `30s`, `5m`, `2h`, `30d` into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) throw new Error(`expected a duration like 500ms, 30s, 5m, 2h or 30d, got '${text}'`);
  const ms = Number(m[1]) * DURATION_UNITS[m[2]];
  if (!Number.isFinite(ms) || ms <= 0) throw new Error(`must be more than zero, got '${text}'`);
  return Math.round(ms);
}

/** Parses `host:port`, `[v6]:port` or `:port` (all interfaces). Port 0 means "any free port". */
export function parseHostPort(text: string): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(text.trim());
  if (!m) throw new Error(`expected host:port (e.g. 127.0.0.1:8000), got '${text}'`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`port must be 0-65535, got ${port}`);
  const host = m[1] ?? (m[2] || '0.0.0.0');
  return { host, port };
}

/** Splits a comma-separated list, dropping blanks. */
export function parseList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** Parses a tunnel URL: `ws://` or `wss://` with a host. */
export function parseTunnelUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`expected a ws:// or wss:// URL, got '${redactUrl(text)}'`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new Error(`expected a ws:// or wss:// URL, got '${redactUrl(text)}'`);
  }
  return url.toString();
}

/** GPU selection: `all`, `none`, or a list of indexes, `GPU-…` UUIDs and/or `MIG-…` UUIDs. */
export type GpuSelection = { kind: 'all' } | { kind: 'none' } | { kind: 'list'; ids: string[] };

export function parseGpuDevices(text: string): GpuSelection {
  const t = text.trim().toLowerCase();
  if (t === 'all') return { kind: 'all' };
  if (t === 'none' || t === '') return { kind: 'none' };
  const ids = parseList(text);
  for (const id of ids) {
    if (!/^\d+$/.test(id) && !/^(GPU|MIG)-[0-9a-fA-F-]+$/.test(id)) {
      throw new Error(
        `expected all, none, or GPU indexes/UUIDs like 0,1, GPU-8f6e… or MIG-4f1e…, got '${id}'`,
      );
    }
  }
  return { kind: 'list', ids };
}

/** `uid` or `uid:gid`, numeric. */
export function parseUidGid(text: string): { uid: number; gid?: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(text.trim());
  if (!m) throw new Error(`expected a numeric uid or uid:gid like 1000:1000, got '${text}'`);
  return { uid: Number(m[1]), gid: m[2] === undefined ? undefined : Number(m[2]) };
}

/** Free-space threshold: a percentage (`5%`) or a size (`10GB`, `500MB`, bytes). */
export type DiskThreshold = { percent: number } | { bytes: number };

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/** A size in bytes: `1073741824`, `500MB`, `1GiB` (units b, kb, mb, gb, tb, kib, mib, gib, tib); undefined if not one. */
function sizeOf(text: string): number | undefined {
  const size = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(text.trim());
  const unit = size ? SIZE_UNITS[size[2].toLowerCase()] : undefined;
  return size && unit !== undefined ? Math.round(Number(size[1]) * unit) : undefined;
}

export function parseDiskThreshold(text: string): DiskThreshold {
  const t = text.trim();
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(t);
  if (pct) {
    const percent = Number(pct[1]);
    if (percent >= 100) throw new Error(`a percentage must be below 100, got '${text}'`);
    return { percent };
  }
  const bytes = sizeOf(t);
  if (bytes === undefined) {
    throw new Error(`expected a percentage like 5% or a size like 10GB, got '${text}'`);
  }
  return { bytes };
}

/** A size of at least one byte: `1GiB`, `500MB`, `1048576`. */
export function parseSize(text: string): number {
  const bytes = sizeOf(text);
  if (bytes === undefined)
    throw new Error(`expected a size like 1GiB, 500MB or 1048576, got '${text}'`);
  if (bytes < 1) throw new Error(`must be at least 1 byte, got '${text}'`);
  return bytes;
}

/**
 * Host names a client may use to reach the API (API_HOSTS): a comma-separated list of DNS names
 * or IP addresses, without scheme or port (any port is accepted). Lower-cased, a final dot
 * dropped, IPv6 without brackets.
 */
export function parseHostNames(text: string): string[] {
  return parseList(text).map((item) => {
    const name = item
      .toLowerCase()
      .replace(/^\[(.*)\]$/, '$1')
      .replace(/\.$/, '');
    const dns =
      /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
    if (!dns.test(name) && isIP(name) === 0) {
      throw new Error(
        `expected host names or IP addresses without scheme or port, like front.example.org,gpu1; got '${item}'`,
      );
    }
    return name;
  });
}

/**
 * Extra tunnel targets, `name=host:port,...` (TUNNEL_TARGETS). `api` is always API_LISTEN and
 * cannot be redefined; names are what the relay may ask for, never addresses.
 */
export function parseTargets(text: string): Record<string, HostPort> {
  const out: Record<string, HostPort> = {};
  for (const item of parseList(text)) {
    const m = /^([a-z0-9][a-z0-9-]{0,62})=(.+)$/.exec(item);
    if (!m) throw new Error(`expected name=host:port (name in [a-z0-9-]), got '${item}'`);
    if (m[1] === 'api') throw new Error("'api' is always API_LISTEN; choose another name");
    if (out[m[1]]) throw new Error(`target '${m[1]}' is given twice`);
    out[m[1]] = parseHostPort(m[2]);
  }
  return out;
}

/** Where BullMQ's Redis is: one server, or a master found through Redis Sentinel. */
export type RedisTarget = {
  username?: string;
  password?: string;
  db: number;
  tls: boolean;
} & (
  | { kind: 'direct'; host: string; port: number }
  | {
      kind: 'sentinel';
      /** The sentinels to ask, in order. */
      sentinels: { host: string; port: number }[];
      /** The master's name as the sentinels know it (`sentinel monitor <name> ...`). */
      name: string;
      sentinelPassword?: string;
    }
);

const REDIS_URL_HELP =
  'redis://[user:password@]host:port[/db], rediss://... (TLS), or ' +
  'redis+sentinel://[user:password@]host:port[,host:port...]/<master-name>[/db][?sentinelPassword=...]';

function parseHostPortDefault(text: string, defaultPort: number): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(text);
  const port = m?.[2] === undefined ? defaultPort : Number(m[2]);
  if (!m || port < 1 || port > 65535) throw new Error(`bad host:port '${text}'`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

/**
 * Parses REDIS_URL. `redis-sentinel://` is accepted as a synonym of `redis+sentinel://`.
 * Written by hand because WHATWG URL cannot hold the comma-separated host list that Sentinel
 * needs; user and password are percent-decoded as in a URL.
 */
export function parseRedisUrl(text: string): RedisTarget {
  const m =
    /^(redis|rediss|redis\+sentinel|redis-sentinel|rediss\+sentinel):\/\/(?:([^@/]*)@)?([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/.exec(
      text.trim(),
    );
  if (!m) throw new Error(`expected ${REDIS_URL_HELP}, got '${redactUrl(text)}'`);
  const [, scheme, auth, hosts, pathPart = '', query = ''] = m;
  let username: string | undefined;
  let password: string | undefined;
  if (auth !== undefined) {
    const i = auth.indexOf(':');
    const u = i < 0 ? auth : auth.slice(0, i);
    const p = i < 0 ? undefined : auth.slice(i + 1);
    username = u ? decodeURIComponent(u) : undefined;
    password = p ? decodeURIComponent(p) : undefined;
  }
  const segments = pathPart.split('/').filter(Boolean);
  const params = new URLSearchParams(query);
  const tls = scheme.startsWith('rediss') || params.get('tls') === '1';
  const dbOf = (s: string | undefined) => {
    if (s === undefined) return 0;
    if (!/^\d{1,2}$/.test(s)) throw new Error(`database must be a number 0-99, got '${s}'`);
    return Number(s);
  };
  const wrap = (fn: () => RedisTarget): RedisTarget => {
    try {
      return fn();
    } catch (err) {
      throw new Error(`${(err as Error).message}: expected ${REDIS_URL_HELP}`);
    }
  };
  if (scheme === 'redis' || scheme === 'rediss') {
    return wrap(() => {
      if (hosts.includes(',')) throw new Error('several hosts need redis+sentinel://');
      if (segments.length > 1) throw new Error(`unexpected path '${pathPart}'`);
      const hp = parseHostPortDefault(hosts || '127.0.0.1', 6379);
      return { kind: 'direct', ...hp, username, password, db: dbOf(segments[0]), tls };
    });
  }
  return wrap(() => {
    const sentinels = parseList(hosts).map((h) => parseHostPortDefault(h, 26379));
    if (sentinels.length === 0) throw new Error('no sentinel host given');
    if (segments.length === 0 || segments.length > 2 || !/^[\w.-]+$/.test(segments[0])) {
      throw new Error('give the master name as the path, e.g. /mymaster');
    }
    return {
      kind: 'sentinel',
      sentinels,
      name: segments[0],
      username,
      password,
      sentinelPassword: params.get('sentinelPassword') ?? undefined,
      db: dbOf(segments[1]),
      tls,
    };
  });
}
