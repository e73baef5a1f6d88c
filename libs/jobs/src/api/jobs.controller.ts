import { unlink } from 'node:fs/promises';
import {
  BadRequestException,
  Body,
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
} from '@nestjs/common';
import { ApiBody, ApiConsumes, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { JOB_STATES, type JobState } from '../job-record';
import { publicRecord, type SubmitRequest, type UploadedInput } from '../jobs.service';
import { JobsRuntime } from '../jobs.runtime';
import { checkJobId, toHttp } from './http-errors';
import { FORM_LIMITS, receiveForm } from './upload';

/** Submit, list, read and cancel jobs (README.md, "Job API"; libs/jobs/README.md, "Submitting"). */
@ApiTags('jobs')
@Controller('jobs')
export class JobsController {
  constructor(@Inject(JobsRuntime) private readonly rt: JobsRuntime) {}

  @Post()
  @ApiOperation({
    summary: 'submit a job: JSON, or multipart with input files (fields before files)',
  })
  @ApiConsumes('application/json', 'multipart/form-data')
  @ApiBody({
    schema: {
      type: 'object',
      required: ['experiment'],
      properties: {
        experiment: { type: 'string' },
        params: { type: 'object', description: 'multipart: JSON text' },
        priority: { type: 'integer', minimum: 1, maximum: 1000, description: '1 runs first' },
        key: { type: 'string', description: 'idempotency key: the same key returns the first job' },
        files: {
          type: 'array',
          items: { type: 'string', format: 'binary' },
          description: 'multipart only, after the fields; any field name',
        },
      },
    },
  })
  async submit(
    @Req() req: Request,
    @Body() body: unknown,
    @Res({ passthrough: true }) res: Response,
  ) {
    let uploads: UploadedInput[] = [];
    try {
      let submit: SubmitRequest;
      if (req.is('multipart/form-data') === null) {
        // express answers null when the request has no body at all.
        throw new BadRequestException('the body is empty: send {"experiment": ...} as JSON');
      } else if (req.is('multipart/form-data')) {
        const form = await receiveForm(req, res, {
          limits: { ...FORM_LIMITS, totalBytes: this.rt.maxUploadBytes },
          dir: this.rt.uploadDir,
          // fromForm throws at once when the experiment field is missing (not after the check).
          beforeFirstFile: (fields) =>
            this.rt.service.check(fromForm(fields, true)).then(() => undefined),
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
      const { record, created } = await this.rt.service.submit(submit);
      res.status(created ? 201 : 200);
      return { id: record.id, state: record.state };
    } catch (err) {
      throw toHttp(err);
    } finally {
      // Accepted files were moved into input/; whatever is left here was refused.
      await Promise.all(uploads.map((f) => unlink(f.path).catch(() => undefined)));
    }
  }

  @Get()
  @ApiQuery({ name: 'experiment', required: false })
  @ApiQuery({ name: 'state', required: false, enum: JOB_STATES })
  @ApiQuery({ name: 'limit', required: false, description: '1-1000, default 100' })
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
    try {
      const jobs = await this.rt.service.list({
        experiment,
        state: state as JobState | undefined,
        limit: n,
      });
      return jobs.map(publicRecord);
    } catch (err) {
      throw toHttp(err);
    }
  }

  @Get(':id')
  async get(@Param('id') id: string) {
    try {
      return publicRecord(await this.rt.service.get(checkJobId(id)));
    } catch (err) {
      throw toHttp(err);
    }
  }

  @Delete(':id')
  @HttpCode(200)
  @ApiOperation({ summary: 'cancel: a queued job never starts, a running one is stopped' })
  async cancel(@Param('id') id: string) {
    try {
      return publicRecord(await this.rt.service.cancel(checkJobId(id)));
    } catch (err) {
      throw toHttp(err);
    }
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
