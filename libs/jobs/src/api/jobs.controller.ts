import { unlink } from 'node:fs/promises';
import {
  BadRequestException,
  Controller,
  Delete,
  Get,
  HttpCode,
  Inject,
  Param,
  Post,
  Query,
  Req,
  Res,
  UnsupportedMediaTypeException,
  UseFilters,
} from '@nestjs/common';
import {
  ApiOkResponse,
  ApiOperation,
  ApiQuery,
  ApiResponse,
  ApiTags,
  getSchemaPath,
} from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { JOB_STATES, type JobState } from '../job-record';
import { WORKER_CONFIG, type WorkerConfig } from '../../../config/src';
import { JobsService, publicRecord, type SubmitRequest, type UploadedInput } from '../jobs.service';
import { ResultsStore } from '../store/results.store';
import { checkJobId, JobErrorsFilter } from './http-errors';
import {
  ApiError,
  ApiHostGuard,
  ApiJobIdParam,
  ApiJobRoute,
  ApiOriginGuard,
  ApiRedisDown,
  jsonContent,
} from './responses';
import { Job, JobSubmitted, SubmitJob, SubmitJobForm } from './schemas';
import { FORM_LIMITS, receiveForm } from './upload';

/** Submit, list, read and cancel jobs (README.md, "Job API"; libs/jobs/README.md, "Submitting"). */
@ApiTags('jobs')
@ApiHostGuard()
@UseFilters(JobErrorsFilter)
@Controller('jobs')
export class JobsController {
  constructor(
    @Inject(JobsService) private readonly service: JobsService,
    @Inject(ResultsStore) private readonly store: ResultsStore,
    /** MAX_UPLOAD: the files of one submission together; past it POST /jobs answers 413. */
    @Inject(WORKER_CONFIG) private readonly config: Pick<WorkerConfig, 'maxUploadBytes'>,
  ) {}

  @Post()
  @ApiOperation({
    summary: 'submit a job: JSON, or multipart with input files (fields before files)',
    description:
      'A multipart submission is checked (free disk, experiment, params, priority, GPUs, key) ' +
      'when its first file part starts, so a refused one stores nothing and is answered before ' +
      'its files are read; a field after a file is refused.',
    requestBody: {
      required: true,
      content: {
        'application/json': { schema: { $ref: getSchemaPath(SubmitJob) } },
        'multipart/form-data': { schema: { $ref: getSchemaPath(SubmitJobForm) } },
      },
    },
  })
  @ApiResponse({
    status: 201,
    description: 'a new job, queued',
    content: jsonContent(JobSubmitted),
  })
  @ApiResponse({
    status: 200,
    description: 'the `key` was used before: the first job, as it is now; nothing new is queued',
    content: jsonContent(JobSubmitted),
  })
  @ApiError(
    400,
    'no body, not a JSON object, malformed JSON or multipart, params not matching the ' +
      "experiment's schema or nested over 64 levels, a bad priority or key, a GPU request no " +
      'device of this worker can meet, or a field after a file: the message says which',
  )
  @ApiOriginGuard()
  @ApiError(404, 'the experiment is not installed (the message lists those that are)')
  @ApiError(
    413,
    'a JSON body over 100 KiB; or a multipart limit, named in the message: 20 fields, 100 KiB ' +
      'per field, 100 files, MAX_UPLOAD bytes of files together',
  )
  @ApiError(
    415,
    'the Content-Type is neither application/json nor multipart/form-data (curl -d sends ' +
      "application/x-www-form-urlencoded: add -H 'content-type: application/json')",
  )
  @ApiRedisDown()
  @ApiError(
    507,
    'DATA_FOLDER has less free space than MIN_FREE_DISK, or filled up during the submission: ' +
      'free some space and submit again',
  )
  async submit(@Req() req: Request, @Res({ passthrough: true }) res: Response) {
    // The JSON body parser's result (what @Body() gives), read here so that the document shows
    // the two request bodies described above rather than one inferred from a parameter.
    const body: unknown = req.body;
    let uploads: UploadedInput[] = [];
    try {
      let submit: SubmitRequest;
      if (req.is('multipart/form-data') === null) {
        // express answers null when the request has no body at all.
        throw new BadRequestException('the body is empty: send {"experiment": ...} as JSON');
      } else if (req.is('multipart/form-data')) {
        const form = await receiveForm(req, res, {
          limits: { ...FORM_LIMITS, totalBytes: this.config.maxUploadBytes },
          dir: this.store.uploadDir,
          newName: () => this.store.newUploadName(),
          // fromForm throws at once when the experiment field is missing (not after the check).
          beforeFirstFile: (fields) =>
            this.service.check(fromForm(fields, true)).then(() => undefined),
        });
        uploads = form.files;
        submit = { ...fromForm(form.fields, false), files: uploads };
      } else if (req.is('application/json')) {
        if (typeof body !== 'object' || body === null || Array.isArray(body)) {
          throw new BadRequestException('the body must be a JSON object: {"experiment": ...}');
        }
        submit = { experiment: undefined, ...body };
      } else {
        throw new UnsupportedMediaTypeException(
          `send the job as JSON with Content-Type: application/json (curl -H 'content-type: ` +
            `application/json' -d '{"experiment":...}'), or as multipart/form-data with files; ` +
            `got ${req.headers['content-type'] ? `'${req.headers['content-type'].slice(0, 100)}'` : 'no Content-Type'}`,
        );
      }
      const { record, created } = await this.service.submit(submit);
      res.status(created ? 201 : 200);
      return { id: record.id, state: record.state };
    } finally {
      // Accepted files were moved into input/; whatever is left here was refused.
      await Promise.all(uploads.map((f) => unlink(f.path).catch(() => undefined)));
    }
  }

