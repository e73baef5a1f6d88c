import { Controller, Get, Inject, Res } from '@nestjs/common';
import { ApiExtraModels, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import {
  HealthCheck,
  HealthCheckService,
  HealthIndicatorService,
  type HealthCheckResult,
} from '@nestjs/terminus';
import type { Response } from 'express';
import { ApiHostGuard, jsonContent } from '../../../../libs/jobs/src';
import { HealthMonitor, type Readiness } from './monitor';
import { HealthReport } from './schemas';

/**
 * `/health` (everything, for a person and `gpu-sidecar status`), `/health/live` (the process
 * answers) and `/health/ready` (it can take jobs: Redis and the queue answer, DATA_FOLDER above
 * MIN_FREE_DISK). 503 when not ready. Docker is reported, never a reason for 503: without it
 * only the docker experiments' jobs wait.
 */
@ApiTags('health')
@ApiHostGuard()
@ApiExtraModels(HealthReport)
@Controller('health')
export class HealthController {
  constructor(
    @Inject(HealthMonitor) private readonly monitor: HealthMonitor,
    @Inject(HealthCheckService) private readonly health: HealthCheckService,
    @Inject(HealthIndicatorService) private readonly indicator: HealthIndicatorService,
  ) {}

  @Get()
  @ApiOperation({ summary: 'everything: GPUs, containers, Redis, queue, disk, host, tunnels' })
  @ApiResponse({
    status: 200,
    description: 'ok or degraded',
    content: jsonContent(HealthReport),
  })
  @ApiResponse({
    status: 503,
    description: 'down: not ready (problems says why)',
    content: jsonContent(HealthReport),
  })
  async report(@Res({ passthrough: true }) res: Response) {
    const report = await this.monitor.report();
    res.status(report.status === 'down' ? 503 : 200);
    return report;
  }

  @Get('live')
  @ApiOperation({ summary: 'liveness: the process answers' })
  @HealthCheck()
  live(): Promise<HealthCheckResult> {
    // Answering at all is the proof: the event loop runs and the HTTP server accepts.
    return this.health.check([() => this.indicator.check('process').up({ pid: process.pid })]);
  }

  @Get('ready')
  @ApiOperation({
    summary: 'readiness: Redis, the queue and DATA_FOLDER are fine (Docker is reported only)',
  })
  @HealthCheck()
  async ready(): Promise<HealthCheckResult> {
    const r = await this.monitor.readiness();
    return this.health.check([
      () => this.redis(r),
      () => this.queue(r),
      () => this.disk(r),
      () => this.docker(r),
    ]);
  }

  private redis({ redis }: Readiness) {
    const check = this.indicator.check('redis');
    if (!redis) return check.down({ message: 'the job queue is not started' });
    const data = { latencyMs: redis.latencyMs, problems: redis.problems };
    return redis.healthy ? check.up(data) : check.down(data);
  }

  private queue({ queue }: Readiness) {
    const check = this.indicator.check('queue');
    return queue.ok ? check.up({ counts: queue.counts }) : check.down({ message: queue.error });
  }

  private disk({ disk, diskError }: Readiness) {
    const check = this.indicator.check('disk');
    if (!disk) return check.down({ message: diskError });
    const data = {
      path: disk.path,
      freeBytes: disk.freeBytes,
      freePercent: Math.round(disk.freePercent * 10) / 10,
      threshold: disk.threshold,
    };
    return disk.belowThreshold
      ? check.down({ ...data, message: 'free space under MIN_FREE_DISK' })
      : check.up(data);
  }

  /**
   * Docker unreachable leaves the worker ready: jobs of the other runners still run, and the
   * docker experiments' jobs wait in the queue until it answers (/health says which).
   */
  private docker({ docker }: Readiness) {
    const check = this.indicator.check('docker');
    if (!docker) return check.up({ required: false });
    const data = { reachable: docker.reachable, required: docker.required };
    if (docker.reachable) return check.up({ ...data, nvidiaRuntime: docker.nvidiaRuntime });
    return check.up({ ...data, reason: docker.reason ?? 'unreachable' });
  }
}
