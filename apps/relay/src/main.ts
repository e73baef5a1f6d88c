import 'reflect-metadata';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { NestFactory } from '@nestjs/core';
import {
  describeConfig,
  NestPinoLogger,
  type Daemon,
  type Logger,
  type RelayConfig,
} from '../../../libs/config/src';
import { Counter, createRegistry, createTunnelMetrics } from '../../../libs/metrics/src';
import { loadKeyRing } from '../../../libs/tunnel/src';
import { exposureWarning } from './exposure';
import { RelayAdminModule } from './relay.module';
import type { RelayState } from './relay.state';
import { TunnelPool } from './tunnel-pool';

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Starts the relay: the loopback listener the web app calls, and the admin endpoints. */
export async function startRelay(config: RelayConfig, log: Logger): Promise<Daemon<RelayConfig>> {
  log.info({ config: describeConfig(config) }, 'relay starting');
  const registry = createRegistry('relay');
  const refused = new Counter({
    name: 'relay_connections_refused_total',
    help: 'Connections accepted on RELAY_LISTEN and closed at once, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  // Keys are checked (length, mode) before anything listens: a bad key file stops the start.
  const pool = new TunnelPool(
    config,
    await loadKeyRing(config.keyFiles),
    log,
    createTunnelMetrics(registry),
  );
  await pool.start();
  const state: RelayState = { tunnels: () => pool.views() };

  const sockets = new Set<Socket>();
  /** A listener whose every connection becomes a stream to `target` (RELAY_LISTEN: `api`). */
  const relayServer = (target?: string): Server => {
    const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      if (pool.relay(socket, target)) return;
      // No tunnel is up: close at once so the web app gets an immediate error, never a hang.
      refused.inc({ reason: 'no tunnel' });
      log.debug({ target }, 'connection refused: no tunnel up');
      socket.destroy();
    });
    server.on('connection', (s) => {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
    });
    return server;
  };
  /** Off loopback, anyone on that network reaches the target unauthenticated: say so. */
  const warnIfExposed = (srv: Server, name: string, target: string) => {
    const { address, port } = srv.address() as AddressInfo;
    const warning = exposureWarning({ name, target, host: address, port });
    if (warning) log.warn({ listener: name, target, address, port }, warning);
  };
  const server = relayServer();
  await listen(server, config.relayListen.host, config.relayListen.port);
  warnIfExposed(server, 'RELAY_LISTEN', 'api');
  const forwards: Server[] = [];
  for (const [target, { host, port }] of Object.entries(config.relayForwards)) {
    const forward = relayServer(target);
    forwards.push(forward);
    await listen(forward, host, port);
    warnIfExposed(forward, `RELAY_FORWARDS ${target}`, target);
  }

  const admin = await NestFactory.create(RelayAdminModule.forRoot(registry, state), {
    logger: new NestPinoLogger(log),
    abortOnError: false,
  });
  await admin.listen(config.adminListen.port, config.adminListen.host);
  log.info(
    {
      listen: server.address(),
      forwards: Object.fromEntries(
        Object.keys(config.relayForwards).map((t, i) => [t, forwards[i].address()]),
      ),
      admin: await admin.getUrl(),
    },
    'relay ready',
  );

  return {
    reload: async (next) => {
      await pool.reload((next ?? config).keyFiles);
    },
    close: async () => {
      const stopped = Promise.all(
        [server, ...forwards].map((srv) => new Promise((resolve) => srv.close(resolve))),
      );
      for (const s of sockets) s.destroy();
      await stopped;
      await pool.close();
      await admin.close();
      log.info('relay stopped');
    },
  };
}
