import { Controller, Get, Inject } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import { ExperimentCatalog } from '../experiments/catalog';
import { ApiHostGuard } from './responses';
import { Experiment } from './schemas';

/** `GET /experiments`: what can be submitted, with each parameter schema. */
@ApiTags('experiments')
@ApiHostGuard()
@Controller('experiments')
export class ExperimentsController {
  constructor(@Inject(ExperimentCatalog) private readonly catalog: ExperimentCatalog) {}

  @Get()
  @ApiOperation({ summary: 'the installed experiments, with the JSON Schema of their params' })
  @ApiOkResponse({ description: 'every installed experiment', type: [Experiment] })
  list(): Experiment[] {
    return this.catalog.list().map((e) => ({
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
