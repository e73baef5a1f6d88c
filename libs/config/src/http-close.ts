import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** After refusing a request, how much more of its body is read (and dropped), and how long. */
const LINGER_BYTES = 16 * 1024 * 1024;
const LINGER_MS = 2_000;

/**
 * Called before refusing a request whose body was not read to its end (a refused upload, a
 * request from a foreign Host): the answer goes out at once and closes the connection, so the
 * rest of a large body is never taken in. Without it, Node would read and discard the whole body
 * after the answer (keep-alive): 300 MB refused with 404 would still cost their transfer.
 *
 * Closing is done gently ("lingering close", as nginx and Apache do): the server ends its side
 * once the answer is sent and reads and drops what the client still sends, up to 16 MiB (then it
 * stops reading) or 2 s, then cuts the connection. Destroying it at once would make the kernel answer the bytes still
 * arriving with a reset, and the client's kernel then discards the answer the client had not
 * read yet (seen here: a 400 lost, the client got ECONNRESET). A client that stops sending on
 * the answer (curl, fetch, the CLI) closes well within that; one that keeps sending is cut off
 * after 16 MiB.
 */
export function closeIfUnread(req: IncomingMessage, res: ServerResponse): void {
  const hasBody =
    req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length']) > 0;
  const socket = req.socket as (Socket & { destroySoon?: () => void }) | null;
  if (!hasBody || req.readableEnded || res.headersSent || !socket) return;
  res.setHeader('Connection', 'close');
  // After a `Connection: close` answer Node calls destroySoon() (end, then destroy once the
  // answer is flushed) on a TCP socket: only end() here; the destroy comes from the linger below.
  if (typeof socket.destroySoon === 'function') socket.destroySoon = () => socket.end();
  res.once('finish', () => {
    let dropped = 0;
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    req.on('data', (chunk: Buffer) => {
      dropped += chunk.length;
      // Past the bytes, stop taking more but do not cut yet: a client that reads while it
      // sends (most do) still has the rest of LINGER_MS to read the answer and close. Cutting
      // here reset the connection within milliseconds of the answer on loopback, and a client
      // that had not been scheduled meanwhile lost it (seen once in CI under load: status 0
      // instead of 413).
      if (dropped > LINGER_BYTES) {
        req.pause();
        socket.pause();
      }
    });
    req.resume();
  });
}
