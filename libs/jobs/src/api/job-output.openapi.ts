import { applyDecorators } from '@nestjs/common';
import {
  ApiHeader,
  ApiOkResponse,
  ApiOperation,
  ApiParam,
  ApiQuery,
  ApiResponse,
} from '@nestjs/swagger';
import { ApiError, ApiJobIdParam, ApiJobRoute } from './responses';
import { OutputFiles } from './schemas';

/*
 * How JobOutputController's routes are described in /docs-json: one decorator per route, beside
 * the controller, whose file keeps the behaviour (test/e2e/openapi.e2e-spec.ts holds the two
 * together).
 */

/** A download's body. */
const BYTES = {
  'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
} as const;

/** The headers of every download (200, 206). */
const FILE_HEADERS = {
  'Content-Disposition': {
    description: 'attachment; filename=…, with filename* for a name outside ISO-8859-1',
    required: true,
    schema: { type: 'string', pattern: '^attachment' },
  },
  'Accept-Ranges': { required: true, schema: { type: 'string', enum: ['bytes'] } },
  ETag: {
    description: 'strong; changes with the file (inode, size, modification time)',
    required: true,
    schema: { type: 'string' },
  },
  'Last-Modified': { required: true, schema: { type: 'string' } },
  'X-Content-Type-Options': { required: true, schema: { type: 'string', enum: ['nosniff'] } },
};

/** `GET /jobs/{id}/logs`: the log now, or followed (`follow`). */
export const ApiLogs = () =>
  applyDecorators(
    ApiOperation({
      summary: 'the job output so far; ?follow=true streams it until the job ends',
      description:
        'stdout and stderr as the job wrote them, bytes as they are. Following sends the headers ' +
        'at once (also for a queued job), then what the log holds and what is appended, until the ' +
        'job ends; at most 32 followers per job and 256 in all. The log as it is now is a ' +
        'download: at most 64 per client address (every client through the relay counts as ' +
        'one) and 128 in all, cut when its client takes nothing for 60 s.',
    }),
    ApiJobIdParam(),
    ApiQuery({
      name: 'follow',
      required: false,
      description:
        '`true` (or `1`): follow until the job ends; anything else: the log as it is now',
      schema: { type: 'boolean' },
    }),
    ApiOkResponse({
      description:
        'the log (Content-Length: its size now; empty while the job has none), or, following, ' +
        'the log as it grows (chunked)',
      content: { 'text/plain': { schema: { type: 'string' } } },
    }),
    ApiJobRoute({ stream: true, bad400: 'the log is not a regular file (the job replaced it)' }),
  );

/** `GET /jobs/{id}/events`: Server-Sent Events, 204 to a reconnect that saw the end. */
export const ApiEvents = () =>
  applyDecorators(
    ApiOperation({
      summary: 'Server-Sent Events: state and progress until the job ends',
      description:
        'Each event is `event: state` (the state changed) or `event: progress`, with ' +
        '`id: <state>.<progress>` (the final state’s name for the last one) and the job’s ' +
        'record (the Job schema) as JSON `data`; `: keep-alive` every 15 s. The stream ends ' +
        'after the final state. A reconnect whose Last-Event-ID is that final state gets 204, ' +
        'which stops an EventSource. At most 32 streams per job and 256 in all.',
    }),
    ApiJobIdParam(),
    ApiHeader({
      name: 'Last-Event-ID',
      required: false,
      description: 'the last event id seen (an EventSource sends it when it reconnects)',
    }),
    ApiOkResponse({
      description: 'the event stream',
      content: {
        'text/event-stream': {
          schema: { type: 'string' },
          example:
            'id: running.33\nevent: progress\ndata: {"id":"…","state":"running","progress":33,…}\n\n',
        },
      },
    }),
    ApiResponse({
      status: 204,
      description: 'the job has ended and Last-Event-ID says the client saw its last event',
    }),
    ApiJobRoute({ stream: true }),
  );

/** `GET /jobs/{id}/files`: the regular files under output/. */
export const ApiFiles = () =>
  applyDecorators(
    ApiOperation({ summary: 'regular files the job wrote to its output folder, with their sizes' }),
    ApiJobIdParam(),
    ApiOkResponse({
      description:
        'the files under output/: at most 10,000, and `truncated: true` when the listing stopped at a bound',
      type: OutputFiles,
    }),
    ApiJobRoute({ bad400: 'the output folder cannot be read safely (the job replaced it)' }),
  );

/** `GET /jobs/{id}/files/{path}`: one file, whole or one range. */
export const ApiDownload = () =>
  applyDecorators(
    ApiOperation({
      summary: 'download one output file; Range: bytes=a-b answers 206 (416 past the end)',
      description:
        'One range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) answers 206; a range that starts at or ' +
        'past the end, `bytes=-0`, or any range of an empty file 416; several ranges, another ' +
        'unit or an invalid range the whole file (200), as does an If-Range that is not the ' +
        'current ETag or Last-Modified. HEAD gives the same headers without the body. At most ' +
        '64 downloads (files and plain logs) per client address (every client through the ' +
        'relay counts as one) and 128 in all, else 503; a download whose client takes nothing ' +
        'for 60 s is cut.',
    }),
    ApiJobIdParam(),
    ApiParam({
      name: 'path',
      description:
        'the file, relative to output/, as GET /jobs/{id}/files lists it. A file in a folder ' +
        'may be asked with its slashes as they are (`files/results/a.json`, what curl and the ' +
        'CLI send) or encoded (`results%2Fa.json`, what Swagger UI sends); either is decoded ' +
        'once. OpenAPI 3.0 path parameters cannot hold `/`, hence this note. Refused (400): `.` ' +
        'or `..` segments, empty segments, a leading `/`, `\\`, NUL or `%` after decoding.',
      schema: { type: 'string', example: 'hello.txt' },
    }),
    ApiHeader({
      name: 'Range',
      required: false,
      description: 'one byte range, e.g. `bytes=0-1023`, `bytes=1024-`, `bytes=-100`',
    }),
    ApiHeader({
      name: 'If-Range',
      required: false,
      description: 'an ETag or Last-Modified: the range applies only if the file is unchanged',
    }),
    ApiOkResponse({
      description: 'the whole file, as an attachment',
      content: BYTES,
      headers: FILE_HEADERS,
    }),
    ApiResponse({
      status: 206,
      description: 'the one range asked for',
      content: BYTES,
      headers: {
        ...FILE_HEADERS,
        'Content-Range': {
          description: '`bytes <first>-<last>/<size>`',
          required: true,
          schema: { type: 'string', pattern: '^bytes \\d+-\\d+/\\d+$' },
        },
      },
    }),
    ApiError(416, 'the range starts at or past the end of the file (it is complete)', {
      'Content-Range': {
        description: '`bytes */<size>`',
        required: true,
        schema: { type: 'string', pattern: '^bytes \\*/\\d+$' },
      },
    }),
    ApiJobRoute({
      bad400:
        'the path is refused (see the parameter), or names a link, a FIFO or anything but a ' +
        'regular file',
      more404: 'no such file in output/',
      stream: true,
    }),
  );
