import type { ServerResponse } from 'node:http';
import type { OpenedFile } from '../store/job-files';
import { STALL_MS } from './client-watch';

/** How much of the file is read and written at a time. */
export const SEND_CHUNK = 64 * 1024;

/**
 * Sends bytes `start`..`end` of the opened file, then ends the answer and closes the file; the
 * promise resolves once it is closed (also when the client went or was cut; it never rejects).
 *
 * A client that does not take what it was given within `stallMs` is cut: each chunk (64 KiB)
 * is written, and the next one only once the connection drained. Downloads are counted
 * (StreamLimits), and a client that read 1 KB every few minutes used to keep its slot, and its
 * tunnel stream, forever (the relay's idle cut needs 10 minutes without a byte). So a download
 * must move at least a chunk a minute. The connection closing ends it at once, the descriptor
 * closed with it. A file that shrank meanwhile cuts the connection rather than send fewer bytes
 * than Content-Length promised.
 */
export async function sendBytes(
  file: OpenedFile,
  start: number,
  end: number,
  res: ServerResponse,
  stallMs = STALL_MS,
): Promise<void> {
  try {
    let offset = start;
    while (offset <= end) {
      if (res.destroyed) return;
      // A buffer of its own for each chunk: the response may keep it until it is sent.
      const buf = Buffer.allocUnsafe(Math.min(SEND_CHUNK, end - offset + 1));
      const { bytesRead } = await file.handle.read(buf, 0, buf.length, offset);
      if (bytesRead === 0) return void res.destroy();
      offset += bytesRead;
      if (res.destroyed) return;
      if (!res.write(buf.subarray(0, bytesRead)) && !(await drained(res, stallMs))) {
        return void res.destroy();
      }
    }
    if (!res.destroyed) res.end();
  } catch {
    // The file could not be read (or the connection failed): cut rather than send less.
    res.destroy();
  } finally {
    await file.handle.close().catch(() => undefined);
  }
}

/**
 * Resolves true once `res` drained; false when it closed first or `ms` went by. Not
 * ClientWatch.drain: ClientWatch takes a client's FIN for its going (right for a stream that
 * never ends), while a download must still reach a client that half-closed after its request.
 */
function drained(res: ServerResponse, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const timer = setTimeout(() => done(false), ms);
    res.on('drain', onDrain);
    res.on('close', onClose);
    if (res.destroyed) done(false);
  });
}
