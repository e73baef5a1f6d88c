import { Gauge, type Registry } from '../../../metrics/src';
import type { ContainerSnapshot } from './probe';

/** cAdvisor's names (label name), so existing dashboards carry over, plus ours for state. */
const METRIC = {
  CONTAINER_MEMORY_USAGE_BYTES: 'container_memory_usage_bytes',
  CONTAINER_CPU_USAGE_SECONDS: 'container_cpu_usage_seconds_total',
  CONTAINER_UP: 'container_up',
  CONTAINER_RESTARTS: 'container_restarts_total',
  CONTAINER_OOM_KILLED: 'container_oom_killed',
  CONTAINER_EXIT_CODE: 'container_exit_code',
  CONTAINER_PROBE_UP: 'container_probe_up',
} as const;

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

/**
 * cAdvisor-style container gauges from probe snapshots (label `name`). A container that is gone
 * loses its series; memory/CPU exist only for running containers, exit code only for stopped ones.
 * While Docker is unreachable, every container series is removed and container_probe_up is 0.
 */
export class ContainerMetrics {
  readonly defs: ContainerMetricDefs;
  private known = new Set<string>();

  constructor(registry: Registry) {
    this.defs = defineContainerMetrics(registry);
  }

  record(snap: ContainerSnapshot): void {
    const d = this.defs;
    d.probeUp.set(snap.ok ? 1 : 0);
    const seen = new Set<string>();
    if (snap.ok) {
      for (const c of snap.containers) {
        const l = { name: c.name };
        seen.add(c.name);
        d.up.set(l, c.running ? 1 : 0);
        d.restarts.set(l, c.restartCount);
        d.oomKilled.set(l, c.oomKilled ? 1 : 0);
        if (c.exitCode !== undefined) d.exitCode.set(l, c.exitCode);
        else d.exitCode.remove(l);
        if (c.running && c.memoryUsageBytes !== undefined) d.memory.set(l, c.memoryUsageBytes);
        else d.memory.remove(l);
        if (c.running && c.cpuUsageSeconds !== undefined) d.cpu.set(l, c.cpuUsageSeconds);
        else d.cpu.remove(l);
      }
    }
    for (const name of this.known) {
      if (seen.has(name)) continue;
      for (const g of [d.up, d.restarts, d.oomKilled, d.exitCode, d.memory, d.cpu])
        g.remove({ name });
    }
    this.known = seen;
  }
}
