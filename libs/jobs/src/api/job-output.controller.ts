import path from 'node:path';
import { Controller, Get, Inject, Param, Query, Req, Res, UseFilters } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { isFinal, type JobRecord } from '../job-record';
import { JobsService, publicRecord } from '../jobs.service';
import { JobRecordsRepository } from '../queue/job-records.repository';
import { ResultsStore, type OpenedFile } from '../store/results.store';
import { planRange } from './byte-range';
import { ClientWatch } from './client-watch';
import { checkJobId, JobErrorsFilter } from './http-errors';
import { ApiDownload, ApiEvents, ApiFiles, ApiLogs } from './job-output.openapi';
import { ApiHostGuard } from './responses';
import { sendBytes } from './send-bytes';
import { RETRY_AFTER_S, StreamLimitError, StreamLimits, type StreamKind } from './stream-limits';

const FOLLOW_POLL_MS = 200;
const SSE_HEARTBEAT_MS = 15_000;
const READ_CHUNK = 64 * 1024;

const SSE_HEADERS = {
  'Content-Type': 'text/event-stream',
  'Cache-Control': 'no-cache',
  'X-Accel-Buffering': 'no',
};

/**
 * The `id:` of an event about `rec`: the final state's name for a job's last event (a reconnect
 * that carries it as Last-Event-ID is told 204: it has seen the end), else `<state>.<progress>`.
 */
export function eventId(rec: JobRecord): string {
  return isFinal(rec.state) ? rec.state : `${rec.state}.${rec.progress}`;
}

/**
 * What a job printed, its events, and the files it wrote. Every answer here that reads the job's
 * folder does so through ResultsStore (job-files.ts): opened first, checked after, read from
 * the descriptor it checked. Every long-lived answer ends when its client goes (ClientWatch) and
 * is capped per job and in total (StreamLimits); downloads (files and plain logs) are capped per
 * client address and in total, and cut when their client takes nothing for 60 s (sendBytes).
 */
@ApiTags('jobs')
@ApiHostGuard()
@UseFilters(JobErrorsFilter)
@Controller('jobs')
export class JobOutputController {
  private readonly limits = new StreamLimits();

  constructor(
    @Inject(JobsService) private readonly service: JobsService,
    @Inject(ResultsStore) private readonly store: ResultsStore,
    /** Its event bus: every change of a job's state, from any worker process. */
    @Inject(JobRecordsRepository) private readonly records: Pick<JobRecordsRepository, 'bus'>,
  ) {}

  private async record(id: string): Promise<JobRecord> {
    return this.service.get(checkJobId(id));
  }

  /** A slot for a long-lived answer, or 503 with Retry-After (StreamLimits). */
  private take(kind: StreamKind, job: string, res: Response): () => void {
    try {
      return this.limits.take(kind, job);
    } catch (err) {
      if (err instanceof StreamLimitError) res.set('Retry-After', String(RETRY_AFTER_S));
      throw err;
    }
  }

  @Get(':id/logs')
  @ApiLogs()
  async logs(
    @Param('id') id: string,
    @Query('follow') follow: string | undefined,
    @Req() req: Request,
    @Res() res: Response,
  ) {
    const rec = await this.record(id);
    if (follow === '1' || follow === 'true') return this.follow(rec, req, res);
    const release = this.takeDownload(req, res);
    let sending = false;
    try {
      const log = await this.store.openLog(this.store.paths(rec.experiment, rec.id));
      const size = log?.stat.size ?? 0;
      res.status(200).type('text/plain; charset=utf-8').set('Content-Length', String(size));
      if (!log || size === 0 || req.method === 'HEAD') {
        await log?.handle.close();
        return res.end();
      }
      // What the log held when it was opened; the descriptor is closed at the end, or when the
      // client goes or is cut (sendBytes).
      sending = true;
      void sendBytes(log, 0, size - 1, res).finally(release);
    } finally {
      if (!sending) release();
    }
  }

  /**
   * A download's slot (`files/PATH`, plain `logs`), counted per client address (every client
   * through the tunnel is one), or 503 with Retry-After. HEAD sends no body and takes none.
   */
  private takeDownload(req: Request, res: Response): () => void {
    if (req.method === 'HEAD') return () => undefined;
    return this.take('downloads', req.socket.remoteAddress ?? 'tunnel', res);
  }

