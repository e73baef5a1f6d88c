import { tmpdir } from 'node:os';
import { diskStatus, probeDisk } from './disk';

describe('DATA_FOLDER free space', () => {
  const fs = { bsize: 4096, blocks: 1000, bavail: 40 }; // 4 % free, 163840 bytes

  it('applies a percentage threshold', () => {
    expect(diskStatus('/d', fs, { percent: 5 })).toEqual({
      path: '/d',
      totalBytes: 4_096_000,
      freeBytes: 163_840,
      freePercent: 4,
      belowThreshold: true,
      threshold: { percent: 5 },
    });
    expect(diskStatus('/d', fs, { percent: 4 }).belowThreshold).toBe(false);
  });

  it('applies a size threshold', () => {
    expect(diskStatus('/d', fs, { bytes: 163_841 }).belowThreshold).toBe(true);
    expect(diskStatus('/d', fs, { bytes: 163_840 }).belowThreshold).toBe(false);
  });

  it('reads a real folder with statfs', async () => {
    const s = await probeDisk(tmpdir(), { percent: 0 });
    expect(s.totalBytes).toBeGreaterThan(0);
    expect(s.freeBytes).toBeGreaterThan(0);
    expect(s.freeBytes).toBeLessThanOrEqual(s.totalBytes);
    expect(s.belowThreshold).toBe(false);
    await expect(probeDisk('/nonexistent-gsc', { percent: 5 })).rejects.toThrow(/ENOENT/);
  });
});
