import { gpuProblems, isSelected, missingSelected } from './health';

const gpu = { index: 0, uuid: 'GPU-ab12', name: 'X', pciBusId: 'b' };

describe('gpuProblems', () => {
  it('is hot at exactly GPU_MAX_TEMP, not one degree below', () => {
    expect(gpuProblems({ ...gpu, temperatureC: 90 }, 90)).toEqual([
      { kind: 'hot', temperatureC: 90, maxTemp: 90 },
    ]);
    expect(gpuProblems({ ...gpu, temperatureC: 89 }, 90)).toEqual([]);
  });

  it('flags uncorrected ECC errors above 0, and ignores an N/A temperature or ECC', () => {
    expect(gpuProblems({ ...gpu, eccUncorrectedVolatile: 2 }, 90)).toEqual([
      { kind: 'ecc', uncorrected: 2 },
    ]);
    expect(gpuProblems({ ...gpu, eccUncorrectedVolatile: 0, temperatureC: 30 }, 90)).toEqual([]);
    expect(gpuProblems(gpu, 90)).toEqual([]);
  });
});

describe('GPU_DEVICES selection', () => {
  it('matches indexes and UUIDs (case-insensitive)', () => {
    expect(isSelected({ kind: 'all' }, gpu)).toBe(true);
    expect(isSelected({ kind: 'none' }, gpu)).toBe(false);
    expect(isSelected({ kind: 'list', ids: ['0'] }, gpu)).toBe(true);
    expect(isSelected({ kind: 'list', ids: ['1'] }, gpu)).toBe(false);
    expect(isSelected({ kind: 'list', ids: ['GPU-AB12'] }, gpu)).toBe(true);
    expect(missingSelected({ kind: 'list', ids: ['0', '1', 'GPU-ff'] }, [gpu])).toEqual([
      '1',
      'GPU-ff',
    ]);
    expect(missingSelected({ kind: 'all' }, [])).toEqual([]);
  });
});
