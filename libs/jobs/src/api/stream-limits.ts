import { HttpException } from '@nestjs/common';

/**
 * How many long-lived answers the API keeps open, over every client (tunnel and API_LISTEN):
 * event streams (`/events`) and log followers (`logs?follow=1`), each per job and in total; and
 * downloads (`files/PATH` and plain `logs`), per client address and in total.
 *
 * Why these numbers: each answer through the relay holds one tunnel stream, and a session takes
 * at most 1,024 streams from the relay (MAX_STREAMS, docs/PROTOCOL.md). 256 + 256 + 128 is 640
 * at most, so at least 384 of a session's streams stay free for short requests (`/test`,
 * `POST /jobs`, listings) however many of these clients come. 32 per job is far more than one
 * person watching a job uses (a browser tab opens one of each), and makes one job's flood take
 * at most an eighth of a kind's room. Downloads are counted per address so that one client
 * cannot take them all: the worker sees no client address through the tunnel, so everything
 * that comes through the relay counts as one address ('tunnel'), and a client on API_LISTEN
 * can still download while the relay's clients hold their 64. A download whose client takes
 * nothing for 60 s is cut (job-output.controller.ts), so a slot is never held forever.
 */
export const STREAM_LIMITS = {
  events: { perJob: 32, total: 256 },
  logs: { perJob: 32, total: 256 },
  downloads: { perAddress: 64, total: 128 },
} as const;

export type StreamKind = keyof typeof STREAM_LIMITS;
/** What a kind is counted per besides its total: the job, or the client's address. */
export type StreamScope = 'perJob' | 'perAddress' | 'total';

const WHAT: Record<StreamKind, string> = {
  events: 'event streams (/events)',
  logs: 'log followers (logs?follow=1)',
  downloads: 'downloads (files/PATH and logs)',
};

const WHERE: Record<StreamScope, string> = {
  perJob: 'on this job',
  perAddress: 'from this address (every client through the relay counts as one)',
  total: 'on this worker',
};

const SCOPE_NAME: Record<StreamScope, string> = {
  perJob: 'per job',
  perAddress: 'per address',
  total: 'in total',
};

/** Every `limit` a refusal may name: `events per job`, ..., `downloads in total`. */
export const LIMIT_NAMES: string[] = (Object.keys(STREAM_LIMITS) as StreamKind[]).flatMap((k) =>
  Object.keys(STREAM_LIMITS[k]).map((scope) => `${k} ${SCOPE_NAME[scope as StreamScope]}`),
);

/** Seconds a refused client is asked to wait (`Retry-After`). */
export const RETRY_AFTER_S = 5;

function maxOf(kind: StreamKind, scope: StreamScope): number {
  return (STREAM_LIMITS[kind] as Partial<Record<StreamScope, number>>)[scope] ?? Infinity;
}

/** 503 for a stream over its limit: JSON naming the limit, with `Retry-After`. */
export class StreamLimitError extends HttpException {
  constructor(kind: StreamKind, scope: StreamScope) {
    const max = maxOf(kind, scope);
    super(
      {
        statusCode: 503,
        error: 'Service Unavailable',
        message:
          `too many ${WHAT[kind]} open ${WHERE[scope]}: ` +
          `the limit is ${max}; retry after ${RETRY_AFTER_S} s, or close one`,
        limit: `${kind} ${SCOPE_NAME[scope]}`,
        max,
      },
      503,
    );
  }
}

/** Counts the open long-lived answers; take() a slot, call what it returns when the answer ends. */
export class StreamLimits {
  /** Open answers per `kind:key` (the job, or the address). */
  private readonly perKey = new Map<string, number>();
  private readonly totals: Record<StreamKind, number> = { events: 0, logs: 0, downloads: 0 };

  /**
   * Takes a slot for `key` (the job of events and logs, the client's address of downloads), or
   * throws StreamLimitError. The release is idempotent.
   */
  take(kind: StreamKind, key: string): () => void {
    const scope: StreamScope = 'perJob' in STREAM_LIMITS[kind] ? 'perJob' : 'perAddress';
    const k = `${kind}:${key}`;
    const n = this.perKey.get(k) ?? 0;
    if (n >= maxOf(kind, scope)) throw new StreamLimitError(kind, scope);
    if (this.totals[kind] >= STREAM_LIMITS[kind].total) throw new StreamLimitError(kind, 'total');
    this.perKey.set(k, n + 1);
    this.totals[kind]++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.totals[kind]--;
      const left = (this.perKey.get(k) ?? 1) - 1;
      if (left > 0) this.perKey.set(k, left);
      else this.perKey.delete(k);
    };
  }

  /** Open answers of `kind` (all, or those of one job or address). */
  open(kind: StreamKind, key?: string): number {
    return key === undefined ? this.totals[kind] : (this.perKey.get(`${kind}:${key}`) ?? 0);
  }
}
