import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { SingleBar } from 'cli-progress';
import { apiUrl, call, colors, errorText, type ApiOptions, type TimeoutOptions } from './http';
import type { JobRecord, JobState } from '../../../libs/jobs/src';
import { writeOut } from './stdout';

export type { TimeoutOptions } from './http';

/**
 * The part of a job record the CLI reads (GET /jobs/:id), from the one record type. Types only:
 * the CLI never loads the jobs library (Nest, BullMQ, Redis) to call an API.
 */
type JobView = Pick<
  JobRecord,
  'id' | 'experiment' | 'state' | 'progress' | 'message' | 'error' | 'exitCode' | 'finishedAt'
>;

/** libs/jobs' isFinal, spelled here for the same reason; the type keeps it to real states. */
const FINAL: ReadonlySet<JobState> = new Set<JobState>(['succeeded', 'failed', 'cancelled']);
/** Pause before opening the event stream again after it ended early (worker restart). */
const RECONNECT_MS = 1_000;

function fail(message: string): number {
  process.stderr.write(`gpu-sidecar jobs: ${message}\n`);
  return 1;
}

const jobPath = (id: string) => `/jobs/${encodeURIComponent(id)}`;

/** `jobs submit EXPERIMENT`: prints the job id (only that, for scripts) on stdout. */
export async function submit(
  experiment: string,
  opts: ApiOptions &
    TimeoutOptions & { params?: string; priority?: string; key?: string; file?: string[] },
): Promise<number> {
  let params: unknown = {};
  if (opts.params !== undefined) {
    try {
      params = JSON.parse(opts.params);
    } catch {
      return fail(`--params must be JSON, like '{"epochs": 10}'`);
    }
  }
  const fields: Record<string, unknown> = { experiment, params };
  if (opts.priority !== undefined) fields.priority = Number(opts.priority);
  if (opts.key !== undefined) fields.key = opts.key;
  let init: RequestInit;
  if (opts.file?.length) {
    const form = new FormData();
    form.set('experiment', experiment);
    form.set('params', JSON.stringify(params));
    if (opts.priority !== undefined) form.set('priority', opts.priority);
    if (opts.key !== undefined) form.set('key', opts.key);
    for (const f of opts.file) form.append('files', new Blob([await readFile(f)]), basename(f));
    init = { method: 'POST', body: form };
  } else {
    init = {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(fields),
    };
  }
  const res = await call(`${apiUrl(opts)}/jobs`, opts, init);
  if (res.status !== 201 && res.status !== 200) return fail(await errorText(res));
  const body = (await res.json()) as { id: string };
  process.stdout.write(`${body.id}\n`);
  return 0;
}

/** Reads Server-Sent Events from a response body, calling `onEvent` for each complete one. */
async function readEvents(res: Response, onEvent: (event: string, data: string) => void) {
  let buf = '';
  for await (const chunk of Readable.fromWeb(res.body! as never) as AsyncIterable<Buffer>) {
    buf += chunk.toString('utf8');
    let end: number;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (event && data) onEvent(event, data);
    }
  }
}

/**
 * `jobs watch ID`: follows GET /jobs/:id/events until the job ends, with a progress bar on a
 * terminal (one line per change otherwise). Exit 0 when it succeeded, 1 when it failed or was
 * cancelled. An event stream that ends early (worker restarting) is opened again.
 */
export async function watch(id: string, opts: ApiOptions & TimeoutOptions): Promise<number> {
  const base = apiUrl(opts);
  const c = colors(process.stderr);
  const tty = Boolean(process.stderr.isTTY);
  const bar = new SingleBar({
    format: `${id.slice(0, 8)} {state} [{bar}] {percentage}% {message}`,
    stream: process.stderr,
    hideCursor: tty,
    noTTYOutput: false,
  });
  let started = false;
  let last: JobView | undefined;
  const show = (job: JobView) => {
    const line = { state: job.state, message: job.message ?? '' };
    if (tty) {
      if (!started) bar.start(100, job.progress ?? 0, line);
      else bar.update(job.progress ?? 0, line);
      started = true;
    } else if (job.state !== last?.state || job.progress !== last?.progress) {
      process.stderr.write(
        `${job.state} ${job.progress ?? 0}%${job.message ? ` ${job.message}` : ''}\n`,
      );
    }
    last = job;
  };
  try {
    for (;;) {
      const res = await call(`${base}${jobPath(id)}/events`, opts, {}, true);
      if (res.status !== 200) return fail(await errorText(res));
      await readEvents(res, (_event, data) => show(JSON.parse(data) as JobView));
      if (last && FINAL.has(last.state)) break;
      // The stream ended before the job did: read the record, then listen again.
      const now = await call(`${base}${jobPath(id)}`, opts);
      if (now.status !== 200) return fail(await errorText(now));
      show((await now.json()) as JobView);
      if (FINAL.has(last!.state)) break;
      await new Promise((r) => setTimeout(r, RECONNECT_MS));
    }
  } finally {
    if (started) bar.stop();
  }
  const job = last!;
  if (job.state === 'succeeded') {
    process.stdout.write(`${c.green('succeeded')} ${job.id}\n`);
    return 0;
  }
  const why = job.error ? `: ${job.error}` : job.exitCode !== null ? ` (exit ${job.exitCode})` : '';
  process.stdout.write(`${c.red(job.state)} ${job.id}${why}\n`);
  return 1;
}

/** `jobs logs ID [--follow]`: the job's output so far, or until it ends. */
export async function logs(
  id: string,
  opts: ApiOptions & TimeoutOptions & { follow?: boolean },
): Promise<number> {
  const url = `${apiUrl(opts)}${jobPath(id)}/logs${opts.follow ? '?follow=1' : ''}`;
  const res = await call(url, opts, {}, true);
  if (res.status !== 200) return fail(await errorText(res));
  const body = Readable.fromWeb(res.body! as never);
  for await (const chunk of body as AsyncIterable<Buffer>) {
    // The reader went away (`| head`): stop, rather than follow a log nobody reads.
    if (!(await writeOut(chunk))) {
      body.destroy();
      break;
    }
  }
  return 0;
}

/**
 * `jobs cancel ID`: a queued job never starts; a running one is stopped. Exit 0 when the job is
 * cancelled (or stopping), 1 when it had already ended, or ended otherwise before the cancel
 * reached it: nothing was cancelled then, and a script must not take it for done.
 */
export async function cancel(id: string, opts: ApiOptions & TimeoutOptions): Promise<number> {
  const url = `${apiUrl(opts)}${jobPath(id)}`;
  const before = await call(url, opts);
  if (before.status !== 200) return fail(await errorText(before));
  const was = (await before.json()) as JobView;
  if (FINAL.has(was.state)) {
    const at = was.finishedAt ? ` at ${was.finishedAt}` : '';
    return fail(`job ${id} had already ended: ${was.state}${at}; nothing to cancel`);
  }
  const res = await call(url, opts, { method: 'DELETE' });
  if (res.status !== 200) return fail(await errorText(res));
  const job = (await res.json()) as JobView;
  process.stdout.write(`${job.id} ${job.state}\n`);
  if (job.state === 'succeeded' || job.state === 'failed') {
    return fail(`job ${id} ended ${job.state} before the cancel reached it`);
  }
  return 0;
}
