import {
  defineContainerMetrics,
  type ContainerMetricDefs,
  type Registry,
} from '../../../metrics/src';
import type { ContainerSnapshot } from './probe';

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
