import { HttpException } from '@nestjs/common';

/**
 * How many long-lived answers the API keeps open: event streams (`/events`) and log followers
 * (`logs?follow=1`), each per job and in total, over every client (tunnel and API_LISTEN).
 *
 * Why these numbers: each answer through the relay holds one tunnel stream, and a session takes
 * at most 1,024 streams from the relay (MAX_STREAMS, docs/PROTOCOL.md). 256 of each kind is 512
 * at most, so at least half of a session's streams stay free for short requests (`/test`,
 * `POST /jobs`, downloads) however many of these clients come. 32 per job is far more than one
 * person watching a job uses (a browser tab opens one of each), and makes one job's flood take
 * at most an eighth of a kind's room.
 */
export const STREAM_LIMITS = {
  events: { perJob: 32, total: 256 },
  logs: { perJob: 32, total: 256 },
} as const;

export type StreamKind = keyof typeof STREAM_LIMITS;

const WHAT: Record<StreamKind, string> = {
  events: 'event streams (/events)',
  logs: 'log followers (logs?follow=1)',
};

/** Seconds a refused client is asked to wait (`Retry-After`). */
export const RETRY_AFTER_S = 5;

/** 503 for a stream over its limit: JSON naming the limit, with `Retry-After`. */
export class StreamLimitError extends HttpException {
  constructor(kind: StreamKind, scope: 'perJob' | 'total') {
    const max = STREAM_LIMITS[kind][scope];
    super(
      {
        statusCode: 503,
        error: 'Service Unavailable',
        message:
          `too many ${WHAT[kind]} open ${scope === 'perJob' ? 'on this job' : 'on this worker'}: ` +
          `the limit is ${max}; retry after ${RETRY_AFTER_S} s, or close one`,
        limit: `${kind} ${scope === 'perJob' ? 'per job' : 'in total'}`,
        max,
      },
      503,
    );
  }
}

/** Counts the open long-lived answers; take() a slot, call what it returns when the answer ends. */
export class StreamLimits {
  private readonly perJob = new Map<string, number>();
  private readonly totals: Record<StreamKind, number> = { events: 0, logs: 0 };

  /** Takes a slot for `job`, or throws StreamLimitError. The release is idempotent. */
  take(kind: StreamKind, job: string): () => void {
    const key = `${kind}:${job}`;
    const n = this.perJob.get(key) ?? 0;
    if (n >= STREAM_LIMITS[kind].perJob) throw new StreamLimitError(kind, 'perJob');
    if (this.totals[kind] >= STREAM_LIMITS[kind].total) throw new StreamLimitError(kind, 'total');
    this.perJob.set(key, n + 1);
    this.totals[kind]++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.totals[kind]--;
      const left = (this.perJob.get(key) ?? 1) - 1;
      if (left > 0) this.perJob.set(key, left);
      else this.perJob.delete(key);
    };
  }

  /** Open answers of `kind` (all jobs, or one). */
  open(kind: StreamKind, job?: string): number {
    return job === undefined ? this.totals[kind] : (this.perJob.get(`${kind}:${job}`) ?? 0);
  }
}
