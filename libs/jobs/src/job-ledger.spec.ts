import { silentLogger } from '../../config/src';
import { JobLedger } from './job-ledger';
import type { JobRecord, JobState } from './job-record';

const rec = (over: Partial<JobRecord> = {}): JobRecord => ({
  id: '0b8e6c1e-7f7e-4c55-9d64-2f1f1a0c0a01',
  experiment: 'hello',
  state: 'running',
  progress: 40,
  worker: 'w',
  gpu: null,
  attempts: 1,
  createdAt: '2026-01-01T00:00:00.000Z',
  startedAt: '2026-01-01T00:00:01.000Z',
  finishedAt: null,
  exitCode: null,
  error: null,
  ...over,
});

const enospc = () =>
  Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });

/**
 * Redis and the store behind the ledger, as fakes that log each call in one list, so the order of
 * Redis and disk can be asserted. Redis holds one record (or none).
 */
function fakes(initial: JobRecord | undefined = rec()) {
  const calls: string[] = [];
  let current = initial;
  const records = {
    transition: jest.fn(async (id: string, from: JobState[], patch: Partial<JobRecord>) => {
      calls.push(`redis ${String(patch.state ?? '-')}`);
      if (!current || current.id !== id) return undefined;
      if (from.length && !from.includes(current.state)) return { changed: false, record: current };
      current = { ...current, ...patch };
      return { changed: true, record: current };
    }),
  };
  const store = {
    writeRecord: jest.fn(async (r: JobRecord) => {
      calls.push(`json ${r.state}`);
    }),
    writeFinal: jest.fn(async (r: JobRecord, withOutput: boolean): Promise<string | undefined> => {
      calls.push(`final ${r.state}${withOutput ? ' +output' : ''}`);
      return undefined;
    }),
  };
  const ledger = new JobLedger(records, store, silentLogger());
  return { calls, records, store, ledger, redis: () => current };
}

