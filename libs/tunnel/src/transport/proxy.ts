import { Agent as HttpAgent, request } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';

type Done = (err: Error | null, socket?: Socket) => void;

/**
 * Opens a TCP tunnel through an HTTP CONNECT proxy (HTTPS_PROXY) to `host:port`. The proxy
 * sees only the target address; the tunnel's own handshake and frames pass through opaque.
 * The CONNECT must be answered within `timeoutMs` of the call (TCP connect to the proxy
 * included): ws's handshake timeout starts only once the agent hands over a socket, which is
 * after this answer, so a proxy that accepted and said nothing (or a path that went silent)
 * kept the dialer waiting for ever, and the relay never reconnected.
 */
function connectVia(proxy: URL, host: string, port: number, timeoutMs: number, done: Done): void {
  const headers: Record<string, string> = { host: `${host}:${port}` };
  if (proxy.username) {
    const cred = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
    headers['proxy-authorization'] = `Basic ${Buffer.from(cred).toString('base64')}`;
  }
  const req = request({
    host: proxy.hostname,
    port: Number(proxy.port || 80),
    method: 'CONNECT',
    path: `${host}:${port}`,
    headers,
  });
  let settled = false;
  const settle = (err: Error | null, socket?: Socket): void => {
    if (settled) return void socket?.destroy();
    settled = true;
    clearTimeout(timer);
    done(err, socket);
  };
  const timer = setTimeout(() => {
    settle(
      new Error(
        `proxy ${proxy.host} did not answer CONNECT ${host}:${port} within ${timeoutMs} ms`,
      ),
    );
    req.destroy();
  }, timeoutMs);
  req.once('connect', (res, socket) => {
    if (res.statusCode === 200) return settle(null, socket);
    socket.destroy();
    settle(
      new Error(`proxy ${proxy.host} refused CONNECT ${host}:${port}: HTTP ${res.statusCode}`),
    );
  });
  req.once('error', (err) => settle(err));
  req.end();
}

interface ConnOpts {
  host?: string | null;
  port?: number | string | null;
  servername?: string;
}

/**
 * An http(s) Agent for `ws` that reaches `targetUrl` through the CONNECT proxy `proxyUrl`;
 * for wss:// the TLS session to the listener runs inside the proxied connection. Each CONNECT
 * is answered within `timeoutMs` or fails.
 */
export function proxyAgent(proxyUrl: string, targetUrl: string, timeoutMs: number): HttpAgent {
  const proxy = new URL(proxyUrl);
  const secure = new URL(targetUrl).protocol === 'wss:';
  const open = (options: ConnOpts, done: Done): void => {
    const host = options.host ?? 'localhost';
    const port = Number(options.port ?? (secure ? 443 : 80));
    connectVia(proxy, host, port, timeoutMs, (err, socket) => {
      if (err || !socket) return done(err ?? new Error('proxy gave no socket'));
      if (!secure) return done(null, socket);
      const tlsOpts = {
        ...(options as ConnectionOptions),
        socket,
        servername: options.servername ?? host,
      };
      done(null, tlsConnect(tlsOpts));
    });
  };
  const agent = secure ? new HttpsAgent() : new HttpAgent();
  // Node's Agent accepts a callback-style createConnection (returning undefined): it waits for
  // the CONNECT answer before sending the WebSocket upgrade through the proxied socket.
  (agent as unknown as { createConnection: (o: ConnOpts, d: Done) => undefined }).createConnection =
    (o, d) => {
      open(o, d);
      return undefined;
    };
  return agent;
}
