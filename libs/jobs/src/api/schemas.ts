import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { JOB_STATES, type JobState } from '../job-record';
import { LIMIT_NAMES } from './stream-limits';

/*
 * The job API's bodies as OpenAPI schemas (components.schemas of /docs-json). These classes
 * only describe: the controllers build plain objects, and test/e2e/openapi.e2e-spec.ts checks
 * every answer the built worker gives against these descriptions, so a field added to an
 * answer without its description here fails that test.
 */

const DATE_TIME = { type: 'string', format: 'date-time' } as const;

/** Every refusal: `{statusCode, error, message}`, the message saying what to fix. */
export class HttpError {
  @ApiProperty({ type: 'integer', example: 400, description: 'the HTTP status, again' })
  statusCode!: number;

  @ApiPropertyOptional({
    example: 'Bad Request',
    description:
      "the status's reason phrase; absent only from the JSON body parser's 413 (a body over 100 KiB)",
  })
  error?: string;

  @ApiProperty({
    example: "job id 'abc' is not a job id (a UUID)",
    description: 'what was wrong and what to send instead',
  })
  message!: string;
}

/** 503 for a long-lived answer over its cap (`stream-limits.ts`), sent with `Retry-After`. */
export class StreamLimitError extends HttpError {
  @ApiProperty({
    enum: LIMIT_NAMES,
    description: 'which cap refused it',
  })
  limit!: string;

  @ApiProperty({ type: 'integer', example: 32, description: 'the cap' })
  max!: number;
}

/** A job's record: `GET /jobs/{id}`, the list, a cancel's answer and each event's data. */
export class Job {
  @ApiProperty({ format: 'uuid' })
  id!: string;

  @ApiProperty({ example: 'hello', description: 'the experiment it runs' })
  experiment!: string;

  @ApiProperty({ enum: JOB_STATES })
  state!: JobState;

  @ApiProperty({
    type: 'number',
    minimum: 0,
    maximum: 100,
    description: "percent done, from the job's last `::progress::` line",
  })
  progress!: number;

  @ApiPropertyOptional({ description: "the text of the job's last `::progress::` line" })
  message?: string;

  @ApiProperty({
    type: 'string',
    nullable: true,
    description: 'WORKER_NAME of the worker that ran it last; null before it started',
  })
  worker!: string | null;

  @ApiProperty({
    type: 'string',
    nullable: true,
    description:
      'its devices, comma-separated: a GPU UUID, or a MIG instance as `MIG-… (GPU-…)`; null for a CPU job',
  })
  gpu!: string | null;

  @ApiProperty({ type: 'integer', minimum: 0, description: 'tries started so far' })
  attempts!: number;

  @ApiProperty(DATE_TIME)
  createdAt!: string;

  @ApiProperty({ ...DATE_TIME, nullable: true })
  startedAt!: string | null;

  @ApiProperty({ ...DATE_TIME, nullable: true })
  finishedAt!: string | null;

  @ApiProperty({ type: 'integer', nullable: true, description: "the last try's exit code" })
  exitCode!: number | null;

  @ApiProperty({
    type: 'string',
    nullable: true,
    description: 'why it failed (`timed out`, `out of memory`, `disk full`, …)',
  })
  error!: string | null;
}

/** `POST /jobs`'s answer: 201 for a new job, 200 for a repeated `key`. */
export class JobSubmitted {
  @ApiProperty({ format: 'uuid' })
  id!: string;

  @ApiProperty({
    enum: JOB_STATES,
    description: 'queued for a new job; for a repeated key, the first job’s state now',
  })
  state!: JobState;
}

/** One installed experiment (`GET /experiments`). */
export class Experiment {
  @ApiProperty({ example: 'hello' })
  name!: string;

  @ApiProperty({ enum: ['docker', 'process'] })
  runner!: 'docker' | 'process';

  @ApiProperty({ type: 'integer', minimum: 0, description: 'GPU devices each job gets' })
  gpus!: number;

