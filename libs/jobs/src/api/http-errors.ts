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