describe('JobLedger.change', () => {
  describe('redis-first (the default)', () => {
    it('changes Redis, then mirrors the record Redis returns in job.json', async () => {
      const f = fakes(rec({ state: 'queued' }));
      const t = await f.ledger.change({ id: rec().id }, ['queued'], { state: 'cancelled' });
      await t!.written;
      expect(t).toMatchObject({ changed: true, record: { state: 'cancelled', progress: 40 } });
      expect(f.calls).toEqual(['redis cancelled', 'json cancelled']);
      expect(f.store.writeRecord).toHaveBeenCalledWith(f.redis());
      expect(f.records.transition).toHaveBeenCalledWith(
        rec().id,
        ['queued'],
        { state: 'cancelled' },
        { patient: false },
      );
    });

    it('writes nothing when Redis says no (another process won) or has no such job', async () => {
      const f = fakes(rec({ state: 'running' }));
      const lost = await f.ledger.change(rec(), ['queued'], { state: 'cancelled' });
      expect(lost).toMatchObject({ changed: false, record: { state: 'running' } });
      await lost!.written;
      expect(await f.ledger.change({ id: 'gone' }, [], { state: 'failed' })).toBeUndefined();
      expect(f.store.writeRecord).not.toHaveBeenCalled();
    });

    it('returns once Redis changed; `written` settles with the rename, rejecting with its error', async () => {
      const f = fakes(rec({ state: 'queued' }));
      let finish!: (err?: Error) => void;
      f.store.writeRecord.mockImplementation(
        () => new Promise<void>((resolve, reject) => (finish = (e) => (e ? reject(e) : resolve()))),
      );
      const t = await f.ledger.change(rec(), ['queued'], { state: 'running' }, { patient: true });
      expect(f.records.transition).toHaveBeenCalledWith(
        rec().id,
        ['queued'],
        { state: 'running' },
        { patient: true },
      );
      let settled = false;
      const watched = t!.written.then(
        () => (settled = true),
        (e: Error) => e.message,
      );
      await new Promise((r) => setImmediate(r));
      expect(settled).toBe(false);
      finish(enospc());
      expect(await watched).toMatch(/ENOSPC/);
    });

    it('leaves a failed mirror that nobody awaits unreported (no unhandled rejection)', async () => {
      const f = fakes(rec({ state: 'queued' }));
      f.store.writeRecord.mockRejectedValue(enospc());
      const unhandled = jest.fn();
      process.on('unhandledRejection', unhandled);
      try {
        await f.ledger.change(rec(), ['queued'], { state: 'running' });
        await new Promise((r) => setTimeout(r, 10));
        expect(unhandled).not.toHaveBeenCalled();
      } finally {
        process.off('unhandledRejection', unhandled);
      }
    });
  });

  it('redis-only: changes Redis and leaves job.json alone', async () => {
    const f = fakes();
    const t = await f.ledger.change(rec(), ['running'], { progress: 70 }, { order: 'redis-only' });
    await t!.written;
    expect(t!.record.progress).toBe(70);
    expect(f.calls).toEqual(['redis -']);
  });

  describe('disk-first (an ending by the process that ran the job)', () => {
    const ending = {
      state: 'succeeded' as const,
      exitCode: 0,
      progress: 100,
      error: null,
      finishedAt: 'T',
    };

    it('writes the final job.json (with the output fsynced for a success) before Redis', async () => {
      const f = fakes();
      const t = await f.ledger.change(rec(), ['queued', 'running'], ending, {
        order: 'disk-first',
        patient: true,
      });
      expect(f.calls).toEqual(['final succeeded +output', 'redis succeeded']);
      // The record as the caller holds it, with the ending: the base of job.json.
      expect(f.store.writeFinal).toHaveBeenCalledWith({ ...rec(), ...ending }, true);
      expect(f.records.transition).toHaveBeenCalledWith(rec().id, ['queued', 'running'], ending, {
        patient: true,
      });
      expect(t).toMatchObject({ changed: true, record: { state: 'succeeded', exitCode: 0 } });
      await t!.written;
    });

    it('fsyncs no output for another ending', async () => {
      const f = fakes();
      await f.ledger.change(
        rec(),
        ['running'],
        { state: 'cancelled', error: null },
        { order: 'disk-first' },
      );
      expect(f.calls).toEqual(['final cancelled', 'redis cancelled']);
    });

    it('records a success whose job.json cannot be written as failed "disk full", never succeeded', async () => {
      const f = fakes();
      f.store.writeFinal.mockRejectedValueOnce(enospc());
      const t = await f.ledger.change(rec(), ['running'], ending, { order: 'disk-first' });
      // The first write (rejected) was the success; then the failure, without output, then Redis.
      expect(f.store.writeFinal.mock.calls.map(([r, out]) => [r.state, out])).toEqual([
        ['succeeded', true],
        ['failed', false],
      ]);
      expect(f.calls).toEqual(['final failed', 'redis failed']);
      expect(t!.record).toMatchObject({
        state: 'failed',
        error: 'disk full',
        progress: 40,
        exitCode: 0,
      });
    });

    it('names the error of another failed write, and keeps an ending that is not a success', async () => {
      const f = fakes();
      f.store.writeFinal.mockRejectedValue(new Error('EIO: i/o error'));
      const ok = await f.ledger.change(rec(), ['running'], ending, { order: 'disk-first' });
      expect(ok!.record).toMatchObject({
        state: 'failed',
        error: 'cannot write job.json: EIO: i/o error',
      });
      const g = fakes();
      g.store.writeFinal.mockRejectedValue(enospc());
      const cancelled = await g.ledger.change(
        rec(),
        ['running'],
        { state: 'cancelled', error: null },
        { order: 'disk-first' },
      );
      expect(cancelled!.record).toMatchObject({ state: 'cancelled', error: null });
    });

    it('makes job.json follow Redis when someone else ended the job first', async () => {
      const f = fakes(rec({ state: 'cancelled' }));
      const t = await f.ledger.change(rec(), ['queued', 'running'], ending, {
        order: 'disk-first',
      });
      expect(t).toMatchObject({ changed: false, record: { state: 'cancelled' } });
      expect(f.calls).toEqual(['final succeeded +output', 'redis succeeded', 'json cancelled']);
    });
  });
});
