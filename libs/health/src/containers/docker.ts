import { dockerClient, unlessNotFound } from '../../../docker/src';
import type { ContainerEvent, ContainerInspect, ContainerSource, ContainerStats } from './source';

/**
 * A ContainerSource over the Docker Engine API at `hostUrl` (DOCKER_HOST), through libs/docker's
 * client.
 */
export function dockerContainerSource(hostUrl: string): ContainerSource {
  const docker = dockerClient(hostUrl);
  return {
    async ping() {
      await docker.ping();
    },
    async listByLabel(label) {
      const list = await docker.listContainers({ all: true, filters: { label: [label] } });
      return list.map((c) => c.Id);
    },
    async inspect(idOrName): Promise<ContainerInspect | undefined> {
      const i = await unlessNotFound(docker.getContainer(idOrName).inspect());
      if (!i) return undefined;
      return {
        id: i.Id,
        name: i.Name.replace(/^\//, ''),
        status: i.State.Status,
        running: i.State.Running,
        health: i.State.Health?.Status,
        restartCount: i.RestartCount ?? 0,
        oomKilled: i.State.OOMKilled,
        exitCode: i.State.ExitCode,
        startedAt: i.State.StartedAt,
        finishedAt: i.State.FinishedAt,
        labels: i.Config.Labels ?? {},
      };
    },
    async stats(id): Promise<ContainerStats> {
      // one-shot: one reading now instead of waiting ~1 s for a second sample (API ≥ 1.41).
      const s = (await docker
        .getContainer(id)
        .stats({ stream: false, 'one-shot': true } as { stream: false })) as {
        memory_stats?: { usage?: number };
        cpu_stats?: { cpu_usage?: { total_usage?: number } };
      };
      return {
        memoryUsageBytes: s.memory_stats?.usage,
        cpuUsageSeconds:
          s.cpu_stats?.cpu_usage?.total_usage === undefined
            ? undefined
            : s.cpu_stats.cpu_usage.total_usage / 1e9,
      };
    },
    async events(onEvent, onEnd) {
      const ac = new AbortController();
      const stream = (await docker.getEvents({
        filters: { type: ['container'] },
        abortSignal: ac.signal,
      } as object)) as NodeJS.ReadableStream & { destroy?: () => void };
      let buf = '';
      let ended = false;
      const end = (err?: Error) => {
        if (ended) return;
        ended = true;
        onEnd(err);
      };
      stream.on('data', (chunk: Buffer) => {
        buf += chunk.toString('utf8');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          try {
            const e = JSON.parse(line) as {
              Action?: string;
              status?: string;
              Actor?: { ID?: string; Attributes?: Record<string, string> };
              id?: string;
            };
            const ev: ContainerEvent = {
              action: e.Action ?? e.status ?? '',
              id: e.Actor?.ID ?? e.id ?? '',
              attributes: e.Actor?.Attributes ?? {},
            };
            onEvent(ev);
          } catch {
            // A line we cannot read is skipped; the periodic refresh covers it.
          }
        }
      });
      stream.on('error', (err: Error) => end(err));
      stream.on('end', () => end());
      stream.on('close', () => end());
      return () => {
        ended = true;
        ac.abort();
        stream.destroy?.();
      };
    },
  };
}
