import { ApiProperty, ApiPropertyOptional, ApiSchema } from '@nestjs/swagger';

/*
 * GET /health's answer as an OpenAPI schema. The parts the probes fill (GPUs, containers,
 * Redis, queue, disk, host, Docker) are objects whose fields follow their probes
 * (libs/health); they are described here by what they are for, and left open.
 */

const PART = { type: 'object', additionalProperties: true } as const;

/**
 * One tunnel session to a relay, as /health shows it. Its schema keeps the name it always had,
 * `TunnelView`; the relay's view of its tunnels is libs/tunnel's TunnelView.
 */
@ApiSchema({ name: 'TunnelView' })
export class TunnelSessionView {
  @ApiProperty({ example: '127.0.0.1:51234', description: "the relay's address" })
  peer!: string;

  @ApiProperty({ type: 'integer', minimum: 0, description: 'streams open now' })
  streams!: number;

  @ApiPropertyOptional({ type: 'number', description: 'last ping round trip, milliseconds' })
  rttMs?: number;
}

/** `GET /health`: everything the worker knows about itself, with one verdict. */
export class HealthReport {
  @ApiProperty({
    enum: ['ok', 'degraded', 'down'],
    description:
      'ok: nothing wrong; degraded: jobs run but something needs a look; down: not ready (503)',
  })
  status!: 'ok' | 'degraded' | 'down';

  @ApiProperty({ description: 'whether it takes new jobs (Redis, queue and disk are fine)' })
  ready!: boolean;

  @ApiProperty({ type: [String], description: 'one line per problem, saying what is wrong' })
  problems!: string[];

  @ApiProperty({ example: 'gpu-host-1', description: 'WORKER_NAME' })
  worker!: string;

  @ApiProperty({
    ...PART,
    description:
      'GPU_DEVICES and the last nvidia-smi sample: `enabled`, `devices` (each GPU, with its ' +
      'MIG instances in `mig`), `vanished`, `missing`, `stale`, `error`',
  })
  gpus!: Record<string, unknown>;

  @ApiProperty({ ...PART, description: 'the containers named in HEALTH_CONTAINERS, and jobs’' })
  containers!: Record<string, unknown>;

  @ApiPropertyOptional({
    ...PART,
    description: 'Redis: up, healthy, latency, URL (password hidden), problems, settings',
  })
  redis?: Record<string, unknown>;

  @ApiProperty({ ...PART, description: 'the BullMQ queues: `ok`, `counts` per queue, `error`' })
  queue!: Record<string, unknown>;

  @ApiProperty({
    ...PART,
    description: 'DATA_FOLDER: free bytes and percent against MIN_FREE_DISK, or `error`',
  })
  disk!: Record<string, unknown>;

  @ApiPropertyOptional({ ...PART, description: 'CPU load and memory of the host' })
  host?: Record<string, unknown>;

  @ApiProperty({ type: [TunnelSessionView], description: 'tunnel sessions from relays' })
  tunnels!: TunnelSessionView[];

  @ApiPropertyOptional({
    ...PART,
    description: 'the Docker Engine: reachable (or why not), NVIDIA runtime, whether needed',
  })
  docker?: Record<string, unknown>;
}
