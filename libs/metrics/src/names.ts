import { Counter, Gauge, Histogram, type Registry } from './registry';

/**
 * Metric names users already know: DCGM exporter,
 * utkuozdemir/nvidia_gpu_exporter and cAdvisor, so existing Grafana dashboards and alert habits
 * carry over. Units follow the exporter each name comes from (DCGM framebuffer in MiB, the
 * nvidia_smi_* family in bytes and ratios).
 *
 * Not exported: DCGM_FI_DEV_XID_ERRORS. XID errors come from the kernel log / NVML events, and
 * `nvidia-smi --query-gpu` has no field for them, so we do not publish a value we cannot read.
 */
export const METRIC = {
  // DCGM exporter family: labels gpu (index), UUID, modelName, Hostname.
  DCGM_GPU_UTIL: 'DCGM_FI_DEV_GPU_UTIL',
  DCGM_FB_USED: 'DCGM_FI_DEV_FB_USED',
  DCGM_FB_FREE: 'DCGM_FI_DEV_FB_FREE',
  DCGM_GPU_TEMP: 'DCGM_FI_DEV_GPU_TEMP',
  DCGM_POWER_USAGE: 'DCGM_FI_DEV_POWER_USAGE',
  // nvidia_gpu_exporter family: label uuid.
  NVSMI_UTILIZATION_GPU_RATIO: 'nvidia_smi_utilization_gpu_ratio',
  NVSMI_MEMORY_USED_BYTES: 'nvidia_smi_memory_used_bytes',
  NVSMI_MEMORY_TOTAL_BYTES: 'nvidia_smi_memory_total_bytes',
  NVSMI_TEMPERATURE_GPU: 'nvidia_smi_temperature_gpu',
  NVSMI_POWER_DRAW_WATTS: 'nvidia_smi_power_draw_watts',
  // Ours.
  GPU_HEALTHY: 'gpu_healthy',
  GPU_PROBE_ERRORS: 'gpu_probe_errors_total',
  GPU_PROBE_UP: 'gpu_probe_up',
  GPU_DEVICES_SEEN: 'gpu_devices',
  GPU_DEVICES_MISSING: 'gpu_devices_missing',
  GPU_MAX_TEMP: 'gpu_max_temperature_celsius',
  // cAdvisor family (label name) plus ours for state.
  CONTAINER_MEMORY_USAGE_BYTES: 'container_memory_usage_bytes',
  CONTAINER_CPU_USAGE_SECONDS: 'container_cpu_usage_seconds_total',
  CONTAINER_UP: 'container_up',
  CONTAINER_RESTARTS: 'container_restarts_total',
  CONTAINER_OOM_KILLED: 'container_oom_killed',
  CONTAINER_EXIT_CODE: 'container_exit_code',
  CONTAINER_PROBE_UP: 'container_probe_up',
  // node_exporter names for DATA_FOLDER (label mountpoint = the DATA_FOLDER path) and the host.
  FS_AVAIL_BYTES: 'node_filesystem_avail_bytes',
  FS_SIZE_BYTES: 'node_filesystem_size_bytes',
  DATA_FOLDER_LOW: 'data_folder_below_min_free',
  MEM_AVAILABLE_BYTES: 'node_memory_MemAvailable_bytes',
  MEM_TOTAL_BYTES: 'node_memory_MemTotal_bytes',
  HOST_CPU_LOAD_RATIO: 'host_cpu_load_ratio',
  // redis_exporter names, plus ours.
  REDIS_UP: 'redis_up',
  REDIS_MEMORY_USED_BYTES: 'redis_memory_used_bytes',
  REDIS_PING_SECONDS: 'redis_ping_latency_seconds',
  REDIS_HEALTHY: 'redis_healthy',
  // BullMQ's name (bull_exporter / BullMQ's own OpenTelemetry), then ours for jobs.
  BULLMQ_JOB_COUNT: 'bullmq_job_count',
  JOBS: 'gpu_sidecar_jobs',
  JOBS_FINISHED: 'gpu_sidecar_jobs_finished_total',
  JOB_RUN_SECONDS: 'gpu_sidecar_job_run_seconds',
  JOB_WAIT_SECONDS: 'gpu_sidecar_job_wait_seconds',
  DOCKER_UP: 'gpu_sidecar_docker_up',
} as const;

export const DCGM_LABELS = ['gpu', 'UUID', 'modelName', 'Hostname'] as const;
/**
 * DCGM exporter's labels of a MIG instance's series, beside the four above (which then name the
 * instance's GPU: `UUID` is the GPU's, not the instance's): its profile and GPU instance id.
 */
export const DCGM_MIG_LABELS = ['GPU_I_PROFILE', 'GPU_I_ID'] as const;
export type DcgmLabel = (typeof DCGM_LABELS)[number] | (typeof DCGM_MIG_LABELS)[number];

