/** What the container probe needs from a Docker Engine (docker.ts implements it with dockerode). */
export interface ContainerInspect {
  id: string;
  /** Without the leading slash. */
  name: string;
  /** created, running, paused, restarting, removing, exited, dead */
  status: string;
  running: boolean;
  /** starting, healthy, unhealthy; absent without a HEALTHCHECK */
  health?: string;
  restartCount: number;
  oomKilled: boolean;
  exitCode: number;
  startedAt?: string;
  finishedAt?: string;
  labels: Record<string, string>;
}

export interface ContainerStats {
  memoryUsageBytes?: number;
  cpuUsageSeconds?: number;
}

export interface ContainerEvent {
  /** die, oom, kill, start, stop, `health_status: healthy`, ... */
  action: string;
  id: string;
  /** Actor.Attributes: name, image and the container's labels. */
  attributes: Record<string, string>;
}

export interface ContainerSource {
  ping(): Promise<void>;
  /** Ids of all containers (running or not) carrying `label` (`key=value`). */
  listByLabel(label: string): Promise<string[]>;
  /** undefined when no such container. */
  inspect(idOrName: string): Promise<ContainerInspect | undefined>;
  stats(id: string): Promise<ContainerStats>;
  /** Subscribes to container events; resolves to an unsubscribe function. */
  events(onEvent: (e: ContainerEvent) => void, onEnd: (err?: Error) => void): Promise<() => void>;
}
