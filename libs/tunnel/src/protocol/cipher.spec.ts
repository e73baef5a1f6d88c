import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { FrameOpener, FrameSealer } from './cipher';
import { MAX_DATA, REKEY_FRAMES } from './constants';

const header = (n: number): Buffer => Buffer.from([2, 0, 0, 0, n]);

function pair(first = 0): { s: FrameSealer; o: FrameOpener } {
  const key = randomBytes(32);
  return { s: new FrameSealer(key, first), o: new FrameOpener(key, first) };
}

describe('frame sealing', () => {
  it('opens frames in order to the exact plaintext', () => {
    const { s, o } = pair();
    for (let i = 0; i < 5; i++) {
      const body = randomBytes(100 * i);
      expect(o.open(s.seal(header(i), body)!)!.equals(Buffer.concat([header(i), body]))).toBe(true);
    }
  });

  it('seals the largest frame and refuses one byte more on the wire', () => {
    const { s, o } = pair();
    const wire = s.seal(header(0), randomBytes(MAX_DATA))!;
    expect(o.open(wire)).toBeDefined();
    expect(pair().o.open(Buffer.concat([wire, Buffer.alloc(1)]))).toBeUndefined();
  });

  it('refuses a frame with any single bit flipped', () => {
    const { s } = pair();
    const key = randomBytes(32);
    const wire = new FrameSealer(key).seal(header(1), randomBytes(64))!;
    for (let bit = 0; bit < wire.length * 8; bit++) {
      const copy = Buffer.from(wire);
      copy[bit >> 3] ^= 1 << (bit & 7);
      expect(new FrameOpener(key).open(copy)).toBeUndefined();
    }
    expect(s.frames).toBe(0);
  });

  it('refuses a truncated frame', () => {
    const { s, o } = pair();
    const wire = s.seal(header(1), randomBytes(64))!;
    expect(o.open(wire.subarray(0, wire.length - 1))).toBeUndefined();
  });

  it('refuses reordered frames', () => {
    const { s, o } = pair();
    const a = s.seal(header(1))!;
    const b = s.seal(header(2))!;
    expect(o.open(b)).toBeUndefined();
    expect(o.open(a)).toBeUndefined();
  });

  it('refuses a replayed frame', () => {
    const { s, o } = pair();
    const a = s.seal(header(1))!;
    expect(o.open(a)).toBeDefined();
    expect(o.open(a)).toBeUndefined();
  });

  it('refuses a frame from another session', () => {
    const other = pair();
    const { o } = pair();
    expect(o.open(other.s.seal(header(1))!)).toBeUndefined();
  });

  it('refuses everything after a first failure', () => {
    const { s, o } = pair();
    const a = s.seal(header(1))!;
    expect(o.open(Buffer.alloc(30))).toBeUndefined();
    expect(o.open(a)).toBeUndefined();
  });

  it('rekeys both ends at the same frame, and an old-key frame cannot be opened after it', () => {
    const { s, o } = pair(REKEY_FRAMES - 2);
    const before = s.seal(header(1))!;
    expect(o.open(before)).toBeDefined();
    for (let i = 0; i < 4; i++) expect(o.open(s.seal(header(i))!)).toBeDefined();
    const key = randomBytes(32);
    const stale = new FrameSealer(key, 0).seal(header(0))!;
    expect(new FrameOpener(key, REKEY_FRAMES).open(stale)).toBeUndefined();
  });

  it('never throws and never accepts random or mutated bytes (property)', () => {
    const key = randomBytes(32);
    const good = new FrameSealer(key).seal(header(1), randomBytes(40))!;
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.nat(good.length - 1),
        fc.integer({ min: 1, max: 255 }),
        (junk, at, xor) => {
          expect(new FrameOpener(key).open(Buffer.from(junk))).toBeUndefined();
          const bad = Buffer.from(good);
          bad[at] ^= xor;
          expect(new FrameOpener(key).open(bad)).toBeUndefined();
        },
      ),
      { numRuns: 500 },
    );
  });
});