/** The GPU gauges and counters, registered on one registry. */
export interface GpuMetricDefs {
  dcgmUtil: Gauge<DcgmLabel>;
  dcgmFbUsed: Gauge<DcgmLabel>;
  dcgmFbFree: Gauge<DcgmLabel>;
  dcgmTemp: Gauge<DcgmLabel>;
  dcgmPower: Gauge<DcgmLabel>;
  smiUtilRatio: Gauge<'uuid'>;
  smiMemUsed: Gauge<'uuid'>;
  smiMemTotal: Gauge<'uuid'>;
  smiTemp: Gauge<'uuid'>;
  smiPower: Gauge<'uuid'>;
  healthy: Gauge<'gpu' | 'uuid' | (typeof DCGM_MIG_LABELS)[number]>;
  probeErrors: Counter<'reason'>;
  probeUp: Gauge<string>;
  seen: Gauge<string>;
  missing: Gauge<string>;
  maxTemp: Gauge<string>;
}

export function defineGpuMetrics(registry: Registry): GpuMetricDefs {
  const registers = [registry];
  const dcgm = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: [...DCGM_LABELS, ...DCGM_MIG_LABELS], registers });
  const smi = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: ['uuid'] as const, registers });
  return {
    dcgmUtil: dcgm(METRIC.DCGM_GPU_UTIL, 'GPU utilization (in %).'),
    dcgmFbUsed: dcgm(METRIC.DCGM_FB_USED, 'Framebuffer memory used (in MiB).'),
    dcgmFbFree: dcgm(METRIC.DCGM_FB_FREE, 'Framebuffer memory free (in MiB).'),
    dcgmTemp: dcgm(METRIC.DCGM_GPU_TEMP, 'GPU temperature (in C).'),
    dcgmPower: dcgm(METRIC.DCGM_POWER_USAGE, 'Power draw (in W).'),
    smiUtilRatio: smi(METRIC.NVSMI_UTILIZATION_GPU_RATIO, 'utilization.gpu [%] as a ratio 0-1'),
    smiMemUsed: smi(METRIC.NVSMI_MEMORY_USED_BYTES, 'memory.used [MiB] in bytes'),
    smiMemTotal: smi(METRIC.NVSMI_MEMORY_TOTAL_BYTES, 'memory.total [MiB] in bytes'),
    smiTemp: smi(METRIC.NVSMI_TEMPERATURE_GPU, 'temperature.gpu (C)'),
    smiPower: smi(METRIC.NVSMI_POWER_DRAW_WATTS, 'power.draw [W]'),
    healthy: new Gauge({
      name: METRIC.GPU_HEALTHY,
      help:
        '1 when the GPU (or MIG instance: uuid MIG-..., with GPU_I_*) may get new jobs ' +
        '(not hot, no uncorrected ECC errors, seen by nvidia-smi)',
      labelNames: ['gpu', 'uuid', ...DCGM_MIG_LABELS] as const,
      registers,
    }),
    probeErrors: new Counter({
      name: METRIC.GPU_PROBE_ERRORS,
      help: 'nvidia-smi queries that failed, by reason (missing, exit, timeout, parse, spawn)',
      labelNames: ['reason'] as const,
      registers,
    }),
    probeUp: new Gauge({
      name: METRIC.GPU_PROBE_UP,
      help: '1 when the last nvidia-smi query succeeded',
      registers,
    }),
    seen: new Gauge({
      name: METRIC.GPU_DEVICES_SEEN,
      help: 'GPUs selected by GPU_DEVICES that the last good nvidia-smi query reported',
      registers,
    }),
    missing: new Gauge({
      name: METRIC.GPU_DEVICES_MISSING,
      help: 'GPU_DEVICES entries that nvidia-smi no longer reports (a lost GPU)',
      registers,
    }),
    maxTemp: new Gauge({
      name: METRIC.GPU_MAX_TEMP,
      help: 'GPU_MAX_TEMP: at this temperature a GPU gets no new job',
      registers,
    }),
  };
}

/** The container gauges (label name = the container's name without the leading slash). */
export interface ContainerMetricDefs {
  memory: Gauge<'name'>;
  cpu: Gauge<'name'>;
  up: Gauge<'name'>;
  restarts: Gauge<'name'>;
  oomKilled: Gauge<'name'>;
  exitCode: Gauge<'name'>;
  probeUp: Gauge<string>;
}

