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
  UploadedFiles,
  UseInterceptors,
} from '@nestjs/common';
import { AnyFilesInterceptor } from '@nestjs/platform-express';
import { ApiBody, ApiConsumes, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { JOB_STATES, type JobState } from '../job-record';
import { publicRecord, type SubmitRequest } from '../jobs.service';
import { JobsRuntime } from '../jobs.runtime';
import { checkJobId, toHttp } from './http-errors';

/** Submit, list, read and cancel jobs (DESIGN.md, "Job API"). */
@ApiTags('jobs')
@Controller('jobs')
export class JobsController {
  constructor(@Inject(JobsRuntime) private readonly rt: JobsRuntime) {}

  @Post()
  @ApiOperation({ summary: 'submit a job: JSON, or multipart with input files' })
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
      },
    },
  })
  @UseInterceptors(AnyFilesInterceptor())
  async submit(
    @Req() req: Request,
    @Body() body: Record<string, unknown> | undefined,
    @UploadedFiles() files: { originalname: string; path: string }[] | undefined,
    @Res({ passthrough: true }) res: Response,
  ) {
    const uploads = files ?? [];
    try {
      const submit: SubmitRequest = { experiment: undefined, ...(body ?? {}), files: uploads };
      if (req.is('multipart/form-data') && typeof body?.params === 'string') {
        try {
          submit.params = JSON.parse(body.params);
        } catch {
          throw new BadRequestException('params must be JSON text in a multipart form');
        }
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
