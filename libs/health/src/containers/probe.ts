import { EventEmitter } from 'node:events';
import { silentLogger, type Logger } from '../../../config/src';
import { isDockerUnreachable, WORKER_LABEL } from '../../../docker/src';
import type { ContainerEvent, ContainerSource } from './source';

/** Events that change what the probe reports: each one triggers a refresh at once. */
export const WATCHED_ACTIONS = ['die', 'oom', 'kill', 'health_status', 'start', 'stop'] as const;

export interface ContainerStatus {
  id?: string;
  name: string;
  /** `job`: labelled for this worker; `service`: named in HEALTH_CONTAINERS. */
  kind: 'job' | 'service';
  /** Docker's State.Status, or `missing` for a HEALTH_CONTAINERS name with no container. */
  status: string;
  running: boolean;
  health?: string;
  restartCount: number;
  oomKilled: boolean;
  /** Exit code of a container that is not running. */
  exitCode?: number;
  finishedAt?: string;
  memoryUsageBytes?: number;
  cpuUsageSeconds?: number;
}

export interface ContainerSnapshot {
  /** False when the Docker Engine did not answer: `containers` are then the last known ones. */
  ok: boolean;
  error?: { reason: 'unreachable' | 'error'; message: string; at: Date };
  containers: ContainerStatus[];
  refreshedAt?: Date;
  /** Whether the events stream is connected (refreshes are then immediate). */
  watching: boolean;
}

export interface ContainerProbeOptions {
  source: ContainerSource;
  workerName: string;
  /** HEALTH_CONTAINERS. */
  names?: string[];
  /** Full refresh period (events trigger refreshes in between). */
  intervalMs: number;
  onSnapshot?: (s: ContainerSnapshot) => void;
  logger?: Logger;
}

function errorReason(err: unknown): 'unreachable' | 'error' {
  return isDockerUnreachable(err) ? 'unreachable' : 'error';
}

/**
 * Watches this worker's job containers and the named service containers. A full refresh
 * (list + inspect, then stats of running ones) runs every interval and at once on any watched
 * Docker event; refreshes never overlap (one requested during another runs right after it).
 * Docker being unreachable is reported in the snapshot, never thrown. Events: `snapshot`.
 */
export class ContainerProbe extends EventEmitter {
  private last: ContainerSnapshot = { ok: false, containers: [], watching: false };
  private running = false;
  private timer?: NodeJS.Timeout;
  private refreshing?: Promise<ContainerSnapshot>;
  private again = false;
  private unsubscribe?: () => void;
  private subscribing = false;
  private subscribeError?: string;
  private readonly log: Logger;

  constructor(private readonly opts: ContainerProbeOptions) {
    super();
    this.log = opts.logger ?? silentLogger();
  }

  async start(): Promise<ContainerSnapshot> {
    if (this.running) return this.last;
    this.running = true;
    await this.subscribe();
    const snap = await this.refresh();
    this.schedule();
    return snap;
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    if (this.refreshing) await this.refreshing.catch(() => undefined);
  }

  snapshot(): ContainerSnapshot {
    return this.last;
  }

