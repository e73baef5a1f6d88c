import { applyDecorators, type Type } from '@nestjs/common';
import {
  ApiParam,
  ApiResponse,
  getSchemaPath,
  type HeaderObject,
  type ResponseObject,
} from '@nestjs/swagger';
import { HttpError, StreamLimitError } from './schemas';

/*
 * Decorators that describe answers in /docs-json. Each one names its media type itself (never
 * through @ApiProduces), so an operation whose 200 is bytes or text still declares its refusals
 * as JSON.
 */

type Decorator = MethodDecorator & ClassDecorator;

/**
 * A JSON answer whose body is the schema of `model` (a class listed in API_MODELS or in an
 * @ApiExtraModels of the controller).
 */
export function jsonContent(model: Type<unknown>): ResponseObject['content'] {
  return { 'application/json': { schema: { $ref: getSchemaPath(model) } } };
}

/** A refusal: `{statusCode, error, message}` (HttpError), with what causes it. */
export function ApiError(
  status: number,
  description: string,
  headers?: Record<string, HeaderObject>,
): Decorator {
  return ApiResponse({ status, description, content: jsonContent(HttpError), headers });
}

/**
 * 421 on every route of the controller: the worker's request guard answers it before any route
 * (libs/config/src/request-guard.ts).
 */
export const ApiHostGuard = (): Decorator =>
  ApiError(
    421,
    "the request's Host is not a name of this API (it answers to loopback names, API_LISTEN's " +
      'host and API_HOSTS; a guard against DNS rebinding): add the name to API_HOSTS',
  );

/** 403 on a state-changing route: an Origin of another site (a page elsewhere) is refused. */
export const ApiOriginGuard = (): Decorator =>
  ApiError(
    403,
    'the request carries an Origin whose host is not a name of this API: pages on other sites ' +
      'may not change jobs (no Origin, as from curl or a server, passes)',
  );

const REDIS_DOWN = 'the job queue (Redis) is unavailable: retry shortly';

/** 503 while Redis does not answer. */
export const ApiRedisDown = (): Decorator => ApiError(503, REDIS_DOWN);

/**
 * 503 of a long-lived answer (`logs`, `events`, `files/PATH`): over its stream cap
 * (StreamLimitError, with Retry-After), or Redis away (HttpError).
 */
export const ApiStreamRefused = (): Decorator =>
  ApiResponse({
    status: 503,
    description:
      `too many such streams open (on this job, from this address, or on this worker): ` +
      `retry after Retry-After ` +
      `seconds, or close one; or ${REDIS_DOWN}`,
    content: {
      'application/json': {
        schema: {
          anyOf: [{ $ref: getSchemaPath(StreamLimitError) }, { $ref: getSchemaPath(HttpError) }],
        },
      },
    },
    headers: {
      'Retry-After': {
        description: 'seconds to wait; sent when a stream cap refused it',
        schema: { type: 'integer' },
      },
    },
  });

const NOT_A_JOB_ID = 'the id is not a job id (a UUID)';
const NO_SUCH_JOB = 'no job with this id (or it was removed after RESULTS_TTL)';

/**
 * What every route under /jobs/{id} may answer besides its own: 400 (the id is not a UUID, or
 * `bad400`), 404 (no such job, or `more404`), 503 (Redis away; `stream`: or a stream cap).
 */
export const ApiJobRoute = (
  opts: { bad400?: string; more404?: string; stream?: boolean } = {},
): Decorator =>
  applyDecorators(
    ApiError(400, opts.bad400 ? `${NOT_A_JOB_ID}; or ${opts.bad400}` : NOT_A_JOB_ID),
    ApiError(404, opts.more404 ? `${NO_SUCH_JOB}; or ${opts.more404}` : NO_SUCH_JOB),
    opts.stream ? ApiStreamRefused() : ApiRedisDown(),
  );

/** The `id` path parameter of every /jobs/{id} route. */
export const ApiJobIdParam = (): Decorator =>
  ApiParam({ name: 'id', description: 'the job id', schema: { type: 'string', format: 'uuid' } });
