import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { SingleBar } from 'cli-progress';
import { apiUrl, colors, errorText, type ApiOptions } from './status';

/** The part of a job record the CLI reads (DESIGN.md, GET /jobs/:id). */
interface JobView {
  id: string;
  experiment: string;
  state: string;
  progress: number;
  message?: string;
  error: string | null;
  exitCode: number | null;
}

const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
/** Pause before opening the event stream again after it ended early (worker restart). */
const RECONNECT_MS = 1_000;

function fail(message: string): number {
  process.stderr.write(`gpu-sidecar jobs: ${message}\n`);
  return 1;
}

/**
 * `--timeout SECONDS`: how long to wait for the worker's answer; 0 waits forever. Always set:
 * the option's default (30) is given where the option is declared (main.ts).
 */
export interface TimeoutOptions {
  timeout: number;
}

/**
 * fetch, with "nothing answers" and "no answer in time" said plainly instead of a stack. The
 * timeout covers the whole exchange, except for a `stream` (events, logs): there it ends once the
 * response headers came, so a long stream is never cut.
 */
async function call(
  url: string,
  { timeout: seconds }: TimeoutOptions,
  init: RequestInit = {},
  stream = false,
): Promise<Response> {
  const abort = new AbortController();
  // Past setTimeout's range (about 24.8 days) it would fire at once: count that as no limit.
  const ms = seconds * 1000;
  const timer = ms > 0 && ms < 2 ** 31 ? setTimeout(() => abort.abort(), ms) : undefined;
  const late = () =>
    new Error(
      `no answer from ${url} within ${seconds} s: is the worker stuck? ` +
        `Use --timeout SECONDS to wait longer (0: no limit).`,
    );
  try {
    let res: Response;
    try {
      res = await fetch(url, { ...init, signal: abort.signal });
    } catch (err) {
      if (abort.signal.aborted) throw late();
      const c = (err as { cause?: { code?: string; errors?: { code?: string }[] } }).cause;
      const cause = c?.code ?? c?.errors?.[0]?.code ?? (err as Error).message;
      throw new Error(
        `nothing answers at ${new URL(url).origin} (${cause}): is the worker running? Use --url.`,
      );
    }
    if (stream && res.ok) return res;
    // Read the body under the same deadline, then hand it over as a response of its own.
    const body = await res.arrayBuffer().catch((err: unknown) => {
      throw abort.signal.aborted ? late() : err;
    });
    const empty = [101, 204, 205, 304].includes(res.status);
    return new Response(empty ? null : body, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  } finally {
    clearTimeout(timer);
  }
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
  for await (const chunk of Readable.fromWeb(res.body! as never) as AsyncIterable<Buffer>) {
    if (!process.stdout.write(chunk)) await new Promise((r) => process.stdout.once('drain', r));
  }
  return 0;
}

/** `jobs cancel ID`: a queued job never starts; a running one is stopped. */
export async function cancel(id: string, opts: ApiOptions & TimeoutOptions): Promise<number> {
  const res = await call(`${apiUrl(opts)}${jobPath(id)}`, opts, { method: 'DELETE' });
  if (res.status !== 200) return fail(await errorText(res));
  const job = (await res.json()) as JobView;
  process.stdout.write(`${job.id} ${job.state}\n`);
  return 0;
}
