import { Controller, Get, Inject } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { JobsRuntime } from '../jobs.runtime';

/** `GET /experiments`: what can be submitted, with each parameter schema. */
@ApiTags('experiments')
@Controller('experiments')
export class ExperimentsController {
  constructor(@Inject(JobsRuntime) private readonly rt: JobsRuntime) {}

  @Get()
  @ApiOkResponse({ description: 'installed experiments with their parameter JSON Schemas' })
  list() {
    return this.rt.catalog.list().map((e) => ({
      name: e.name,
      runner: e.runner,
      gpus: e.gpus,
      gpuMemory: e.gpuMemoryBytes ?? null,
      migProfile: e.migProfile ?? null,
      timeout: e.timeoutMs ?? null,
      attempts: e.attempts,
      params: e.params,
    }));
  }
}
