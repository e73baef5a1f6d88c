import fc from 'fast-check';
import {
  cleanProgressMessage,
  MAX_PROGRESS_LINE,
  MAX_PROGRESS_MESSAGE,
  parseProgressLine,
  ProgressScanner,
  ProgressThrottle,
} from './progress';

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

  it('keeps printable characters only: control characters and ANSI sequences go, tabs become spaces', () => {
    expect(parseProgressLine('::progress:: 5 \x1b[31mred\x1b[0m\tdone\x01\x7f\x9b ok')).toEqual({
      percent: 5,
      message: 'red done ok',
    });
    expect(parseProgressLine('::progress:: 5 a\u202eb\u2066c')).toEqual({
      percent: 5,
      message: 'abc',
    });
    // Nothing printable left: no message.
    expect(parseProgressLine(`::progress:: 7 ${'\x01'.repeat(1000)}`)).toEqual({ percent: 7 });
    expect(parseProgressLine('::progress:: 7 étape 3 ✓ 😀')?.message).toBe('étape 3 ✓ 😀');
  });

  it('cuts a message at 1 KiB of UTF-8, at a character boundary, ending with …', () => {
    // The review's line: 64 KiB of \x01 between printable bytes was a 390 KB record.
    const hostile = `::progress:: 50 ${'a\x01'.repeat(30_000)}`;
    const m = parseProgressLine(hostile)!.message!;
    expect(Buffer.byteLength(m)).toBeLessThanOrEqual(MAX_PROGRESS_MESSAGE);
    expect(m.endsWith('…')).toBe(true);
    expect(JSON.stringify({ message: m }).length).toBeLessThan(1100);
    for (const unit of ['é', '😀', '✓', 'x']) {
      const cut = cleanProgressMessage(unit.repeat(2000));
      expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(MAX_PROGRESS_MESSAGE);
      expect(Buffer.byteLength(cut)).toBeGreaterThan(MAX_PROGRESS_MESSAGE - 8);
      expect(cut).not.toContain('\ufffd');
      expect(cut.slice(0, -1)).toBe(unit.repeat([...cut].length - 1));
    }
    expect(cleanProgressMessage('x'.repeat(MAX_PROGRESS_MESSAGE))).toBe('x'.repeat(1024));
  });

  it('keeps any message within the rules, whatever the line holds', () => {
    fc.assert(
      fc.property(fc.fullUnicodeString({ maxLength: 3000 }), (msg) => {
        const m = parseProgressLine(`::progress:: 1 ${msg}`)?.message;
        if (m === undefined) return;
        expect(Buffer.byteLength(m)).toBeLessThanOrEqual(MAX_PROGRESS_MESSAGE);
        expect(m).not.toMatch(/[\p{Cc}\p{Cs}\u202a-\u202e\u2066-\u2069]/u);
      }),
    );
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

/** Feeds `chunks` to a scanner; returns the lines it reported. */
function scan(chunks: (string | Buffer)[], end = true): string[] {
  const lines: string[] = [];
  const s = new ProgressScanner((l) => lines.push(l));
  for (const c of chunks) s.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
  if (end) s.end();
  return lines;
}

describe('progress scanner (bytes in, progress lines out)', () => {
  it('reports only lines that start with the prefix, across any chunk boundaries', () => {
    const text = 'hello\n::progress:: 10 a\nx ::progress:: 20\n::progress:: 30\r\n::prog';
    const expected = ['::progress:: 10 a', '::progress:: 30\r'];
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: text.length - 1 }), { maxLength: 6 }),
        (cuts) => {
          const at = [0, ...[...new Set(cuts)].sort((a, b) => a - b), text.length];
          const chunks = at.slice(1).map((to, i) => text.slice(at[i], to));
          expect(scan(chunks)).toEqual(expected);
        },
      ),
    );
    expect(scan(['::progress:: 99 last'])).toEqual(['::progress:: 99 last']);
    expect(scan(['::progress:: 99 last'], false)).toEqual([]);
  });

  it('never holds more than 64 KiB of a line: a longer one is skipped, the next read', () => {
    const long = `::progress:: 50 ${'x'.repeat(MAX_PROGRESS_LINE)}`;
    expect(scan([long.slice(0, 40_000), long.slice(40_000), '\n::progress:: 60\n'])).toEqual([
      '::progress:: 60',
    ]);
    const fits = `::progress:: 50 ${'y'.repeat(MAX_PROGRESS_LINE - 30)}`;
    expect(scan([fits, '\n'])).toEqual([fits]);
  });

  it('keeps nothing of a line that cannot be progress, however long (no copy of 100 MB)', () => {
    const s = new ProgressScanner(() => undefined);
    const mb = Buffer.alloc(1024 * 1024, 'x');
    const before = process.memoryUsage().arrayBuffers;
    for (let i = 0; i < 100; i++) s.push(mb);
    const held = (s as unknown as { heldBytes: number }).heldBytes;
    expect(held).toBe(0);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 1024 * 1024);
  });
});

describe('progress throttle', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('passes the first at once, then the latest of each interval, and flushes the last', () => {
    const got: string[] = [];
    const t = new ProgressThrottle((l) => got.push(l), 100);
    t.push('a');
    for (const l of ['b', 'c', 'd']) t.push(l);
    expect(got).toEqual(['a']);
    jest.advanceTimersByTime(100);
    expect(got).toEqual(['a', 'd']);
    t.push('e');
    t.flush();
    expect(got).toEqual(['a', 'd', 'e']);
    t.flush();
    expect(got).toEqual(['a', 'd', 'e']);
  });

  it('turns a million progress lines into a handful of updates', () => {
    const got: string[] = [];
    const t = new ProgressThrottle((l) => got.push(l), 100);
    for (let i = 0; i < 1_000_000; i++) t.push(`::progress:: ${i % 100}`);
    t.flush();
    expect(got).toEqual(['::progress:: 0', '::progress:: 99']);
  });
});
