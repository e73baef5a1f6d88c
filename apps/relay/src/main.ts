import 'reflect-metadata';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { NestFactory } from '@nestjs/core';
import {
  describeConfig,
  HostPolicy,
  NestPinoLogger,
  requestGuard,
  type Daemon,
  type Logger,
  type RelayConfig,
} from '../../../libs/config/src';
import { Counter, createRegistry, createTunnelMetrics } from '../../../libs/metrics/src';
import {
  boundHttpListener,
  metricReason,
  TunnelEndpoint,
  withinFileLimit,
} from '../../../libs/tunnel/src';
import { MAX_RELAY_CONNECTIONS, RelayClients } from './clients';
import { exposureWarning } from './exposure';
import { RelayAdminModule } from './relay.module';
import type { RelayState } from './relay.state';
import { API_TARGET, TunnelPool } from './tunnel-pool';

/** What the admin listener's refusals name (ADMIN_LISTEN, ADMIN_HOSTS). */
const ADMIN_GUARD_WORDS = {
  listener: "the relay's admin listener",
  listen: 'ADMIN_LISTEN',
  hosts: 'ADMIN_HOSTS',
  daemon: 'relay',
  changes: 'use it',
};

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    // A listen queue as deep as the connections the relay may hold (capped by somaxconn).
    server.listen({ port, host, backlog: server.maxConnections }, () => {
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
    help: 'Connections accepted on RELAY_LISTEN or a forward and closed without being relayed (no tunnel, first byte timeout, evicted, stream refused) or cut (idle timeout), by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  // Keys are checked (length, mode) before anything listens: a bad key file stops the start.
  const tunnels = await TunnelEndpoint.start({
    config,
    logger: log,
    metrics: createTunnelMetrics(registry, metricReason),
  });
  const pool = new TunnelPool(tunnels);
  const state: RelayState = { tunnels: () => tunnels.views() };

  const sockets = new Set<Socket>();
  /**
   * A listener whose every connection becomes a stream to `target`: RELAY_LISTEN (`api`,
   * HTTP) or a RELAY_FORWARDS name (raw TCP, its server speaking first when listed in
   * RELAY_FORWARDS_SERVER_FIRST). clients.ts says how each kind is carried.
   */
  const relayServer = (target: string, http: boolean, serverFirst = false): Server => {
    const clients = new RelayClients({
      target,
      http,
      serverFirst,
      pool,
      log,
      refused: (reason) => refused.inc({ reason }),
    });
    const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) =>
      clients.accept(socket),
    );
    // Within the descriptor limit: past it a newcomer is closed at once, where running out of
    // descriptors (EMFILE) would fail every accept, and every file the relay opens.
    server.maxConnections = withinFileLimit(MAX_RELAY_CONNECTIONS, 0.75);
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
  const server = relayServer(API_TARGET, true);
  await listen(server, config.relayListen.host, config.relayListen.port);
  warnIfExposed(server, 'RELAY_LISTEN', 'api');
  const forwards: Server[] = [];
  for (const [target, { host, port }] of Object.entries(config.relayForwards)) {
    const forward = relayServer(target, false, config.relayForwardsServerFirst.includes(target));
    forwards.push(forward);
    await listen(forward, host, port);
    warnIfExposed(forward, `RELAY_FORWARDS ${target}`, target);
  }

  const admin = await NestFactory.create(RelayAdminModule.forRoot(registry, state), {
    logger: new NestPinoLogger(log),
    abortOnError: false,
  });
  // First of all middleware: a foreign Host (DNS rebinding: a page elsewhere whose name now
  // resolves to this host) or a cross-site Origin on a state-changing request is refused.
  admin.use(
    requestGuard(new HostPolicy(config.adminListen.host, config.adminHosts), ADMIN_GUARD_WORDS),
  );
  // Prometheus and an admin's curl: a few connections; silent ones go after 10 s.
  boundHttpListener(admin.getHttpServer(), {
    maxConnections: 1024,
    fileShare: 1 / 8,
    maxWaiting: 256,
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
      await tunnels.reload((next ?? config).keyFiles);
    },
    close: async () => {
      const stopped = Promise.all(
        [server, ...forwards].map((srv) => new Promise((resolve) => srv.close(resolve))),
      );
      for (const s of sockets) s.destroy();
      await stopped;
      await tunnels.close('relay stopping');
      await admin.close();
      log.info('relay stopped');
    },
  };
}
