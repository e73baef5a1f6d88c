/* eslint-disable @typescript-eslint/no-explicit-any -- answers are JSON of any shape */
import { request, type IncomingHttpHeaders } from 'node:http';

/*
 * Requests for test/e2e/openapi.e2e-spec.ts, sent with node:http so that every header (Host,
 * Origin, Range) goes out as given and every answer comes back as bytes, to be checked against
 * the OpenAPI document by route (its template, `/jobs/{id}`) and status.
 */

/** One request; the route is the document's template (`/jobs/{id}`), filled from `params`. */
export interface Call {
  method?: string;
  route: string;
  params?: Record<string, string>;
  /** Put the params in the path as they are (slashes and all), not percent-encoded. */
  raw?: boolean;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** Stop reading once the body so far satisfies this (a stream that does not end). */
  until?: (text: string) => boolean;
  /** The worker's port, when not the test's main worker. */
  port?: number;
}

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json: any;
}

/**
 * Sends one request to 127.0.0.1:`port`, exactly as `c` says; resolves with the whole answer
 * (with `until`: its start).
 */
export function send(c: Call, port: number): Promise<Answer> {
  let target = c.route.replace(/\{(\w+)\}/g, (_, name: string) => {
    const v = c.params?.[name];
    if (v === undefined) throw new Error(`no value for {${name}} in ${c.route}`);
    return c.raw ? v : encodeURIComponent(v);
  });
  if (c.query) target += `?${new URLSearchParams(c.query).toString()}`;
  const body = c.body === undefined ? undefined : Buffer.from(c.body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: target,
        method: c.method ?? 'GET',
        headers: {
          ...(body ? { 'content-length': String(body.length) } : {}),
          ...c.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        const done = () => {
          const all = Buffer.concat(chunks);
          const text = all.toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            /* not JSON */
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: all, text, json });
        };
        res.on('data', (d: Buffer) => {
          chunks.push(d);
          if (c.until?.(Buffer.concat(chunks).toString('utf8'))) {
            req.destroy();
            done();
          }
        });
        res.on('end', done);
        res.on('error', () => undefined);
      },
    );
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    req.end(body);
  });
}

/** A request held open once its headers came (a long-lived answer taking a slot). */
export function hold(port: number, target: string): Promise<{ status: number; close(): void }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: target }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, close: () => req.destroy() });
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    req.end();
  });
}

/** A multipart body as FormData serializes it (in the order the parts were appended). */
export async function multipart(
  fill: (fd: FormData) => void,
): Promise<{ body: Buffer; type: string }> {
  const fd = new FormData();
  fill(fd);
  const r = new Request('http://localhost/', { method: 'POST', body: fd });
  return { body: Buffer.from(await r.arrayBuffer()), type: r.headers.get('content-type')! };
}

/** The `data` of each event in a Server-Sent Events body. */
export function eventData(text: string): unknown[] {
  return text
    .split('\n\n')
    .map((block) => /^data: (.*)$/m.exec(block)?.[1])
    .filter((d): d is string => d !== undefined)
    .map((d) => JSON.parse(d) as unknown);
}