  @ApiProperty({
    type: 'integer',
    nullable: true,
    description: 'bytes of memory each device must have (`gpu_memory`); null when not set',
  })
  gpuMemory!: number | null;

  @ApiProperty({
    type: 'string',
    nullable: true,
    example: '3g.40gb',
    description: 'the MIG profile each device must be (`mig_profile`); null when not set',
  })
  migProfile!: string | null;

  @ApiProperty({
    type: 'integer',
    nullable: true,
    description: 'milliseconds a try may run; null: no limit',
  })
  timeout!: number | null;

  @ApiProperty({ type: 'integer', minimum: 1, description: 'tries a job gets' })
  attempts!: number;

  @ApiProperty({
    type: 'object',
    additionalProperties: true,
    example: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] },
    description: "the JSON Schema a submission's `params` must match",
  })
  params!: Record<string, unknown>;
}

/** One regular file under the job's output/. */
export class OutputFile {
  @ApiProperty({
    example: 'results/metrics.json',
    description: 'relative to output/, `/`-separated',
  })
  path!: string;

  @ApiProperty({ type: 'integer', minimum: 0, description: 'bytes' })
  size!: number;
}

/** `GET /jobs/{id}/files`. */
export class OutputFiles {
  @ApiProperty({
    type: [OutputFile],
    description:
      'sorted by path; links, FIFOs and devices the job made are left out. At most 10,000: ' +
      'a larger output is listed in part (`truncated`)',
  })
  files!: OutputFile[];

  @ApiProperty({
    description:
      'true when the listing stopped at one of its bounds (10,000 files, 100,000 names looked ' +
      'at, folders 32 levels deep, 5 s) and `files` holds only the first files found (still ' +
      'sorted); each file can still be downloaded by its path',
  })
  truncated!: boolean;

  @ApiProperty({
    required: false,
    example: '10000 files listed; it stops at 10000 files',
    description: 'only when `truncated`: which bound stopped the listing',
  })
  truncatedBecause?: string;
}

const KEY = {
  pattern: '^[\\x21-\\x7e]{1,200}$',
  example: 'train-2026-11-23',
  description:
    'idempotency key (1-200 printable characters, no spaces): a submission with a key already ' +
    'used answers 200 with the first job instead of starting another',
} as const;

const PRIORITY = {
  type: 'integer',
  minimum: 1,
  maximum: 1000,
  description: 'queue priority: lower runs earlier, 1 first (as BullMQ orders them)',
} as const;

/** `POST /jobs` as `application/json`. */
export class SubmitJob {
  @ApiProperty({ example: 'hello', description: 'an installed experiment (GET /experiments)' })
  experiment!: string;

  @ApiPropertyOptional({
    type: 'object',
    additionalProperties: true,
    example: { name: 'Ada' },
    description: "checked against the experiment's params schema; default {}",
  })
  params?: Record<string, unknown>;

  @ApiPropertyOptional(PRIORITY)
  priority?: number;

  @ApiPropertyOptional(KEY)
  key?: string;
}

/** `POST /jobs` as `multipart/form-data`: the same fields as text, first; then the files. */
export class SubmitJobForm {
  @ApiProperty({ example: 'copy-input', description: 'an installed experiment; before any file' })
  experiment!: string;

  @ApiPropertyOptional({
    example: '{"name":"Ada"}',
    description: "the params as JSON text, checked against the experiment's params schema",
  })
  params?: string;

  @ApiPropertyOptional(PRIORITY)
  priority?: number;

  @ApiPropertyOptional(KEY)
  key?: string;

  @ApiPropertyOptional({
    type: 'array',
    items: { type: 'string', format: 'binary' },
    description:
      "input files, after the fields (any part name; saved in the job's input/ under their " +
      'file names): at most 100, MAX_UPLOAD bytes together',
  })
  files?: unknown[];
}

/** Every schema the document lists, including those only named by reference. */
export const API_MODELS = [
  HttpError,
  StreamLimitError,
  Job,
  JobSubmitted,
  Experiment,
  OutputFile,
  OutputFiles,
  SubmitJob,
  SubmitJobForm,
];