export function defineContainerMetrics(registry: Registry): ContainerMetricDefs {
  const registers = [registry];
  const g = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: ['name'] as const, registers });
  return {
    memory: g(METRIC.CONTAINER_MEMORY_USAGE_BYTES, 'Current memory usage in bytes (Docker stats)'),
    // Set from Docker's cumulative total_usage: a counter by meaning, exposed as a gauge because
    // the value is read, not incremented (it resets when the container is recreated).
    cpu: g(METRIC.CONTAINER_CPU_USAGE_SECONDS, 'Cumulative CPU time consumed in seconds'),
    up: g(METRIC.CONTAINER_UP, '1 when the container is running'),
    restarts: g(METRIC.CONTAINER_RESTARTS, "Docker's RestartCount for the container"),
    oomKilled: g(METRIC.CONTAINER_OOM_KILLED, '1 when the container was last killed for memory'),
    exitCode: g(METRIC.CONTAINER_EXIT_CODE, 'Exit code of a container that is not running'),
    probeUp: new Gauge({
      name: METRIC.CONTAINER_PROBE_UP,
      help: '1 when the Docker Engine answered the last container probe',
      registers,
    }),
  };
}

/** Host, DATA_FOLDER and Redis gauges. */
export interface HostMetricDefs {
  fsAvail: Gauge<'mountpoint'>;
  fsSize: Gauge<'mountpoint'>;
  dataFolderLow: Gauge<'mountpoint'>;
  memAvailable: Gauge<string>;
  memTotal: Gauge<string>;
  cpuLoad: Gauge<string>;
  redisUp: Gauge<string>;
  redisMemory: Gauge<string>;
  redisPing: Gauge<string>;
  redisHealthy: Gauge<string>;
}

export function defineHostMetrics(registry: Registry): HostMetricDefs {
  const registers = [registry];
  const fs = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: ['mountpoint'] as const, registers });
  const g = (name: string, help: string) => new Gauge({ name, help, registers });
  return {
    fsAvail: fs(METRIC.FS_AVAIL_BYTES, 'DATA_FOLDER: bytes available to non-root users'),
    fsSize: fs(METRIC.FS_SIZE_BYTES, 'DATA_FOLDER: filesystem size in bytes'),
    dataFolderLow: fs(
      METRIC.DATA_FOLDER_LOW,
      '1 when DATA_FOLDER free space is under MIN_FREE_DISK',
    ),
    memAvailable: g(METRIC.MEM_AVAILABLE_BYTES, 'Memory available to new processes, bytes'),
    memTotal: g(METRIC.MEM_TOTAL_BYTES, 'Total memory, bytes'),
    cpuLoad: g(METRIC.HOST_CPU_LOAD_RATIO, 'Host CPU load over all cores, 0-1'),
    redisUp: g(METRIC.REDIS_UP, '1 when Redis answers PING'),
    redisMemory: g(METRIC.REDIS_MEMORY_USED_BYTES, "Redis INFO memory's used_memory"),
    redisPing: g(METRIC.REDIS_PING_SECONDS, 'Round trip of the last PING, seconds'),
    redisHealthy: g(METRIC.REDIS_HEALTHY, '1 when Redis is up with noeviction and AOF'),
  };
}

/** Queue and job metrics (libs/jobs/src/jobs.metrics.ts records them). */
export interface JobMetricDefs {
  bullmq: Gauge<'queue' | 'state'>;
  jobs: Gauge<'experiment' | 'state'>;
  finished: Counter<'experiment' | 'state'>;
  run: Histogram<'experiment'>;
  wait: Histogram<'experiment'>;
  dockerUp: Gauge<string>;
}

/** Seconds, from a quick job to a long training run. */
const JOB_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400];

export function defineJobMetrics(registry: Registry): JobMetricDefs {
  const registers = [registry];
  return {
    bullmq: new Gauge({
      name: METRIC.BULLMQ_JOB_COUNT,
      help: 'BullMQ jobs by queue and state (the same in every worker of one Redis: use max)',
      labelNames: ['queue', 'state'] as const,
      registers,
    }),
    jobs: new Gauge({
      name: METRIC.JOBS,
      help: 'Job records by experiment and state (shared by the workers of one Redis: use max)',
      labelNames: ['experiment', 'state'] as const,
      registers,
    }),
    finished: new Counter({
      name: METRIC.JOBS_FINISHED,
      help: 'Jobs this worker process moved to a final state (succeeded, failed, cancelled)',
      labelNames: ['experiment', 'state'] as const,
      registers,
    }),
    run: new Histogram({
      name: METRIC.JOB_RUN_SECONDS,
      help: 'Job run time, start to end, for jobs this worker process ended',
      labelNames: ['experiment'] as const,
      buckets: JOB_BUCKETS,
      registers,
    }),
    wait: new Histogram({
      name: METRIC.JOB_WAIT_SECONDS,
      help: 'Time from submission to start, for jobs this worker process started',
      labelNames: ['experiment'] as const,
      buckets: JOB_BUCKETS,
      registers,
    }),
    dockerUp: new Gauge({
      name: METRIC.DOCKER_UP,
      help: '1 when the Docker Engine (DOCKER_HOST) answers',
      registers,
    }),
  };
}
