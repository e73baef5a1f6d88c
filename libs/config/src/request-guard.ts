import { isIPv4, isIPv6 } from 'node:net';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { closeIfUnread } from './http-close';

/** Methods that only read: their Origin is not checked (a browser cannot read the answer). */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * The names an HTTP listener answers to: loopback (`localhost`, 127.0.0.0/8, ::1) with any
 * port, its listen address's host, and the names configured for it: on the worker's API,
 * API_LISTEN's host and API_HOSTS (everything the API serves, through the tunnel included,
 * passes here first); on the relay's admin listener, ADMIN_LISTEN's host and ADMIN_HOSTS.
 */
export class HostPolicy {
  private readonly names: ReadonlySet<string>;

  constructor(listenHost: string, hosts: readonly string[]) {
    this.names = new Set(['localhost', bare(listenHost), ...hosts]);
  }

  /**
   * True when `hostHeader` (`name`, `name:port`, `[v6]:port`) names this listener. Any port
   * is accepted: requests to the worker through the relay carry the front's port
   * (RELAY_LISTEN), which the worker cannot know.
   *
   * Why this stops DNS rebinding: a page on attacker.example whose name is made to resolve to
   * 127.0.0.1 still sends `Host: attacker.example`, a name not on this list; only a name the
   * operator chose (or a loopback one, which no other site can be served from) passes.
   */
  allowsHost(hostHeader: string): boolean {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+))(?::\d{1,5})?$/.exec(hostHeader.trim());
    if (!m) return false;
    return this.allowsName(m[1] ?? m[2]);
  }

  /**
   * True when the `Origin` header names one of the allowed hosts (any scheme and port). `null`
   * (a sandboxed frame, a file: page) and anything unparsable are not allowed.
   */
  allowsOrigin(origin: string): boolean {
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      return false;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
    return this.allowsName(url.hostname);
  }

  private allowsName(raw: string): boolean {
    const name = bare(raw).toLowerCase().replace(/\.$/, '');
    return isLoopback(name) || this.names.has(name);
  }
}

function bare(host: string): string {
  return host.replace(/^\[(.*)\]$/, '$1');
}

function isLoopback(name: string): boolean {
  if (name === 'localhost') return true;
  if (isIPv4(name)) return name.startsWith('127.');
  if (isIPv6(name)) return name === '::1' || /^::ffff:127\./.test(name);
  return false;
}

function refuse(req: Request, res: Response, status: 403 | 421, message: string): void {
  // The body of a refused request is not read: the connection closes after the answer.
  closeIfUnread(req, res);
  const error = status === 403 ? 'Forbidden' : 'Misdirected Request';
  res.status(status).json({ statusCode: status, error, message });
}

/** What a refusal names: the listener and the variables that set its names. */
export interface GuardWords {
  /** `this API`, `the relay's admin listener`. */
  listener: string;
  /** The listen variable (`API_LISTEN`) and the list of more names (`API_HOSTS`). */
  listen: string;
  hosts: string;
  /** The daemon that reads `hosts` (`worker`). */
  daemon: string;
  /** What pages on other sites may not do: `change jobs`. */
  changes: string;
}

/** The worker's API (API_LISTEN, and RELAY_LISTEN through the tunnel). */
export const API_GUARD_WORDS: GuardWords = {
  listener: 'this API',
  listen: 'API_LISTEN',
  hosts: 'API_HOSTS',
  daemon: 'worker',
  changes: 'change jobs',
};

/**
 * Express middleware, mounted before everything else a daemon's HTTP listener serves (routes,
 * /queues, the body parsers): a request whose Host is not one of the listener's names gets
 * 421; a state-changing request (any method but GET, HEAD, OPTIONS) whose Origin is another
 * site gets 403. A request without Origin (curl, the CLI, the front's server-side code,
 * Prometheus) is not a browser's cross-site request and passes; without Host (HTTP/1.0) it is
 * not a browser's either.
 *
 * Why the Origin check is needed although the API sends no CORS headers: a multipart or
 * text/plain POST is a "simple" request, sent by a browser without a preflight, so a page on
 * any site could submit jobs to a worker on the visitor's machine; only its Origin tells.
 */
export function requestGuard(
  policy: HostPolicy,
  words: GuardWords = API_GUARD_WORDS,
): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const host = req.headers.host;
    if (host !== undefined && !policy.allowsHost(host)) {
      return refuse(
        req,
        res,
        421,
        `Host '${host.slice(0, 100)}' is not a name of ${words.listener}: it answers to loopback ` +
          `names, ${words.listen}'s host and ${words.hosts}. If clients rightly reach it by this ` +
          `name, add the name to ${words.hosts} on the ${words.daemon} (comma-separated).`,
      );
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !SAFE_METHODS.has(req.method) && !policy.allowsOrigin(origin)) {
      return refuse(
        req,
        res,
        403,
        `cross-origin ${req.method} from '${origin.slice(0, 100)}' refused: pages on other ` +
          `sites may not ${words.changes}. If a web app at that origin should, add its host ` +
          `name to ${words.hosts} on the ${words.daemon}.`,
      );
    }
    next();
  };
}
