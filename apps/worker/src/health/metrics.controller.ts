import { Controller, Get, Header, Inject } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import { ApiHostGuard } from '../../../../libs/jobs/src';
import { HealthMonitor } from './monitor';

/** Prometheus text: GPUs, containers, host, Redis, queue, jobs, tunnels, Node's process. */
@ApiTags('health')
@ApiHostGuard()
@Controller()
export class MetricsController {
  constructor(@Inject(HealthMonitor) private readonly monitor: HealthMonitor) {}

  @Get('metrics')
  @ApiOperation({ summary: 'Prometheus metrics (text exposition format 0.0.4)' })
  @ApiOkResponse({
    description: 'the samples',
    content: { 'text/plain': { schema: { type: 'string' } } },
  })
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  metrics(): Promise<string> {
    return this.monitor.metrics();
  }
}
