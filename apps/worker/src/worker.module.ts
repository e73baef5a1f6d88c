import { Module, type DynamicModule } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import type { Logger, WorkerConfig } from '../../../libs/config/src';
import { JobsModule, type JobsOptions } from '../../../libs/jobs/src';
import { HealthController } from './health/health.controller';
import { MetricsController } from './health/metrics.controller';
import { HealthMonitor } from './health/monitor';
import { TestController } from './test.controller';

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
      // Terminus logs nothing itself: a failed readiness is in the answer, not in the log.
      imports: [
        JobsModule.forRoot(config, logger, jobs),
        TerminusModule.forRoot({ logger: false }),
      ],
      controllers: [TestController, ...(monitor ? [HealthController, MetricsController] : [])],
      // The config and the logger are provided (and injected) by JobsModule.
      providers: monitor ? [{ provide: HealthMonitor, useValue: monitor }] : [],
    };
  }
}
