import { Controller, Get, Header, Inject } from '@nestjs/common';
import { HealthMonitor } from './monitor';

/** Prometheus text: GPUs, containers, host, Redis, queue, jobs, tunnels, Node's process. */
@Controller()
export class MetricsController {
  constructor(@Inject(HealthMonitor) private readonly monitor: HealthMonitor) {}

  @Get('metrics')
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  metrics(): Promise<string> {
    return this.monitor.metrics();
  }
}
