import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { LegitFigures } from './support';
import { legitLoop } from './support';

/** One HTTP exchange on a connection of its own, kept as long as the caller wants it. */
export interface Held {
  req: ClientRequest;
  res: IncomingMessage;
  status: number;
  /** Everything the body brought so far. */
  body(): string;
  /** Resolves once the server ended the answer (or the connection went). */
  ended: Promise<void>;
}

/**
 * Sends `method path` to 127.0.0.1:port on a new connection and resolves once the status and
 * headers came. With no answer within `timeoutMs` it rejects and drops the connection, or with
 * `keep`, resolves with status 0 and keeps it (a server that holds a request unanswered holds
 * it all the same). The body is read into body() unless the caller pauses `res`.
 */
export function hold(
  port: number,
  path: string,
  { method = 'GET', headers = {}, timeoutMs = 10_000, keep = false } = {},
): Promise<Held> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers, agent: false });
    const timer = setTimeout(() => {
      if (keep) {
        const res = undefined as unknown as IncomingMessage;
        return resolve({ req, res, status: 0, body: () => '', ended: new Promise(() => {}) });
      }
      req.destroy();
      reject(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on('response', (res) => {
      clearTimeout(timer);
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString('latin1')));
      const ended = new Promise<void>((done) => {
        res.once('end', done);
        res.once('close', done);
        res.once('error', done);
      });
      resolve({ req, res, status: res.statusCode ?? 0, body: () => text, ended });
    });
    req.end();
  });
}

/**
 * A raw client: connects to 127.0.0.1:port and sends `GET path`, reading (and dropping) what
 * comes unless the caller pauses it. Nothing waits for an answer.
 */
export async function rawGet(port: number, path: string): Promise<Socket> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  s.on('data', () => undefined);
  await once(s, 'connect');
  s.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  return s;
}

/** GET `path`, the whole body as latin1 text (undefined when no answer within `timeoutMs`). */
export async function getText(
  base: string,
  path: string,
  timeoutMs = 10_000,
): Promise<{ status: number; text: string } | undefined> {
  try {
    const res = await fetch(base + path, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: res.status, text: Buffer.from(await res.arrayBuffer()).toString('latin1') };
  } catch {
    return undefined;
  }
}

/**
 * A legitimate user while an attack runs: in turn `GET /test`, `GET /jobs/<other>/files` and
 * `POST /jobs` (a quick job), one at a time, each given `timeoutMs`, until stop() is called.
 */
export function legitimateClient(
  base: string,
  otherJob: string,
  timeoutMs = 5_000,
): { stop(): Promise<LegitFigures> } {
  const tries: (() => Promise<boolean>)[] = [
    async () => {
      const r = await fetch(`${base}/test`, { signal: AbortSignal.timeout(timeoutMs) });
      return r.status === 200 && (await r.text()).includes('"ok"');
    },
    async () => {
      const r = await fetch(`${base}/jobs/${otherJob}/files`, {
        signal: AbortSignal.timeout(timeoutMs),
      });
      return r.status === 200 && Array.isArray(((await r.json()) as { files: unknown }).files);
    },
    async () => {
      const r = await fetch(`${base}/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ experiment: 'quick', params: {} }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      await r.text();
      return r.status === 201;
    },
  ];
  return legitLoop((i) => tries[i % tries.length](), 50);
}

/** How many descriptors process `pid` has open. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** TCP sockets in CLOSE-WAIT whose local port is one of `ports` (this host, IPv4 and IPv6). */
export function closeWait(ports: number[]): number {
  let n = 0;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4 || f[3] !== '08') continue; // 08: CLOSE_WAIT
      const port = parseInt(f[1].split(':').pop() ?? '', 16);
      if (ports.includes(port)) n++;
    }
  }
  return n;
}
