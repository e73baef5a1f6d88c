import { constants as fsc, createWriteStream, type WriteStream } from 'node:fs';
import { finished, type Readable } from 'node:stream';

/**
 * A job's log (logs/output.log), written byte for byte from its output streams as they come.
 *
 * Why memory stays bounded whatever the job prints (700 MB without a newline included): nothing
 * here splits lines or decodes text; a source is paused while the file's write buffer is full
 * and resumed on 'drain', so at most about one stream buffer per source is held. A write error
 * (the disk is full) is kept in `error` and reported once through `onError`; from then on the
 * output is read and dropped, so a job blocked on its pipe still runs to its end.
 */
export class JobLog {
  private readonly file: WriteStream;
  private readonly paused = new Set<Readable>();
  private failure?: Error;

  constructor(
    readonly path: string,
    private readonly onError?: (err: Error) => void,
  ) {
    // The log is the daemon's file, in logs/, which a Docker job cannot write; should something
    // replace it (a process job running as the daemon's own user can), a link is not followed
    // and a FIFO is not waited on: opening fails (ELOOP, ENXIO) and the job ends with that error.
    const flags = fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;
    // (Node takes numeric flags here; its types only name strings.)
    this.file = createWriteStream(path, { flags: flags as unknown as string, mode: 0o644 });
    this.file.on('drain', () => this.resumeAll());
    this.file.on('error', (err) => {
      if (this.failure) return;
      this.failure = err;
      this.resumeAll();
      this.onError?.(err);
    });
  }

  /** The first write error, if any. */
  get error(): Error | undefined {
    return this.failure;
  }

  /**
   * Copies `src` into the log until it ends (or is destroyed); `onChunk` sees every chunk
   * first (the progress scanner). Resolves when `src` is done.
   */
  pump(src: Readable, onChunk?: (chunk: Buffer) => void): Promise<void> {
    src.on('data', (chunk: Buffer) => {
      onChunk?.(chunk);
      if (this.failure) return;
      if (!this.file.write(chunk) && !this.failure) {
        this.paused.add(src);
        src.pause();
      }
    });
    return new Promise((resolve) => {
      finished(src, () => {
        this.paused.delete(src);
        resolve();
      });
    });
  }

  /** Ends the file once what was written is flushed (or has failed). */
  close(): Promise<void> {
    const f = this.file;
    return new Promise((resolve) => {
      if (f.closed || f.destroyed) return resolve();
      f.once('close', () => resolve());
      f.end();
    });
  }

  private resumeAll(): void {
    for (const src of this.paused) src.resume();
    this.paused.clear();
  }
}
