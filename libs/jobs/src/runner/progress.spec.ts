import fc from 'fast-check';
import { parseProgressLine } from './progress';

describe('progress lines', () => {
  it('reads a percentage and an optional message', () => {
    expect(parseProgressLine('::progress:: 42')).toEqual({ percent: 42 });
    expect(parseProgressLine('::progress:: 12.5 epoch 3/10  ')).toEqual({
      percent: 12.5,
      message: 'epoch 3/10',
    });
  });

  it('ignores other lines and out-of-range values', () => {
    expect(parseProgressLine('progress: 10')).toBeUndefined();
    expect(parseProgressLine('::progress:: 101')).toBeUndefined();
    expect(parseProgressLine('::progress:: -1')).toBeUndefined();
    expect(parseProgressLine('x ::progress:: 5')).toBeUndefined();
  });

  it('round-trips every whole percentage with any message', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 100 }),
        fc.string().filter((s) => !/[\r\n]/.test(s)),
        (n, msg) => {
          const p = parseProgressLine(`::progress:: ${n} ${msg}`);
          expect(p?.percent).toBe(n);
          expect(p?.message ?? '').toBe(msg.trim());
        },
      ),
    );
  });
});
