import pc from 'picocolors';
import { parseHostPort, readEnvironment } from '../../../libs/config/src';

/**
 * What the commands that call a daemon share: where the worker API and the relay's admin
 * address are, one fetch that says "nothing answers" or "no answer in time" plainly, and colour.
 */

/** What `--url` and `--env-file` say; `status` and `jobs` take the same options. */
export interface ApiOptions {
  url?: string;
  envFile?: string;
}

/**
 * `--timeout SECONDS`: how long to wait for a daemon's answer; 0 waits forever. Always set: the
 * option's default is given where the option is declared (main.ts).
 */
export interface TimeoutOptions {
  timeout: number;
}

type Colors = ReturnType<typeof pc.createColors>;

/** Colour only on a terminal, and never with NO_COLOR. */
export function colors(stream: NodeJS.WriteStream = process.stdout): Colors {
  return pc.createColors(Boolean(stream.isTTY) && !process.env.NO_COLOR);
}

/**
 * The URL to reach a daemon's listener from this host: a wildcard address (0.0.0.0, ::) is
 * called on 127.0.0.1, and an IPv6 address is bracketed (`http://[::1]:9464`).
 */
export function localUrl(host: string, port: number | string): string {
  const h = host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}

/** localUrl of a `host:port` setting (`fallback` when it is empty). */
export function listenUrl(hostPort: string, fallback = ''): string {
  const { host, port } = parseHostPort(hostPort || fallback);
  return localUrl(host, port);
}

/** Where the job API is, and which setting said so (for the "nothing answers" line). */
export interface ApiTarget {
  url: string;
  /** `--url`, `API_LISTEN` (the worker), `RELAY_LISTEN` (the worker through the relay), or the default. */
  from: '--url' | 'API_LISTEN' | 'RELAY_LISTEN' | 'default';
}

/**
 * The job API's base URL: `--url`; else API_LISTEN from the environment or the env file (a
 * wildcard address is reached on loopback); else, with a relay's configuration (RELAY_LISTEN or
 * ADMIN_LISTEN set, no API_LISTEN: the front host), RELAY_LISTEN, which carries every request
 * to the worker (127.0.0.1:8001 when only ADMIN_LISTEN is set); else http://127.0.0.1:8000.
 */
export function apiTarget(opts: ApiOptions): ApiTarget {
  if (opts.url) return { url: opts.url.replace(/\/+$/, ''), from: '--url' };
  const env = readEnvironment(process.env, opts.envFile);
  if (env.API_LISTEN) return { url: listenUrl(env.API_LISTEN, ''), from: 'API_LISTEN' };
  if (isRelayConfig(env)) {
    return { url: listenUrl(env.RELAY_LISTEN ?? '', '127.0.0.1:8001'), from: 'RELAY_LISTEN' };
  }
  return { url: 'http://127.0.0.1:8000', from: 'default' };
}

/** The job API's base URL (apiTarget's). */
export function apiUrl(opts: ApiOptions): string {
  return apiTarget(opts).url;
}

/** A relay's configuration: RELAY_LISTEN or ADMIN_LISTEN set, and no API_LISTEN (a worker's). */
export function isRelayConfig(env: Record<string, string | undefined>): boolean {
  return !env.API_LISTEN && Boolean(env.RELAY_LISTEN || env.ADMIN_LISTEN);
}

/** The relay's admin URL: `--relay-url`, else ADMIN_LISTEN, else http://127.0.0.1:9464. */
export function relayAdminUrl(opts: ApiOptions & { relayUrl?: string }): string {
  if (opts.relayUrl) return opts.relayUrl.replace(/\/+$/, '');
  return listenUrl(readEnvironment(process.env, opts.envFile).ADMIN_LISTEN ?? '', '127.0.0.1:9464');
}

/** The body of a 4xx/5xx as one line: the API's `{"message"}` when there is one. */
export async function errorText(res: Response): Promise<string> {
  const text = await res.text();
  try {
    const body = JSON.parse(text) as { message?: unknown };
    const m = body.message;
    if (typeof m === 'string') return `${res.status}: ${m}`;
    if (Array.isArray(m)) return `${res.status}: ${m.join('; ')}`;
  } catch {
    /* not JSON */
  }
  return `${res.status}: ${text.slice(0, 200)}`;
}

/** A request that got no response: nothing answers (with the cause), or not in time. */
export class NoAnswerError extends Error {
  constructor(
    message: string,
    /** `ECONNREFUSED`, `ENOTFOUND`, ... or `timeout`. */
    readonly code: string,
  ) {
    super(message);
  }
}

/** The network error's code (ECONNREFUSED, ...) that fetch hides in `cause`. */
function causeOf(err: unknown): string {
  const c = (err as { cause?: { code?: string; message?: string; errors?: { code?: string }[] } })
    .cause;
  return c?.code ?? c?.errors?.[0]?.code ?? c?.message ?? (err as Error).message;
}

/**
 * fetch, with "nothing answers" and "no answer in time" said plainly (a NoAnswerError) instead of
 * a stack. The timeout covers the whole exchange, except for a `stream` (events, logs, a file):
 * there it ends once the response headers came, so a long stream is never cut.
 */
export async function call(
  url: string,
  { timeout: seconds }: TimeoutOptions,
  init: RequestInit = {},
  stream = false,
): Promise<Response> {
  const abort = new AbortController();
  // Past setTimeout's range (about 24.8 days) it would fire at once: count that as no limit.
  const ms = seconds * 1000;
  const timer = ms > 0 && ms < 2 ** 31 ? setTimeout(() => abort.abort(), ms) : undefined;
  const late = () =>
    new NoAnswerError(
      `no answer from ${url} within ${seconds} s: is the worker stuck? ` +
        `Use --timeout SECONDS to wait longer (0: no limit).`,
      'timeout',
    );
  try {
    let res: Response;
    try {
      res = await fetch(url, { ...init, signal: abort.signal });
    } catch (err) {
      if (abort.signal.aborted) throw late();
      const cause = causeOf(err);
      if (cause === 'unexpected redirect') {
        throw new Error(
          `${url} answered with a redirect, which the job API never does: not followed ` +
            `(is --url the job API?)`,
        );
      }
      throw new NoAnswerError(
        `nothing answers at ${new URL(url).origin} (${cause}): is the worker running? Use --url.`,
        cause,
      );
    }
    if (stream && res.ok) return res;
    // Read the body under the same deadline, then hand it over as a response of its own.
    const body = await res.arrayBuffer().catch((err: unknown) => {
      throw abort.signal.aborted ? late() : err;
    });
    const empty = [101, 204, 205, 304].includes(res.status);
    return new Response(empty ? null : body, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  } finally {
    clearTimeout(timer);
  }
}
