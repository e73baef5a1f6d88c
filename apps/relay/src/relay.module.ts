import { Module, type DynamicModule } from '@nestjs/common';
import type { Registry } from '../../../libs/metrics/src';
import { AdminController } from './admin.controller';
import { RELAY_REGISTRY, RELAY_STATE, type RelayState } from './relay.state';

/** The relay's admin application (ADMIN_LISTEN): /healthz and /metrics. */
@Module({})
export class RelayAdminModule {
  static forRoot(registry: Registry, state: RelayState): DynamicModule {
    return {
      module: RelayAdminModule,
      controllers: [AdminController],
      providers: [
        { provide: RELAY_REGISTRY, useValue: registry },
        { provide: RELAY_STATE, useValue: state },
      ],
    };
  }
}
