import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import path from 'node:path';

/** What the engine says a container was created with, read just before it starts. */
export interface StartedContainer {
  id: string;
  HostConfig: { DeviceRequests?: unknown[] | null } & Record<string, unknown>;
  Env: string[];
  Labels: Record<string, string>;
}

/** The part of `GET /containers/{id}/json` kept. */
interface Inspected {
  Id: string;
  HostConfig: StartedContainer['HostConfig'];
  Config: { Env: string[]; Labels: Record<string, string> };
}

/** Asks the real engine (unix socket) for `GET path` and parses its JSON. */
function engineGet(socketPath: string, urlPath: string): Promise<Inspected> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: urlPath, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`${urlPath}: ${res.statusCode} ${body}`));
        else resolve(JSON.parse(body) as Inspected);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A Docker Engine in front of the real one (a unix socket in `dir`, to give the worker as
 * DOCKER_HOST) that passes every call through unchanged, except that before it forwards
 * `POST /containers/{id}/start` it inspects that container through the real engine's API and
 * keeps what the container was created with. A built worker is a process the test cannot wrap:
 * this is how a test sees the DeviceRequests of a GPU container that the engine then refuses
 * to start (no NVIDIA runtime here) and the runner removes at once.
 */
export async function inspectingDockerProxy(
  engineHost: string,
  dir: string,
): Promise<{ host: string; started: StartedContainer[]; close(): Promise<void> }> {
  const engine = new URL(engineHost).pathname;
  const socket = path.join(dir, 'docker-proxy.sock');
  const started: StartedContainer[] = [];
  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const up = request(
      { socketPath: engine, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        // At once: an attach answers its headers long before any output, and the client waits
        // for them before it starts the container.
        res.flushHeaders();
        answer.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    // A client gone (the worker stopped) ends its call to the engine too (an events stream).
    res.on('close', () => up.destroy());
    req.pipe(up);
  };
  const server = createServer((req, res) => {
    const start = /^\/(?:v[\d.]+\/)?containers\/([^/?]+)\/start(?:\?|$)/.exec(req.url ?? '');
    if (req.method !== 'POST' || !start) return forward(req, res);
    engineGet(engine, `/containers/${start[1]}/json`)
      .then((i) => {
        started.push({
          id: i.Id,
          HostConfig: i.HostConfig,
          Env: i.Config.Env,
          Labels: i.Config.Labels,
        });
      })
      .catch(() => undefined)
      .finally(() => forward(req, res));
  });
  // Upgraded connections (attach with hijacking) are passed through byte for byte.
  server.on('upgrade', (req: IncomingMessage, client, head: Buffer) => {
    const up = connect(engine, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2)
        lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(`${lines.join('\r\n')}\r\n\r\n`);
      up.write(head);
      up.pipe(client).pipe(up);
    });
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return {
    host: `unix://${socket}`,
    started,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
