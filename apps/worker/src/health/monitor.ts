import { withDeadline, type Logger, type WorkerConfig } from '../../../../libs/config/src';
import {
  ContainerMetrics,
  ContainerProbe,
  dockerContainerSource,
  GpuMetrics,
  GpuSampler,
  HostMetrics,
  nvidiaSmiQuery,
  probeDisk,
  probeHost,
  probeRedis,
  summarizeHealth,
  type ContainerSource,
  type DiskStatus,
  type GpuQuery,
  type HealthSummary,
  type HostStatus,
  type RedisStatus,
} from '../../../../libs/health/src';
import {
  describeProblem,
  type DockerReadiness,
  type GpuInventory,
  type JobsRuntime,
} from '../../../../libs/jobs/src';
import { JobMetrics } from '../../../../libs/jobs/src';
import type { Registry } from '../../../../libs/metrics/src';
import type { TunnelSession } from '../../../../libs/tunnel/src';
import type { TunnelSessionView } from './schemas';

/**
 * How long each part of a readiness round (Redis, queue, disk, Docker, job counts) may take: past
 * it the part is reported down with "no answer within", so /health, /health/ready and /metrics
 * answer in about this long whatever is down. Before, a Redis that refused connections held
 * /health for over a minute (BullMQ's commands wait out their reconnect retries), and `status`
 * blamed the worker.
 */
export const PROBE_TIMEOUT_MS = 2_000;

export interface HealthMonitorOptions {
  config: WorkerConfig;
  log: Logger;
  registry: Registry;
  /** nvidia-smi from PATH by default. */
  gpuQuery?: GpuQuery;
  /** DOCKER_HOST's engine by default. */
  containerSource?: ContainerSource;
  /** Each probe's time budget; PROBE_TIMEOUT_MS by default (tests shorten it). */
  probeTimeoutMs?: number;
}

/** What the readiness check reads: each part live (Redis, disk, queue) or cached 3 s (Docker). */
export interface Readiness {
  redis?: RedisStatus;
  queue: { ok: boolean; error?: string; counts?: Record<string, Record<string, number>> };
  disk?: DiskStatus;
  diskError?: string;
  docker?: DockerReadiness;
}

/**
 * The worker's health: the GPU sampler every GPU_SAMPLE_INTERVAL; the container probe, and
 * Redis, DATA_FOLDER and host probes every HEALTH_SAMPLE_INTERVAL; all of them asynchronous, so none blocks the event loop
 * (systeminformation's graphics() would, for as long as nvidia-smi takes). It owns the worker's
 * metric recorders and answers /health, /health/ready and /metrics, each part within
 * PROBE_TIMEOUT_MS.
 */
export class HealthMonitor {
  /** Absent with GPU_DEVICES=none: nvidia-smi is then never run. */
  readonly gpu?: GpuSampler;
  readonly containers: ContainerProbe;
  private readonly host: HostMetrics;
  private rt?: JobsRuntime;
  private jobMetrics?: JobMetrics;
  private tunnels: () => TunnelSession[] = () => [];
  private hostStatus?: HostStatus;
  private timer?: NodeJS.Timeout;
  private probing?: Promise<void>;
  /** The readiness round in flight: its callers share it; the next call after it settles probes. */
  private readying?: Promise<Readiness>;
  private running = false;
  /** The Redis command connection's last error, until it is ready again (for /health's cause). */
  private redisError?: string;

  constructor(private readonly o: HealthMonitorOptions) {
    const { config, log, registry } = o;
    if (config.gpuDevices.kind !== 'none') {
      const gpuMetrics = new GpuMetrics(registry, {
        hostname: config.workerName,
        maxTemp: config.gpuMaxTemp,
      });
      this.gpu = new GpuSampler({
        query: o.gpuQuery ?? nvidiaSmiQuery(),
        selection: config.gpuDevices,
        maxTemp: config.gpuMaxTemp,
        intervalMs: config.gpuSampleIntervalMs,
        onSnapshot: (s) => gpuMetrics.record(s),
        logger: log,
      });
    }
    const containerMetrics = new ContainerMetrics(registry);
    this.containers = new ContainerProbe({
      source: o.containerSource ?? dockerContainerSource(config.dockerHost),
      workerName: config.workerName,
      names: config.healthContainers,
      intervalMs: config.healthSampleIntervalMs,
      onSnapshot: (s) => containerMetrics.record(s),
      logger: log,
    });
    this.host = new HostMetrics(registry);
  }

  /**
   * GPU detection and health for the allocator (JobsOptions.gpuInventory): the sampler's
   * devices (GPUs, and each MIG instance of a partitioned GPU), and their changes.
   */
  gpuInventory(): GpuInventory {
    return this.gpu?.inventory() ?? { detect: async () => [], isHealthy: () => false };
  }

  /** The job system, once Nest built it: Redis probe, queue and job metrics. */
  attachJobs(rt: JobsRuntime): void {
    this.rt = rt;
    this.jobMetrics = new JobMetrics(this.o.registry, rt.records, rt.queue);
    // ioredis says why it is not connected only in 'error' events; /health names that cause.
    const client = rt.records.client as Partial<Pick<JobsRuntime['records']['client'], 'on'>>;
    client.on?.('error', (err: Error) => (this.redisError = err.message));
    client.on?.('ready', () => (this.redisError = undefined));
  }

  private get probeTimeoutMs(): number {
    return this.o.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
  }

  /** `p` within the probe budget, else a rejection saying which part did not answer. */
  private bounded<T>(p: Promise<T>, what: string): Promise<T> {
    return withDeadline(p, this.probeTimeoutMs, what);
  }

