import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { closeIfUnread } from '../../libs/config/src/http-close';

/**
 * closeIfUnread (the refusal of a request whose body was not read) on a real server and raw
 * sockets: the answer must reach a client that keeps sending, even one that is not scheduled
 * for a while after the answer came (a loaded host).
 */
describe('closeIfUnread', () => {
  let server: Server;
  let port: number;
  beforeAll(async () => {
    server = createServer((req, res) => {
      closeIfUnread(req, res);
      res.writeHead(413, { 'content-type': 'text/plain' }).end('too large\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('a client that sends 64 MiB at once and reads 300 ms later gets the answer before any error', async () => {
    // An HTTP client (Node's, curl) gives up on the first error, a failed write included: the
    // answer must be readable before the server's cut makes the client's writes fail.
    const s = connect(port, '127.0.0.1');
    let got = '';
    let errorBeforeAnswer = '';
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (!got.startsWith('HTTP/1.1')) errorBeforeAnswer ||= e.code ?? e.message;
    });
    await new Promise((r) => s.once('connect', r));
    s.pause(); // reads nothing for a while, as a client the host has not scheduled yet
    s.write('POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n');
    const chunk = Buffer.alloc(1024 * 1024, 120);
    const framed = Buffer.concat([Buffer.from('100000\r\n'), chunk, Buffer.from('\r\n')]);
    for (let i = 0; i < 64; i++) s.write(framed);
    await new Promise((r) => setTimeout(r, 300));
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('too large')) s.destroy(); // as an HTTP client does once answered
    });
    s.resume();
    await new Promise((r) => s.once('close', r));
    expect({ status: got.split('\r\n')[0], errorBeforeAnswer }).toEqual({
      status: 'HTTP/1.1 413 Payload Too Large',
      errorBeforeAnswer: '',
    });
  });
});
