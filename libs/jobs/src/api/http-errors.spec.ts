import {
  Controller,
  Get,
  HttpException,
  Module,
  Param,
  UseFilters,
  type INestApplication,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { JobRequestError } from '../jobs.service';
import { isRedisOutage } from '../queue/redis-connection';
import { FileNotFoundError, UnsafePathError } from '../store/results.store';
import { httpErrorOf, JobErrorsFilter } from './http-errors';

/** An error as Node's net module makes it for a failed connect. */
function connectError(code: string, address: string): Error {
  return Object.assign(new Error(`connect ${code} ${address}`), { code, syscall: 'connect' });
}

function named(name: string, message: string): Error {
  const err = new Error(message);
  err.name = name;
  return err;
}

describe('isRedisOutage', () => {
  it.each([
    [
      'a command out of retries (ioredis)',
      named('MaxRetriesPerRequestError', 'Reached the max retries per request limit (which is 3).'),
    ],
    ['a closed connection (BullMQ)', named('ConnectionClosedError', 'Connection is closed')],
    ["a closed connection (ioredis's plain Error)", new Error('Connection is closed.')],
    ['a refused connect', connectError('ECONNREFUSED', '127.0.0.1:6379')],
    ['a socket file gone', connectError('ENOENT', '/data/.redis/redis.sock')],
  ])('recognises %s', (_what, err) => {
    expect(isRedisOutage(err)).toBe(true);
  });

  it.each([
    [
      'a missing file read from the store',
      Object.assign(new Error("ENOENT: no such file or directory, open 'x'"), {
        code: 'ENOENT',
        syscall: 'open',
      }),
    ],
    ['a Redis reply error', named('ReplyError', 'ERR wrong number of arguments')],
    ['a bug', new TypeError('cannot read properties of undefined')],
    ['something not an Error', { message: 'Connection is closed.' }],
  ])('leaves alone %s', (_what, err) => {
    expect(isRedisOutage(err)).toBe(false);
  });
});

describe('httpErrorOf', () => {
  it('answers a JobRequestError with its status and the name of that status', () => {
    const http = httpErrorOf(new JobRequestError(507, 'disk full')) as HttpException;
    expect(http.getStatus()).toBe(507);
    expect(http.getResponse()).toEqual({
      statusCode: 507,
      error: 'Insufficient Storage',
      message: 'disk full',
    });
  });

  it('leaves an HttpException and an unknown error as they are', () => {
    const http = new HttpException('teapot', 418);
    const bug = new Error('bug');
    expect(httpErrorOf(http)).toBe(http);
    expect(httpErrorOf(bug)).toBe(bug);
  });
});

const THROWN: Record<string, () => unknown> = {
  conflict: () => new JobRequestError(409, 'the key names another job'),
  unsafe: () => new UnsafePathError("path '../x' is not a plain relative path inside output/"),
  missing: () => new FileNotFoundError("'out.txt' is not there"),
  redis: () => named('MaxRetriesPerRequestError', 'Reached the max retries per request limit'),
  closed: () => new Error('Connection is closed.'),
  http: () => new HttpException({ statusCode: 421, error: 'Misdirected', message: 'm' }, 421),
  bug: () => new TypeError('x is undefined'),
};

@UseFilters(JobErrorsFilter)
@Controller('t')
class ThrowingController {
  @Get(':what')
  async get(@Param('what') what: string): Promise<never> {
    await Promise.resolve();
    throw THROWN[what]();
  }
}

@Module({ controllers: [ThrowingController] })
class ThrowingModule {}

describe('JobErrorsFilter, on a real application', () => {
  let app: INestApplication;
  let base: string;

  beforeAll(async () => {
    app = await NestFactory.create(ThrowingModule, { logger: false });
    await app.listen(0, '127.0.0.1');
    base = await app.getUrl();
  });
  afterAll(() => app.close());

  async function answer(what: string): Promise<[number, unknown]> {
    const res = await fetch(`${base}/t/${what}`);
    return [res.status, await res.json()];
  }

  it.each([
    ['conflict', 409, { statusCode: 409, error: 'Conflict', message: 'the key names another job' }],
    [
      'unsafe',
      400,
      {
        statusCode: 400,
        error: 'Bad Request',
        message: "path '../x' is not a plain relative path inside output/",
      },
    ],
    ['missing', 404, { statusCode: 404, error: 'Not Found', message: "'out.txt' is not there" }],
    [
      'redis',
      503,
      {
        statusCode: 503,
        error: 'Service Unavailable',
        message: 'the job queue (Redis) is unavailable; retry shortly',
      },
    ],
    [
      'closed',
      503,
      {
        statusCode: 503,
        error: 'Service Unavailable',
        message: 'the job queue (Redis) is unavailable; retry shortly',
      },
    ],
    ['http', 421, { statusCode: 421, error: 'Misdirected', message: 'm' }],
    ['bug', 500, { statusCode: 500, message: 'Internal server error' }],
  ])('maps %s to %i', async (what, status, body) => {
    expect(await answer(what)).toEqual([status, body]);
  });
});
