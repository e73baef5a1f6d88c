import {
  BadRequestException,
  HttpException,
  NotFoundException,
  ServiceUnavailableException,
} from '@nestjs/common';
import { JobRequestError } from '../jobs.service';
import { FileNotFoundError, JOB_ID, UnsafePathError } from '../store/results.store';

const NAMES: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  409: 'Conflict',
  507: 'Insufficient Storage',
};

/** Maps the job system's errors to `{statusCode, error, message}`; anything else stays a 500. */
export function toHttp(err: unknown): unknown {
  if (err instanceof JobRequestError) {
    return new HttpException(
      { statusCode: err.status, error: NAMES[err.status], message: err.message },
      err.status,
    );
  }
  if (err instanceof UnsafePathError) return new BadRequestException(err.message);
  if (err instanceof FileNotFoundError) return new NotFoundException(err.message);
  // Redis away (restarting, unreachable): the client should retry, not report a bug.
  const e = err as { name?: string; message?: string };
  if (
    e?.name === 'MaxRetriesPerRequestError' ||
    /Connection is closed|ECONNREFUSED|ENOENT.*redis/.test(e?.message ?? '')
  ) {
    return new ServiceUnavailableException('the job queue (Redis) is unavailable; retry shortly');
  }
  return err;
}

/** Job ids are UUIDs: anything else is refused before it reaches Redis or a path. */
export function checkJobId(id: string): string {
  if (!JOB_ID.test(id))
    throw new BadRequestException(`job id '${id.slice(0, 80)}' is not a job id (a UUID)`);
  return id;
}