  /** Refreshes now; a call during a refresh gets a refresh that starts after it. */
  refresh(): Promise<ContainerSnapshot> {
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    const run = async (): Promise<ContainerSnapshot> => {
      let snap: ContainerSnapshot;
      do {
        this.again = false;
        snap = await this.refreshOnce();
      } while (this.again && this.running);
      return snap;
    };
    this.refreshing = run().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  /** Whether an event concerns a container we watch. */
  concerns(e: ContainerEvent): boolean {
    const action = e.action.split(':')[0];
    if (!(WATCHED_ACTIONS as readonly string[]).includes(action)) return false;
    return (
      e.attributes[WORKER_LABEL] === this.opts.workerName ||
      (this.opts.names ?? []).includes(e.attributes.name) ||
      this.last.containers.some((c) => c.id === e.id)
    );
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void (async () => {
        if (!this.unsubscribe) await this.subscribe();
        await this.refresh();
        this.schedule();
      })();
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  private async subscribe(): Promise<void> {
    if (this.subscribing || this.unsubscribe || !this.running) return;
    this.subscribing = true;
    try {
      this.unsubscribe = await this.opts.source.events(
        (e) => {
          if (this.concerns(e)) {
            this.log.debug({ action: e.action, id: e.id }, 'container event');
            void this.refresh();
          }
        },
        (err) => {
          this.unsubscribe = undefined;
          this.last = { ...this.last, watching: false };
          if (this.running) {
            this.log.warn({ err: err?.message }, 'Docker events stream ended; resubscribing');
            // Resubscribe soon, then catch up on what was missed.
            setTimeout(() => {
              if (!this.running) return;
              void this.subscribe().then(() => (this.running ? this.refresh() : undefined));
            }, 1000).unref();
          }
        },
      );
      this.subscribeError = undefined;
    } catch (err) {
      // Said once until it works again: without Docker this would repeat every interval.
      const message = (err as Error).message;
      if (message !== this.subscribeError)
        this.log.warn({ err: message }, 'cannot subscribe to Docker events');
      this.subscribeError = message;
    } finally {
      this.subscribing = false;
    }
  }

  private async refreshOnce(): Promise<ContainerSnapshot> {
    const { source, workerName, names = [] } = this.opts;
    let containers: ContainerStatus[];
    try {
      const ids = await source.listByLabel(`${WORKER_LABEL}=${workerName}`);
      const jobs = await Promise.all(ids.map((id) => source.inspect(id)));
      const services = await Promise.all(names.map((n) => source.inspect(n)));
      const prev = new Map(this.last.containers.map((c) => [c.id ?? c.name, c]));
      containers = [];
      const seen = new Set<string>();
      const add = (c: ContainerStatus) => {
        const key = c.id ?? c.name;
        if (seen.has(key)) return;
        seen.add(key);
        const p = prev.get(key);
        // Keep the last stats of a running container until the new ones arrive.
        if (c.running && p?.running) {
          c.memoryUsageBytes = p.memoryUsageBytes;
          c.cpuUsageSeconds = p.cpuUsageSeconds;
        }
        containers.push(c);
      };
      for (const i of jobs) if (i) add(toStatus(i, 'job'));
      services.forEach((i, n) =>
        add(
          i
            ? toStatus(i, 'service')
            : {
                name: names[n],
                kind: 'service',
                status: 'missing',
                running: false,
                restartCount: 0,
                oomKilled: false,
              },
        ),
      );
    } catch (err) {
      const message = (err as Error).message;
      if (this.last.ok || !this.last.error)
        this.log.warn({ err: message }, 'Docker Engine unreachable');
      return this.publish({
        ok: false,
        error: { reason: errorReason(err), message, at: new Date() },
        containers: this.last.containers,
        refreshedAt: this.last.refreshedAt,
        watching: this.unsubscribe !== undefined,
      });
    }
    const snap = this.publish({
      ok: true,
      containers,
      refreshedAt: new Date(),
      watching: this.unsubscribe !== undefined,
    });
    // Stats after the state is published: a slow stats call never delays a state change.
    const withStats = await Promise.all(
      containers.map(async (c) => {
        if (!c.running || !c.id) return c;
        try {
          return { ...c, ...(await source.stats(c.id)) };
        } catch {
          return c;
        }
      }),
    );
    if (this.last !== snap) return this.last;
    return this.publish({ ...snap, containers: withStats });
  }

  private publish(snap: ContainerSnapshot): ContainerSnapshot {
    this.last = snap;
    this.opts.onSnapshot?.(snap);
    this.emit('snapshot', snap);
    return snap;
  }
}

function toStatus(
  i: import('./source').ContainerInspect,
  kind: 'job' | 'service',
): ContainerStatus {
  const s: ContainerStatus = {
    id: i.id,
    name: i.name,
    kind,
    status: i.status,
    running: i.running,
    restartCount: i.restartCount,
    oomKilled: i.oomKilled,
  };
  if (i.health) s.health = i.health;
  if (!i.running && i.status !== 'created') {
    s.exitCode = i.exitCode;
    if (i.finishedAt) s.finishedAt = i.finishedAt;
  }
  return s;
}
