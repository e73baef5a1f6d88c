import { PassThrough } from 'node:stream';
import type { ContainerCreateOptions } from 'dockerode';
// The one dockerode client of the project lives in libs/health; this adapter only shapes calls.
import { dockerClient } from '../../../health/src/containers/docker';

/** A container as listed by label. */
export interface LabelledContainer {
  id: string;
  labels: Record<string, string>;
  /** Docker's state: `created`, `running`, `exited`, ... */
  state?: string;
}

/** How a container ended, from inspect. */
export interface ContainerEnd {
  /** Docker's ExitCode: 0 also for a container that has not ended; read it with `ended`. */
  exitCode: number | null;
  oomKilled: boolean;
  /** Whether the container ran and is no longer running. */
  ended: boolean;
}

/** Output of a running container, demultiplexed; `ended` resolves when both streams ended. */
export interface Attached {
  stdout: NodeJS.ReadableStream;
  stderr: NodeJS.ReadableStream;
  ended: Promise<void>;
  close(): void;
}

/**
 * What the Docker runner needs from an engine. Errors keep the engine's `statusCode` (404 no
 * such image or container, 409 conflict) and message, so the runner can explain them.
 */
export interface ContainerEngine {
  /** Describes the engine: the OCI runtimes it has (`nvidia` when NVIDIA's runtime is set up). */
  info(): Promise<{ runtimes: string[] }>;
  create(opts: ContainerCreateOptions): Promise<string>;
  /** Attaches to stdout and stderr; call before start so no output is missed. */
  attach(id: string): Promise<Attached>;
  start(id: string): Promise<void>;
  /** Resolves with the exit status once the container stopped. */
  wait(id: string): Promise<number>;
  inspectEnd(id: string): Promise<ContainerEnd | undefined>;
  labelsOf(id: string): Promise<Record<string, string> | undefined>;
  /** Sends a signal; a container that is gone or not running is not an error. */
  kill(id: string, signal: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** Removes (killing it if needed); one already gone is not an error. */
  remove(id: string): Promise<void>;
  listByLabel(key: string, value: string): Promise<LabelledContainer[]>;
}

const status = (err: unknown): number | undefined => (err as { statusCode?: number }).statusCode;

/** The Docker Engine at DOCKER_HOST, through dockerode. */
export class DockerEngine implements ContainerEngine {
  private readonly docker: ReturnType<typeof dockerClient>;

  constructor(readonly host: string) {
    this.docker = dockerClient(host);
  }

  async info(): Promise<{ runtimes: string[] }> {
    const i = (await this.docker.info()) as { Runtimes?: Record<string, unknown> };
    return { runtimes: Object.keys(i.Runtimes ?? {}) };
  }

  async create(opts: ContainerCreateOptions): Promise<string> {
    return (await this.docker.createContainer(opts)).id;
  }

  async attach(id: string): Promise<Attached> {
    const stream = (await this.docker
      .getContainer(id)
      .attach({ stream: true, stdout: true, stderr: true })) as unknown as NodeJS.ReadableStream & {
      destroy(): void;
    };
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    this.docker.modem.demuxStream(stream, stdout, stderr);
    const ended = new Promise<void>((resolve) => {
      const done = () => {
        stdout.end();
        stderr.end();
        resolve();
      };
      stream.on('end', done);
      stream.on('close', done);
      stream.on('error', done);
    });
    return { stdout, stderr, ended, close: () => stream.destroy() };
  }

  async start(id: string): Promise<void> {
    await this.docker.getContainer(id).start();
  }

  async wait(id: string): Promise<number> {
    const r = (await this.docker.getContainer(id).wait()) as { StatusCode: number };
    return r.StatusCode;
  }

  async inspectEnd(id: string): Promise<ContainerEnd | undefined> {
    try {
      const i = await this.docker.getContainer(id).inspect();
      const ran = Boolean(i.State.StartedAt) && !i.State.StartedAt.startsWith('0001-');
      return {
        exitCode: i.State.ExitCode ?? null,
        oomKilled: i.State.OOMKilled,
        ended: ran && !i.State.Running && !i.State.Restarting,
      };
    } catch (err) {
      if (status(err) === 404) return undefined;
      throw err;
    }
  }

  async labelsOf(id: string): Promise<Record<string, string> | undefined> {
    try {
      return (await this.docker.getContainer(id).inspect()).Config.Labels ?? {};
    } catch (err) {
      if (status(err) === 404) return undefined;
      throw err;
    }
  }

  async kill(id: string, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    try {
      await this.docker.getContainer(id).kill({ signal });
    } catch (err) {
      // 404: gone; 409: not running (it exited meanwhile).
      if (status(err) !== 404 && status(err) !== 409) throw err;
    }
  }

  async remove(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true });
    } catch (err) {
      // 404: gone; 409: removal already in progress.
      if (status(err) !== 404 && status(err) !== 409) throw err;
    }
  }

  async listByLabel(key: string, value: string): Promise<LabelledContainer[]> {
    const list = await this.docker.listContainers({
      all: true,
      filters: { label: [`${key}=${value}`] },
    });
    return list.map((c) => ({ id: c.Id, labels: c.Labels ?? {}, state: c.State }));
  }
}
