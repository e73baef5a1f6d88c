const blocking = {
  execSync: jest.fn(),
  execFileSync: jest.fn(),
  spawnSync: jest.fn(),
};
// Every synchronous way to run a process, recorded (systeminformation takes them from
// 'child_process' when it loads, so the mock must be in place first).
jest.mock('child_process', () => {
  const actual = jest.requireActual('child_process');
  return {
    ...actual,
    execSync: (...a: unknown[]) => (blocking.execSync(...a), actual.execSync(...a)),
    execFileSync: (...a: unknown[]) => (blocking.execFileSync(...a), actual.execFileSync(...a)),
    spawnSync: (...a: unknown[]) => (blocking.spawnSync(...a), actual.spawnSync(...a)),
  };
});

import { loadBetween, parseProcStat, probeHost } from './system';

describe('probeHost', () => {
  it('reads CPU load and memory without running a process synchronously', async () => {
    for (let i = 0; i < 2; i++) {
      const h = await probeHost();
      expect(h.cpus).toBeGreaterThan(0);
      expect(h.cpuLoadPercent).toBeGreaterThanOrEqual(0);
      expect(h.cpuLoadPercent).toBeLessThanOrEqual(100);
      expect(h.memTotalBytes).toBeGreaterThan(0);
      expect(h.memAvailableBytes).toBeLessThanOrEqual(h.memTotalBytes);
    }
    expect(blocking.execSync).not.toHaveBeenCalled();
    expect(blocking.execFileSync).not.toHaveBeenCalled();
    expect(blocking.spawnSync).not.toHaveBeenCalled();
  });
});

describe('CPU load from /proc/stat', () => {
  const stat = (user: number, idle: number, iowait: number) =>
    `cpu  ${user} 0 100 ${idle} ${iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2\n`;

  it('counts idle and iowait as idle, everything else as busy', () => {
    expect(parseProcStat(stat(300, 500, 100))).toEqual({ busy: 400, total: 1000 });
  });

  it('gives the busy share between two readings', () => {
    const a = parseProcStat(stat(300, 500, 100))!;
    const b = parseProcStat(stat(600, 600, 100))!; // +300 busy, +100 idle
    expect(loadBetween(a, b)).toBe(75);
    expect(loadBetween(b, b)).toBe(0);
    expect(loadBetween(undefined, a)).toBe(40); // first reading: since boot
  });

  it('refuses what is not the aggregate cpu line', () => {
    expect(parseProcStat('cpu0 1 2 3 4\n')).toBeUndefined();
    expect(parseProcStat('cpu  a b c d\n')).toBeUndefined();
    expect(parseProcStat('')).toBeUndefined();
  });
});
