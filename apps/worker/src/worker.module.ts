import { Module, type DynamicModule } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import type { Logger, WorkerConfig } from '../../../libs/config/src';
import { JobsModule, type JobsOptions } from '../../../libs/jobs/src';
import { HealthController } from './health/health.controller';
import { MetricsController } from './health/metrics.controller';
import { HealthMonitor } from './health/monitor';
import { TestController } from './test.controller';

/** DI tokens for what the CLI hands the worker: its validated config and its logger. */
export const WORKER_CONFIG = Symbol('WORKER_CONFIG');
export const LOGGER = Symbol('LOGGER');

/** The worker's Nest application: the job API, health and metrics, served on API_LISTEN. */
@Module({})
export class WorkerModule {
  static forRoot(
    config: WorkerConfig,
    logger: Logger,
    jobs: Partial<JobsOptions> = {},
    monitor?: HealthMonitor,
  ): DynamicModule {
    return {
      module: WorkerModule,
      global: true,
      // Terminus logs nothing itself: a failed readiness is in the answer, not in the log.
      imports: [
        JobsModule.forRoot(config, logger, jobs),
        TerminusModule.forRoot({ logger: false }),
      ],
      controllers: [TestController, ...(monitor ? [HealthController, MetricsController] : [])],
      providers: [
        { provide: WORKER_CONFIG, useValue: config },
        { provide: LOGGER, useValue: logger },
        ...(monitor ? [{ provide: HealthMonitor, useValue: monitor }] : []),
      ],
      exports: [WORKER_CONFIG, LOGGER],
    };
  }
}
