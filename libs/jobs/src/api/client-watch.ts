import type { IncomingMessage, ServerResponse } from 'node:http';

/** A client that has taken nothing of what was written for this long is cut. */
export const STALL_MS = 60_000;

/**
 * The most bytes one answer may have waiting for its client (1 MiB): a write that leaves more
 * cuts the client at once, whatever the stall time. Event streams write only the latest state
 * once their client drains (job-output.controller.ts) and followers wait for drain, so a client
 * that reads gets nowhere near it; it is what bounds the worker's memory if something else writes
 * to a client that does not read (8 stalled event streams of a chatty job grew the heap by
 * 31 MB/s for the whole 60 s stall time).
 */
export const MAX_BUFFERED = 1024 * 1024;

/**
 * Watches the client of a long-lived answer (`/events`, `logs?follow=1`), so that the answer ends
 * when its client goes, at once, and never waits on it forever:
 *
 * - the connection closing (`close` on the response) ends it;
 * - so does the client's FIN: the worker's HTTP server keeps half-closed connections open
 *   (`httpAllowHalfOpen`, so a client that half-closes after its request still gets its answer),
 *   which made a silent stream whose client had gone wait in CLOSE-WAIT, through the relay too,
 *   until its next write. A client that half-closes gets what there is now, then the end;
 * - a write the client does not take for `stallMs` (it stopped reading) destroys the connection,
 *   and every wait for `drain` also ends when the client goes (it used to wait forever);
 * - so does a write that leaves more than `maxBuffered` bytes waiting for the client.
 */
export class ClientWatch {
  /** Waits for 'drain' (ended by the client going too). */
  private readonly drainers = new Set<() => void>();
  /** Sleeps (ended early only by the client going). */
  private readonly sleepers = new Set<() => void>();
  private readonly onGone = new Set<() => void>();
  private stallTimer?: NodeJS.Timeout;
  private isGone = false;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly stallMs = STALL_MS,
    private readonly maxBuffered = MAX_BUFFERED,
  ) {
    res.once('close', this.gone);
    res.on('drain', this.drained);
    req.socket.once('end', this.gone);
    // The FIN, or the whole close, may have come before this handler ran (it awaited Redis
    // first): then the events above were missed, and only the socket's state tells.
    if (req.socket.readableEnded || req.socket.destroyed || res.destroyed || res.closed)
      this.gone();
  }

  /** True once the client closed or half-closed the connection (or was cut). */
  get left(): boolean {
    return this.isGone;
  }

  /** True once nothing more can reach the client: its connection is closed or destroyed. */
  get closed(): boolean {
    return this.res.destroyed || this.req.socket.destroyed;
  }

  /** Calls `fn` once when the client goes (at once if it already has). */
  whenGone(fn: () => void): void {
    if (this.isGone) fn();
    else this.onGone.add(fn);
  }

  /** True while what was written waits for the client to take it (a write now would queue). */
  get backedUp(): boolean {
    return this.res.writableNeedDrain;
  }

  /**
   * Writes `chunk` unless the connection is gone; arms the stall cut when the client lags, and
   * cuts it at once when more than `maxBuffered` bytes would wait for it.
   */
  write(chunk: string | Buffer): boolean {
    if (this.closed || this.res.writableEnded) return false;
    const ok = this.res.write(chunk);
    if (this.res.writableLength > this.maxBuffered) {
      this.res.destroy();
      return false;
    }
    if (!ok && !this.stallTimer) {
      this.stallTimer = setTimeout(() => this.res.destroy(), this.stallMs);
      this.stallTimer.unref();
    }
    return ok;
  }

  /** Resolves once what was written has drained, or the client went, whichever first. */
  drain(): Promise<void> {
    if (this.isGone || !this.res.writableNeedDrain || this.res.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.drainers.add(resolve);
    });
  }

  /** Resolves after `ms`, or as soon as the client goes. */
  sleep(ms: number): Promise<void> {
    if (this.isGone) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  /** Stops watching (the answer is over): removes the listener left on a kept-alive socket. */
  dispose(): void {
    clearTimeout(this.stallTimer);
    this.res.off('close', this.gone);
    this.res.off('drain', this.drained);
    this.req.socket.off('end', this.gone);
    wakeAll(this.drainers);
    wakeAll(this.sleepers);
  }

  private readonly drained = (): void => {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    wakeAll(this.drainers);
  };

  private readonly gone = (): void => {
    if (this.isGone) return;
    this.isGone = true;
    wakeAll(this.drainers);
    wakeAll(this.sleepers);
    wakeAll(this.onGone);
  };
}

function wakeAll(fns: Set<() => void>): void {
  const all = [...fns];
  fns.clear();
  for (const fn of all) fn();
}