  @Get()
  @ApiOperation({ summary: 'the newest jobs first, optionally of one experiment or state' })
  @ApiQuery({ name: 'experiment', required: false, description: 'only jobs of this experiment' })
  @ApiQuery({
    name: 'state',
    required: false,
    description: 'only jobs in this state',
    schema: { type: 'string', enum: [...JOB_STATES] },
  })
  @ApiQuery({
    name: 'limit',
    required: false,
    description: 'how many jobs at most',
    schema: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
  })
  @ApiOkResponse({ description: 'the jobs, newest first', type: [Job] })
  @ApiError(400, 'state is not a job state, or limit is not a whole number from 1 to 1000')
  @ApiRedisDown()
  async list(
    @Query('experiment') experiment?: string,
    @Query('state') state?: string,
    @Query('limit') limit?: string,
  ) {
    if (state !== undefined && !JOB_STATES.includes(state as JobState)) {
      throw new BadRequestException(`state must be one of ${JOB_STATES.join(', ')}`);
    }
    const n = limit === undefined ? 100 : Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > 1000)
      throw new BadRequestException('limit must be a whole number from 1 to 1000');
    const jobs = await this.service.list({
      experiment,
      state: state as JobState | undefined,
      limit: n,
    });
    return jobs.map(publicRecord);
  }

  @Get(':id')
  @ApiOperation({ summary: "one job's record" })
  @ApiJobIdParam()
  @ApiOkResponse({ description: 'the record', type: Job })
  @ApiJobRoute()
  async get(@Param('id') id: string) {
    return publicRecord(await this.service.get(checkJobId(id)));
  }

  @Delete(':id')
  @HttpCode(200)
  @ApiOperation({ summary: 'cancel: a queued job never starts, a running one is stopped' })
  @ApiJobIdParam()
  @ApiOkResponse({
    description:
      'the record after the request: `cancelled` for a job that was queued; a running one ' +
      'turns `cancelled` once its processes are gone; one that had ended, unchanged',
    type: Job,
  })
  @ApiOriginGuard()
  @ApiJobRoute()
  async cancel(@Param('id') id: string) {
    return publicRecord(await this.service.cancel(checkJobId(id)));
  }
}

/**
 * A multipart form's text fields as a submission: `params` is JSON text. Called at the first
 * file part (`atFirstFile`: the fields so far, and `experiment` must be among them) and once
 * the form is read.
 */
function fromForm(fields: Record<string, string>, atFirstFile: boolean): SubmitRequest {
  const { experiment, params, priority, key } = fields;
  if (experiment === undefined && atFirstFile) {
    throw new BadRequestException(
      'experiment is required before the files: send the fields (experiment, params, priority, ' +
        'key) first and the files last (curl -F keeps the order given)',
    );
  }
  let parsed: unknown;
  if (params !== undefined) {
    try {
      parsed = JSON.parse(params);
    } catch {
      throw new BadRequestException('params must be JSON text in a multipart form');
    }
  }
  return { experiment, params: parsed, priority, key };
}