  /** logs?follow=1: what the log holds, then what is appended, until the job ends. */
  private async follow(rec: JobRecord, req: Request, res: Response): Promise<void> {
    const ok = () =>
      res
        .status(200)
        .type('text/plain; charset=utf-8')
        .set({ 'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no' });
    // HEAD: the headers at once (a follow never ends while the job runs, and HEAD has no body).
    if (req.method === 'HEAD') return void ok().end();
    const release = this.take('logs', rec.id, res);
    const watch = new ClientWatch(req, res);
    // Headers at once, even while the job is queued and its log empty.
    ok().flushHeaders();
    const p = this.store.paths(rec.experiment, rec.id);
    let log: OpenedFile | undefined;
    let offset = 0;
    try {
      for (;;) {
        const now = await this.service.get(rec.id).catch(() => undefined);
        // Opened once (it appears when the job starts), then read by offset: what the job
        // swaps in at that name later is never looked at.
        log ??= await this.store.openLog(p);
        if (log) offset = await copyFrom(log, offset, watch);
        // Read after seeing the end: nothing the job printed is missed.
        if (!now || isFinal(now.state) || watch.left || res.destroyed) break;
        await watch.sleep(FOLLOW_POLL_MS);
      }
    } catch {
      // The log cannot be read safely (it became a link, a FIFO) or at all: the stream ends.
    } finally {
      await log?.handle.close();
      watch.dispose();
      release();
      if (!res.destroyed) res.end();
    }
  }

