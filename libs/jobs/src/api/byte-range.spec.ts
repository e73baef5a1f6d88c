import fc from 'fast-check';
import { planRange } from './byte-range';

const V = { etag: '"a-64-1"', lastModified: 'Tue, 01 Dec 2026 10:00:00 GMT' };

describe('planRange', () => {
  it.each([
    ['bytes=0-9', { kind: 'partial', start: 0, end: 9 }],
    ['bytes=90-', { kind: 'partial', start: 90, end: 99 }],
    ['bytes=99-99', { kind: 'partial', start: 99, end: 99 }],
    ['bytes=50-5000', { kind: 'partial', start: 50, end: 99 }],
    ['bytes=-10', { kind: 'partial', start: 90, end: 99 }],
    // A suffix longer than the file is the whole file (RFC 9110 14.1.2), as a 206.
    ['bytes=-1000', { kind: 'partial', start: 0, end: 99 }],
    ['BYTES = 1-2', { kind: 'partial', start: 1, end: 2 }],
    ['bytes= 3-4 ', { kind: 'partial', start: 3, end: 4 }],
    // Resuming a complete download (`curl -C -`), past the end, a zero suffix: 416.
    ['bytes=100-', { kind: 'unsatisfiable' }],
    ['bytes=100-200', { kind: 'unsatisfiable' }],
    ['bytes=99999999999999999999999-', { kind: 'unsatisfiable' }],
    ['bytes=-0', { kind: 'unsatisfiable' }],
    // Ignored (the whole file, 200): malformed, invalid, another unit, several ranges.
    ['bytes=5-2', { kind: 'whole' }],
    ['bytes=-', { kind: 'whole' }],
    ['bytes=a-b', { kind: 'whole' }],
    ['bytes=1-2-3', { kind: 'whole' }],
    ['bytes=+1-2', { kind: 'whole' }],
    ['bytes=0x10-', { kind: 'whole' }],
    ['bytes 0-1', { kind: 'whole' }],
    ['items=0-1', { kind: 'whole' }],
    ['bytes=0-1,5-6', { kind: 'whole' }],
    ['bytes=0-1,', { kind: 'whole' }],
    ['', { kind: 'whole' }],
  ])('for a 100-byte file, %j is %j', (range, plan) => {
    expect(planRange(100, range)).toEqual(plan);
  });

  it('serves the whole file when there is no Range', () => {
    expect(planRange(100, undefined)).toEqual({ kind: 'whole' });
  });

  it('finds nothing to send in an empty file', () => {
    expect(planRange(0, 'bytes=0-')).toEqual({ kind: 'unsatisfiable' });
    expect(planRange(0, 'bytes=-5')).toEqual({ kind: 'unsatisfiable' });
  });

  it('honours Range only while If-Range still names the file as it is', () => {
    const range = 'bytes=10-';
    expect(planRange(100, range, V.etag, V)).toEqual({ kind: 'partial', start: 10, end: 99 });
    expect(planRange(100, range, V.lastModified, V)).toMatchObject({ kind: 'partial' });
    expect(planRange(100, range, '"other"', V)).toEqual({ kind: 'whole' });
    // A weak ETag never matches for a range (RFC 9110 13.1.5), nor another date.
    expect(planRange(100, range, `W/${V.etag}`, V)).toEqual({ kind: 'whole' });
    expect(planRange(100, range, 'Wed, 02 Dec 2026 10:00:00 GMT', V)).toEqual({ kind: 'whole' });
  });

  it('always plans bytes inside the file, or none', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 1e6 }),
        fc.oneof(
          fc
            .tuple(fc.nat({ max: 2e6 }), fc.option(fc.nat({ max: 2e6 })))
            .map(([a, b]) => `bytes=${a}-${b ?? ''}`),
          fc.nat({ max: 2e6 }).map((n) => `bytes=-${n}`),
          fc.string(),
        ),
        (size, range) => {
          const plan = planRange(size, range);
          if (plan.kind === 'partial') {
            expect(plan.start).toBeGreaterThanOrEqual(0);
            expect(plan.start).toBeLessThanOrEqual(plan.end);
            expect(plan.end).toBeLessThan(size);
          }
        },
      ),
    );
  });
});
