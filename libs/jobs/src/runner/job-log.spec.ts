import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { JobLog } from './job-log';

const logFile = () => path.join(mkdtempSync(path.join(tmpdir(), 'gsc-log-')), 'output.log');

/** `n` chunks of `size` bytes of `byte`, as a stream. */
const source = (byte: string, size: number, n: number) =>
  Readable.from(
    (function* () {
      for (let i = 0; i < n; i++) yield Buffer.alloc(size, byte);
    })(),
  );

describe('job log', () => {
  it('writes every byte of both streams, as they come, with no line added', async () => {
    const file = logFile();
    const log = new JobLog(file);
    const seen: number[] = [];
    await Promise.all([
      log.pump(source('#', 65536, 64), (c) => seen.push(c.length)),
      log.pump(Readable.from([Buffer.from('no newline at the end')])),
    ]);
    await log.close();
    const text = readFileSync(file, 'latin1');
    expect(text.length).toBe(64 * 65536 + 21);
    expect(text.replace(/#/g, '')).toBe('no newline at the end');
    expect(seen.reduce((a, b) => a + b, 0)).toBe(64 * 65536);
    expect(log.error).toBeUndefined();
  });

  it('pauses a source while the file is behind, so nothing piles up in memory', async () => {
    const log = new JobLog(logFile());
    const src = source('x', 65536, 200);
    let maxBuffered = 0;
    const file = (log as unknown as { file: { writableLength: number } }).file;
    await log.pump(src, () => (maxBuffered = Math.max(maxBuffered, file.writableLength)));
    await log.close();
    // At most one chunk past the file stream's high-water mark before the source is paused.
    expect(maxBuffered).toBeLessThanOrEqual(16 * 1024 + 65536);
  });

  it('keeps the first write error, says it once, and still drains the source', async () => {
    const errors: Error[] = [];
    const log = new JobLog('/dev/full', (e) => errors.push(e));
    let bytes = 0;
    await log.pump(source('x', 65536, 100), (c) => (bytes += c.length));
    await log.close();
    expect(bytes).toBe(100 * 65536);
    expect(errors).toHaveLength(1);
    expect(log.error?.message).toMatch(/ENOSPC/);
  });

  it('never writes through a link or waits on a FIFO put in place of the log', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'gsc-log-'));
    const target = path.join(dir, 'elsewhere');
    writeFileSync(target, 'untouched');
    symlinkSync(target, path.join(dir, 'link.log'));
    execFileSync('mkfifo', [path.join(dir, 'fifo.log')]);
    for (const name of ['link.log', 'fifo.log']) {
      const errors: Error[] = [];
      const log = new JobLog(path.join(dir, name), (e) => errors.push(e));
      await log.pump(source('x', 1024, 4));
      await log.close();
      expect(errors.map((e) => (e as NodeJS.ErrnoException).code)).toEqual([
        name === 'link.log' ? 'ELOOP' : 'ENXIO',
      ]);
    }
    expect(readFileSync(target, 'utf8')).toBe('untouched');
  });
});
