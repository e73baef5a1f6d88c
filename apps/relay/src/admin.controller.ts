import { Controller, Get, Header, HttpStatus, Inject, Res } from '@nestjs/common';
import type { Response } from 'express';
import type { Registry } from '../../../libs/metrics/src';
import { RELAY_REGISTRY, RELAY_STATE, type RelayState } from './relay.state';

/** The relay's own endpoints on ADMIN_LISTEN: readiness for load balancers, metrics for Prometheus. */
@Controller()
export class AdminController {
  constructor(
    @Inject(RELAY_REGISTRY) private readonly registry: Registry,
    @Inject(RELAY_STATE) private readonly state: RelayState,
  ) {}

  /** 200 when at least one tunnel is authenticated, else 503; lists every tunnel either way. */
  @Get('healthz')
  healthz(@Res() res: Response): void {
    const tunnels = this.state.tunnels();
    const ready = tunnels.some((t) => t.state === 'up');
    res.status(ready ? HttpStatus.OK : HttpStatus.SERVICE_UNAVAILABLE).json({
      status: ready ? 'ok' : 'no tunnel up',
      tunnels,
    });
  }

  @Get('metrics')
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  async metrics(): Promise<string> {
    return this.registry.metrics();
  }
}