  attachTunnels(sessions: () => TunnelSession[]): void {
    this.tunnels = sessions;
  }

  /**
   * First samples of everything (awaited), then GPUs every GPU_SAMPLE_INTERVAL, the rest every
   * HEALTH_SAMPLE_INTERVAL.
   */
  async start(): Promise<void> {
    this.running = true;
    await Promise.all([this.gpu?.start(), this.containers.start(), this.probe()]);
    this.schedule();
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await Promise.all([this.gpu?.stop(), this.containers.stop(), this.probing]);
    this.jobMetrics?.close();
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      void this.probe().finally(() => this.schedule());
    }, this.o.config.healthSampleIntervalMs);
    this.timer.unref();
  }

  /** Host, disk and Redis, recorded as metrics; never two rounds at once. */
  private probe(): Promise<void> {
    this.probing ??= (async () => {
      const [host] = await Promise.all([
        probeHost().catch(() => undefined),
        this.readiness().catch(() => undefined),
      ]);
      if (host) {
        this.hostStatus = host;
        this.host.host(host);
      }
    })().finally(() => (this.probing = undefined));
    return this.probing;
  }

  /**
   * Live Redis, queue and disk probes, Docker's cached status; also recorded as metrics. Callers
   * at the same time (/metrics, /health, /health/ready, the probe loop) share one round in flight;
   * a call after it settled starts a new one.
   */
  readiness(): Promise<Readiness> {
    this.readying ??= this.probeReadiness().finally(() => (this.readying = undefined));
    return this.readying;
  }

  private async probeReadiness(): Promise<Readiness> {
    const { config } = this.o;
    const rt = this.rt;
    // Every part is bounded: a hung statfs (a dead NFS mount), Docker socket or Redis is then a
    // problem line of its own, never a /health that does not answer.
    const [redis, queue, disk, docker] = await Promise.all([
      rt
        ? probeRedis(rt.records.client, {
            timeoutMs: this.probeTimeoutMs,
            url: rt.redisUrl,
            lastError: () => this.redisError,
          })
        : undefined,
      this.queueCounts(),
      this.bounded(probeDisk(config.dataFolder, config.minFreeDisk), 'DATA_FOLDER statfs').then(
        (d) => d,
        (err: Error) => err.message,
      ),
      rt &&
        this.bounded(rt.dockerStatus(), 'the Docker Engine').catch(
          (err: Error): DockerReadiness => ({
            reachable: false,
            reason: err.message,
            required: rt.catalog.list().some((e) => e.runner === 'docker'),
          }),
        ),
    ]);
    if (redis) this.host.redis(redis);
    if (typeof disk !== 'string') this.host.disk(disk);
    if (docker) this.jobMetrics?.defs.dockerUp.set(docker.reachable ? 1 : 0);
    return {
      redis,
      // BullMQ's own words for a Redis that is away ("Reached the max retries per request
      // limit ...") name neither Redis nor a cause: the Redis line above does.
      queue: !queue.ok && redis && !redis.up ? { ok: false, error: 'Redis is down' } : queue,
      ...(typeof disk === 'string' ? { diskError: disk } : { disk }),
      docker,
    };
  }

  private async queueCounts(): Promise<Readiness['queue']> {
    if (!this.jobMetrics) return { ok: false, error: 'the job queue is not started' };
    try {
      const counts = await this.bounded(this.jobMetrics.refreshQueues(), 'BullMQ job counts');
      return counts ? { ok: true, counts } : { ok: false, error: this.jobMetrics.queueError };
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
  }

  /** GET /health: everything, with one verdict. */
  async report(): Promise<HealthSummary & Record<string, unknown>> {
    const { config } = this.o;
    const ready = await this.readiness();
    const gpu = this.gpu?.snapshot();
    const containers = this.containers.snapshot();
    const summary = summarizeHealth({
      gpu,
      containers,
      redis: ready.redis,
      disk: ready.disk,
      diskError: ready.diskError,
      docker: ready.docker,
      servicesWatched: config.healthContainers.length > 0,
      queue: ready.queue,
      experiments: this.rt?.catalog.problems().map(describeProblem),
    });
    const tunnels: TunnelSessionView[] = this.tunnels().map((s) => ({
      peer: s.peer,
      streams: s.openStreams,
      ...(s.rttMs !== undefined ? { rttMs: Math.round(s.rttMs * 100) / 100 } : {}),
    }));
    return {
      ...summary,
      worker: config.workerName,
      gpus: gpu
        ? {
            enabled: true,
            maxTemp: config.gpuMaxTemp,
            sampledAt: gpu.sampledAt,
            stale: gpu.stale,
            error: gpu.error,
            missing: gpu.missing,
            vanished: gpu.vanished ?? [],
            devices: gpu.gpus,
          }
        : { enabled: false, devices: [] },
      containers,
      redis: ready.redis,
      queue: ready.queue,
      disk: ready.disk ?? { error: ready.diskError },
      host: this.hostStatus,
      tunnels,
      docker: ready.docker,
    };
  }

  /**
   * GET /metrics: gauges read from Redis first (each bounded: a gauge Redis cannot give in time
   * keeps its last value, and redis_up says why), then the registry's text.
   */
  async metrics(): Promise<string> {
    await Promise.all([
      this.jobMetrics &&
        this.bounded(this.jobMetrics.refreshRecords(), 'job counts').catch(() => undefined),
      this.readiness().catch(() => undefined),
    ]);
    return this.o.registry.metrics();
  }
}
