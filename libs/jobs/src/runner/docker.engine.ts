import { PassThrough, Writable, type Readable } from 'node:stream';
// The one dockerode client of the project lives in libs/docker; this adapter only shapes calls.
import {
  dockerClient,
  unlessGoneOrBusy,
  unlessNotFound,
  type ContainerCreateOptions,
  type DockerClient,
} from '../../../docker/src';

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
  stdout: Readable;
  stderr: Readable;
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

/** The Docker Engine at DOCKER_HOST, through dockerode. */
export class DockerEngine implements ContainerEngine {
  private readonly docker: DockerClient;

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
    // Not dockerode's demuxStream: it ignores backpressure, so a job printing faster than its
    // log is written would pile its output up in this process's memory.
    stream.pipe(demuxer(stdout, stderr));
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
    const i = await unlessNotFound(this.docker.getContainer(id).inspect());
    if (!i) return undefined;
    const ran = Boolean(i.State.StartedAt) && !i.State.StartedAt.startsWith('0001-');
    return {
      exitCode: i.State.ExitCode ?? null,
      oomKilled: i.State.OOMKilled,
      ended: ran && !i.State.Running && !i.State.Restarting,
    };
  }

  async labelsOf(id: string): Promise<Record<string, string> | undefined> {
    const i = await unlessNotFound(this.docker.getContainer(id).inspect());
    return i && (i.Config.Labels ?? {});
  }

  async kill(id: string, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    // 404: gone; 409: not running (it exited meanwhile).
    await unlessGoneOrBusy(this.docker.getContainer(id).kill({ signal }));
  }

  async remove(id: string): Promise<void> {
    // 404: gone; 409: removal already in progress.
    await unlessGoneOrBusy(this.docker.getContainer(id).remove({ force: true, v: true }));
  }

  async listByLabel(key: string, value: string): Promise<LabelledContainer[]> {
    const list = await this.docker.listContainers({
      all: true,
      filters: { label: [`${key}=${value}`] },
    });
    return list.map((c) => ({ id: c.Id, labels: c.Labels ?? {}, state: c.State }));
  }
}

/**
 * Splits Docker's multiplexed attach stream (frames: 1 byte stream type, 3 zero bytes, a
 * big-endian 32-bit length, the payload) into stdout and stderr. Why memory stays bounded: a
 * chunk is acknowledged only once both outputs took its payloads (after 'drain' when one was
 * full), so the attach socket, and through it the container's own writes, wait for the reader;
 * at most one partial 8-byte header is kept between chunks, never a whole frame.
 */
export function demuxer(stdout: Writable, stderr: Writable): Writable {
  let header = Buffer.alloc(0);
  let left = 0;
  let target: Writable = stdout;
  return new Writable({
    write(chunk: Buffer, _enc, callback) {
      const full = new Set<Writable>();
      let at = 0;
      while (at < chunk.length) {
        if (left === 0) {
          const need = 8 - header.length;
          header = Buffer.concat([header, chunk.subarray(at, at + need)]);
          at += Math.min(need, chunk.length - at);
          if (header.length < 8) break;
          target = header[0] === 2 ? stderr : stdout;
          left = header.readUInt32BE(4);
          header = Buffer.alloc(0);
          continue;
        }
        const piece = chunk.subarray(at, at + left);
        at += piece.length;
        left -= piece.length;
        if (!target.write(piece)) full.add(target);
      }
      const waits = [...full].filter((w) => !w.writableEnded && !w.destroyed);
      if (waits.length === 0) return callback();
      void Promise.all(waits.map((w) => new Promise((r) => w.once('drain', r)))).then(() =>
        callback(),
      );
    },
  });
}