  @Get(':id/events')
  @ApiEvents()
  async events(@Param('id') id: string, @Req() req: Request, @Res() res: Response) {
    checkJobId(id);
    const channel = `event:${id}`;
    // Listen first, then read once. Events that arrive during the read may be older or newer
    // than it; only an ending among them is sure to be newer, so only that one is replayed.
    const pending: JobRecord[] = [];
    const early = (rec: JobRecord) => pending.push(rec);
    this.records.bus.on(channel, early);
    let now: JobRecord;
    try {
      now = await this.service.get(id);
    } finally {
      this.records.bus.off(channel, early);
    }
    now = pending.find((r) => isFinal(r.state)) ?? now;
    if (isFinal(now.state)) {
      // An EventSource reconnects (every 3 s, forever) to a stream that ended; 204 is the one
      // answer that makes it stop. It is sent only to a client that saw the final event (its
      // id): a first request, or one that missed the end, gets the final state once.
      if (req.get('Last-Event-ID') === eventId(now)) return void res.status(204).end();
      res.writeHead(200, SSE_HEADERS);
      if (req.method !== 'HEAD') res.write(sseEvent('state', now));
      return void res.end();
    }
    if (req.method === 'HEAD') return void res.writeHead(200, SSE_HEADERS).end();
    const release = this.take('events', id, res);
    const watch = new ClientWatch(req, res);
    res.writeHead(200, SSE_HEADERS);
    /** The last record written to the client, and the newest one waiting for it to drain. */
    let last: JobRecord | undefined;
    let waiting: JobRecord | undefined;
    let ended = false;
    // A client that is not taking what it was sent gets no more until it has: only the newest
    // record waits, and goes out once it drains (the final one goes at once, then the end). A
    // job's updates (10 a second) used to queue in memory, each, for every stalled client.
    const send = (rec: JobRecord) => {
      if (ended) return;
      if (
        last &&
        last.state === rec.state &&
        last.progress === rec.progress &&
        last.message === rec.message
      ) {
        waiting = undefined;
        return;
      }
      if (watch.backedUp && !isFinal(rec.state)) {
        if (!waiting) void watch.drain().then(sendWaiting);
        waiting = rec;
        return;
      }
      waiting = undefined;
      const kind = !last || last.state !== rec.state ? 'state' : 'progress';
      last = rec;
      watch.write(sseEvent(kind, rec));
      if (isFinal(rec.state)) end();
    };
    const sendWaiting = () => {
      const rec = waiting;
      waiting = undefined;
      if (rec) send(rec);
    };
    const heartbeat = setInterval(() => {
      if (!watch.backedUp) watch.write(': keep-alive\n\n');
    }, SSE_HEARTBEAT_MS);
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(heartbeat);
      this.records.bus.off(channel, send);
      watch.dispose();
      release();
      if (!res.destroyed) res.end();
    };
    this.records.bus.on(channel, send);
    send(now);
    // Sent what there is; a client that went (or half-closed) gets nothing more.
    watch.whenGone(end);
  }

  @Get(':id/files')
  @ApiFiles()
  async files(@Param('id') id: string) {
    const rec = await this.record(id);
    const { files, truncated } = await this.store.listOutput(
      this.store.paths(rec.experiment, rec.id),
    );
    return truncated
      ? { files, truncated: true, truncatedBecause: `${files.length} files listed; ${truncated}` }
      : { files, truncated: false };
  }

  /**
   * Download, with single byte ranges (`curl -C -` resumes). The router has decoded each segment
   * once; ResultsStore.openOutputFile explains why what is opened is that file of the job's
   * output folder and nothing else (no `..`, no second encoding, no link, no FIFO or device,
   * whatever the job swaps in meanwhile). Headers and bytes come from that one descriptor.
   */
  @Get(':id/files/*path')
  @ApiDownload()
  async download(
    @Param('id') id: string,
    @Param('path') rel: string | string[],
    @Req() req: Request,
    @Res() res: Response,
  ) {
    const rec = await this.record(id);
    const requested = Array.isArray(rel) ? rel.join('/') : rel;
    const release = this.takeDownload(req, res);
    let file: OpenedFile | undefined;
    let sending = false;
    try {
      file = await this.store.openOutputFile(this.store.paths(rec.experiment, rec.id), requested);
      const { size, mtime, ino } = file.stat;
      const etag = `"${ino.toString(16)}-${size.toString(16)}-${mtime.getTime().toString(16)}"`;
      const lastModified = mtime.toUTCString();
      res.set({ 'Accept-Ranges': 'bytes', ETag: etag, 'Last-Modified': lastModified });
      const plan = planRange(size, req.get('Range'), req.get('If-Range'), { etag, lastModified });
      if (plan.kind === 'unsatisfiable') {
        res.status(416).set('Content-Range', `bytes */${size}`);
        return void res.json({
          statusCode: 416,
          error: 'Range Not Satisfiable',
          message: `range '${req.get('Range')}' is outside '${requested}' (${size} bytes)`,
        });
      }
      const [start, end] = plan.kind === 'partial' ? [plan.start, plan.end] : [0, size - 1];
      res.attachment(path.basename(requested));
      res.set({
        'Content-Type': 'application/octet-stream',
        'Content-Length': String(end - start + 1),
        'X-Content-Type-Options': 'nosniff',
      });
      if (plan.kind === 'partial') {
        res.status(206).set('Content-Range', `bytes ${start}-${end}/${size}`);
      } else {
        res.status(200);
      }
      if (req.method === 'HEAD' || end < start) return void res.end();
      sending = true;
      void sendBytes(file, start, end, res).finally(release);
    } finally {
      if (!sending) {
        release();
        await file?.handle.close();
      }
    }
  }
}

/** One SSE event about `rec`, with its id (eventId). */
function sseEvent(kind: 'state' | 'progress', rec: JobRecord): string {
  return `id: ${eventId(rec)}\nevent: ${kind}\ndata: ${JSON.stringify(publicRecord(rec))}\n\n`;
}

/**
 * Writes what `log` holds from `offset` on, as it is read; returns the new offset. Each chunk is
 * a buffer of its own (the response may keep it until sent). Waits for the client to take what
 * it was given, or to go.
 */
async function copyFrom(log: OpenedFile, offset: number, watch: ClientWatch): Promise<number> {
  for (;;) {
    if (watch.closed) return offset;
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    const { bytesRead } = await log.handle.read(buf, 0, buf.length, offset);
    if (bytesRead === 0) return offset;
    offset += bytesRead;
    if (!watch.write(buf.subarray(0, bytesRead))) await watch.drain();
  }
}
