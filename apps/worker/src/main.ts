import 'reflect-metadata';
import type { Server } from 'node:http';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import {
  describeConfig,
  HostPolicy,
  NestPinoLogger,
  requestGuard,
  type Daemon,
  type Logger,
  type WorkerConfig,
} from '../../../libs/config/src';
import { JobsRuntime, setupOpenApi } from '../../../libs/jobs/src';
import { createRegistry, createTunnelMetrics } from '../../../libs/metrics/src';
import { boundHttpListener, metricReason } from '../../../libs/tunnel/src';
import { HealthMonitor } from './health/monitor';
import { mountQueuesUi } from './queues-ui';
import { startWorkerTunnels } from './tunnel';
import { WorkerModule } from './worker.module';

/**
 * Starts the worker daemon: health probes (GPU detection feeds the allocator), the job system,
 * the API on API_LISTEN (jobs, /health, /metrics, /queues), then the tunnels that lead to it.
 */
export async function startWorker(
  config: WorkerConfig,
  log: Logger,
): Promise<Daemon<WorkerConfig>> {
  log.info({ config: describeConfig(config) }, 'worker starting');
  // One registry for everything the worker measures, tunnels included: served at /metrics.
  const registry = createRegistry('worker');
  const tunnelMetrics = createTunnelMetrics(registry, metricReason);
  const monitor = new HealthMonitor({ config, log, registry });
  const app = await NestFactory.create<NestExpressApplication>(
    WorkerModule.forRoot(config, log, { gpuInventory: monitor.gpuInventory() }, monitor),
    { logger: new NestPinoLogger(log), abortOnError: false },
  );
  app.disable('x-powered-by');
  // First of all middleware (before the body parsers, the routes and /queues): a foreign Host
  // (DNS rebinding) or a cross-site Origin on a state-changing request is refused before
  // anything is read or done.
  app.use(requestGuard(new HostPolicy(config.apiListen.host, config.apiHosts)));
  // A client that half-closes after its request (HTTP/1.0, `nc -N`, a relay client's FIN
  // carried by the tunnel) still gets its answer: Node's HTTP server otherwise ends the
  // connection as soon as it reads the FIN, before an asynchronous handler has answered. Over
  // TCP that was hidden by the FIN arriving in a later read; through the tunnel's in-process
  // `api` target, DATA and FIN arrive in one turn (test/e2e/tunnel.e2e-spec.ts, half-close).
  // `httpAllowHalfOpen` is the http.Server property for it (set to false in its constructor).
  (app.getHttpServer() as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  // Clients on API_LISTEN itself (the CLI, Prometheus, a front without the relay): silent
  // connections go after 10 s, and the listener never takes the descriptors the tunnel, the
  // jobs' logs and Redis need. Streams from the tunnel are not counted here.
  boundHttpListener(app.getHttpServer(), {
    maxConnections: 4096,
    fileShare: 1 / 4,
    maxWaiting: 1024,
  });
  const rt = app.get(JobsRuntime);
  monitor.attachJobs(rt);
  mountQueuesUi(app, rt, config.queueUi);
  // /docs and /docs-json: the document of every route above, from the real application.
  setupOpenApi(app);
  let tunnels: Awaited<ReturnType<typeof startWorkerTunnels>>;
  try {
    await monitor.start();
    await app.listen(config.apiListen.port, config.apiListen.host);
    // Tunnels come up last, so the first stream through them finds the API listening.
    tunnels = await startWorkerTunnels(config, log, tunnelMetrics, app.getHttpServer());
  } catch (err) {
    await monitor.stop();
    await app.close();
    throw err;
  }
  const url = await app.getUrl();
  monitor.attachTunnels(() => tunnels.sessions());
  log.info({ api: url, queueUi: config.queueUi }, 'worker ready');
  return {
    // The API and the tunnels stay up while draining: status, logs and files keep answering.
    drain: () => rt.drain(),
    reload: async (next) => {
      await tunnels.reload(next?.keyFiles);
    },
    // SIGHUP also reads EXPERIMENTS_DIR again (the file watch misses changes made on another
    // NFS client); a bad file is a warning there, the version loaded before stays.
    refresh: async () => {
      await rt.reloadExperiments('SIGHUP');
    },
    close: async () => {
      await tunnels.close();
      await monitor.stop();
      // Long-lived answers (SSE, logs?follow=1) and requests cut half-way would hold the HTTP
      // server's close until the stop deadline: they get 2 s, then their connections are ended.
      const server: Server = app.getHttpServer();
      const cut = setTimeout(() => server.closeAllConnections(), 2_000);
      cut.unref();
      await app.close();
      clearTimeout(cut);
      log.info('worker stopped');
    },
  };
}
