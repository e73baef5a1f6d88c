import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import {
  BadRequestException,
  Catch,
  HttpException,
  NotFoundException,
  ServiceUnavailableException,
  type ArgumentsHost,
} from '@nestjs/common';
import { BaseExceptionFilter } from '@nestjs/core';
import { JobRequestError } from '../jobs.service';
import { isRedisOutage } from '../queue/redis-connection';
import { FileNotFoundError, JOB_ID, UnsafePathError } from '../store/results.store';

const NAMES: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  409: 'Conflict',
  507: 'Insufficient Storage',
};

/**
 * The job system's errors as HTTP answers, `{statusCode, error, message}`: a JobRequestError
 * with its status, an unsafe path 400, a file that is not there 404, Redis away 503 (the client
 * should retry, not report a bug). Anything else is returned as it is (an HttpException keeps
 * its answer, the rest is a 500).
 */
export function httpErrorOf(err: unknown): unknown {
  if (err instanceof JobRequestError) {
    return new HttpException(
      { statusCode: err.status, error: NAMES[err.status], message: err.message },
      err.status,
    );
  }
  if (err instanceof UnsafePathError) return new BadRequestException(err.message);
  if (err instanceof FileNotFoundError) return new NotFoundException(err.message);
  if (isRedisOutage(err)) {
    return new ServiceUnavailableException('the job queue (Redis) is unavailable; retry shortly');
  }
  return err;
}

/**
 * The job API's one exception filter (`@UseFilters(JobErrorsFilter)` on its controllers): what a
 * route throws is mapped by httpErrorOf, then answered by Nest's own filter (logging a 500,
 * leaving an answer already under way alone).
 */
@Catch()
export class JobErrorsFilter extends BaseExceptionFilter {
  override catch(err: unknown, host: ArgumentsHost): void {
    super.catch(httpErrorOf(err), host);
  }
}

/** Job ids are UUIDs: anything else is refused before it reaches Redis or a path. */
export function checkJobId(id: string): string {
  if (!JOB_ID.test(id))
    throw new BadRequestException(`job id '${id.slice(0, 80)}' is not a job id (a UUID)`);
  return id;
}

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
 * once the answer is sent and reads and drops what the client still sends, up to 16 MiB or 2 s,
 * then cuts the connection. Destroying it at once would make the kernel answer the bytes still
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
    const cut = () => socket.destroy();
    const timer = setTimeout(cut, LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    req.on('data', (chunk: Buffer) => {
      dropped += chunk.length;
      if (dropped > LINGER_BYTES) cut();
    });
    req.resume();
  });
}
