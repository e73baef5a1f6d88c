import path from 'node:path';
import { pipeline } from 'node:stream';
import { Controller, Get, Inject, Param, Query, Req, Res } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { isFinal, type JobRecord } from '../job-record';
import { publicRecord } from '../jobs.service';
import { JobsRuntime } from '../jobs.runtime';
import type { OpenedFile } from '../store/results.store';
import { planRange } from './byte-range';
import { checkJobId, toHttp } from './http-errors';

const FOLLOW_POLL_MS = 200;
const SSE_HEARTBEAT_MS = 15_000;

/** What a job printed, its events, and the files it wrote. */
@ApiTags('jobs')
@Controller('jobs')
export class JobOutputController {
  constructor(@Inject(JobsRuntime) private readonly rt: JobsRuntime) {}

  private async record(id: string): Promise<JobRecord> {
    try {
      return await this.rt.service.get(checkJobId(id));
    } catch (err) {
      throw toHttp(err);
    }
  }

  @Get(':id/logs')
  @ApiOperation({ summary: 'the job output so far; ?follow=1 streams until the job ends' })
  async logs(
    @Param('id') id: string,
    @Query('follow') follow: string | undefined,
    @Req() req: Request,
    @Res() res: Response,
  ) {
    const rec = await this.record(id);
    const p = this.rt.store.paths(rec.experiment, rec.id);
    if (follow !== '1' && follow !== 'true') {
      // Opened as output files are (ResultsStore.openLog): a job may have swapped in a link.
      let log: OpenedFile | undefined;
      try {
        log = await this.rt.store.openLog(p);
      } catch (err) {
        throw toHttp(err);
      }
      const size = log?.stat.size ?? 0;
      res.status(200).type('text/plain; charset=utf-8').set('Content-Length', String(size));
      if (!log || size === 0 || req.method === 'HEAD') {
        await log?.handle.close();
        return res.end();
      }
      // What the log held when it was opened; the descriptor is closed at the end, or when the
      // client goes (pipeline destroys the read stream, which closes it).
      sendBytes(log, 0, size - 1, res);
      return;
    }
    res.status(200).type('text/plain; charset=utf-8');
    let closed = false;
    req.on('close', () => (closed = true));
    let offset = 0;
    const drain = async () => {
      const log = await this.rt.store.openLog(p).catch(() => undefined);
      if (!log) return;
      const fh = log.handle;
      try {
        const buf = Buffer.alloc(64 * 1024);
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
          if (bytesRead === 0) break;
          offset += bytesRead;
          if (!res.write(buf.subarray(0, bytesRead)))
            await new Promise((r) => res.once('drain', r));
        }
      } finally {
        await fh.close();
      }
    };
    while (!closed) {
      const now = await this.rt.service.get(rec.id).catch(() => undefined);
      await drain();
      if (!now || isFinal(now.state)) break; // drained after seeing the end: nothing is missed
      await new Promise((r) => setTimeout(r, FOLLOW_POLL_MS));
    }
    res.end();
  }

  @Get(':id/events')
  @ApiOperation({
    summary: 'Server-Sent Events: `state` and `progress` changes, until the job ends',
  })
  async events(@Param('id') id: string, @Req() req: Request, @Res() res: Response) {
    checkJobId(id);
    let last: JobRecord | undefined;
    let ended = false;
    const channel = `event:${id}`;
    const send = (rec: JobRecord) => {
      if (ended) return;
      if (
        last &&
        last.state === rec.state &&
        last.progress === rec.progress &&
        last.message === rec.message
      )
        return;
      const kind = !last || last.state !== rec.state ? 'state' : 'progress';
      last = rec;
      res.write(`event: ${kind}\ndata: ${JSON.stringify(publicRecord(rec))}\n\n`);
      if (isFinal(rec.state)) cleanup();
    };
    const pending: JobRecord[] = [];
    const early = (rec: JobRecord) => pending.push(rec);
    const timers: NodeJS.Timeout[] = [];
    const cleanup = () => {
      ended = true;
      timers.forEach(clearInterval);
      this.rt.records.bus.off(channel, send);
      res.end();
    };
    // Listen first, then read once. Events that arrive during the read may be older or newer
    // than it; only an ending among them is sure to be newer, so only that one is replayed.
    this.rt.records.bus.on(channel, early);
    let now: JobRecord;
    try {
      now = await this.rt.service.get(id);
    } catch (err) {
      throw toHttp(err);
    } finally {
      this.rt.records.bus.off(channel, early);
    }
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    timers.push(setInterval(() => res.write(': keep-alive\n\n'), SSE_HEARTBEAT_MS));
    this.rt.records.bus.on(channel, send);
    req.on('close', cleanup);
    send(now);
    for (const rec of pending) if (isFinal(rec.state)) send(rec);
  }

  @Get(':id/files')
  @ApiOperation({ summary: 'files the job wrote to its output folder' })
  async files(@Param('id') id: string) {
    const rec = await this.record(id);
    return { files: await this.rt.store.listOutput(this.rt.store.paths(rec.experiment, rec.id)) };
  }

  /**
   * Download, with single byte ranges (`curl -C -` resumes). The router has decoded each segment
   * once; ResultsStore.openOutputFile explains why what is opened is that file of the job's
   * output folder and nothing else (no `..`, no second encoding, no link, no FIFO or device,
   * whatever the job swaps in meanwhile). Headers and bytes come from that one descriptor.
   */
  @Get(':id/files/*path')
  @ApiOperation({
    summary: 'download one output file; Range: bytes=a-b answers 206 (416 past the end)',
  })
  async download(
    @Param('id') id: string,
    @Param('path') rel: string | string[],
    @Req() req: Request,
    @Res() res: Response,
  ) {
    const rec = await this.record(id);
    const requested = Array.isArray(rel) ? rel.join('/') : rel;
    let file: OpenedFile;
    try {
      file = await this.rt.store.openOutputFile(
        this.rt.store.paths(rec.experiment, rec.id),
        requested,
      );
    } catch (err) {
      throw toHttp(err);
    }
    let sending = false;
    try {
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
      sendBytes(file, start, end, res);
    } finally {
      if (!sending) await file.handle.close();
    }
  }
}

/**
 * Sends bytes `start`..`end` of the opened file and closes it: at the end, or when the client
 * goes (pipeline destroys the read stream, which closes the descriptor; no garbage collector
 * left to do it). A file that shrank meanwhile cuts the connection rather than send fewer bytes
 * than Content-Length promised.
 */
function sendBytes(file: OpenedFile, start: number, end: number, res: Response): void {
  const stream = file.handle.createReadStream({ start, end });
  stream.once('end', () => {
    if (stream.bytesRead < end - start + 1) res.destroy();
  });
  pipeline(stream, res, () => undefined);
}
