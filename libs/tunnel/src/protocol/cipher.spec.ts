import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { FrameOpener, FrameSealer, type GcmImplementation } from './cipher';
import { MAX_DATA, REKEY_FRAMES } from './constants';
import { frameCipherImplementation, nativeGcm, type GcmContext } from './native-gcm';

const header = (n: number): Buffer => Buffer.from([2, 0, 0, 0, n]);

// The native frame cipher is built by `npm ci` (scripts/build-native.js); these tests need it.
const native = (): NonNullable<typeof nativeGcm> => {
  if (!nativeGcm)
    throw new Error(`the native frame cipher is needed here: ${frameCipherImplementation}`);
  return nativeGcm;
};

describe.each([
  ['node:crypto', (): GcmImplementation => 'node'],
  ['the native frame cipher', (): GcmImplementation => native()],
])('frame sealing with %s', (_name, implementation) => {
  const impl = implementation();
  const sealer = (key: Buffer, first = 0): FrameSealer => new FrameSealer(key, first, impl);
  const opener = (key: Buffer, first = 0): FrameOpener => new FrameOpener(key, first, impl);
  const pair = (first = 0): { s: FrameSealer; o: FrameOpener } => {
    const key = randomBytes(32);
    return { s: sealer(key, first), o: opener(key, first) };
  };

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
    const wire = sealer(key).seal(header(1), randomBytes(64))!;
    for (let bit = 0; bit < wire.length * 8; bit++) {
      const copy = Buffer.from(wire);
      copy[bit >> 3] ^= 1 << (bit & 7);
      expect(opener(key).open(copy)).toBeUndefined();
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

  it('seals nothing once wiped (its key is zeros then), and opens nothing', () => {
    const { s, o } = pair();
    expect(o.open(s.seal(header(1))!)).toBeDefined();
    s.wipe();
    o.wipe();
    expect(s.seal(header(2))).toBeUndefined();
    expect(s.sealParts(header(2))).toBeUndefined();
    const zeros = sealer(Buffer.alloc(32), 1).seal(header(2))!;
    expect(o.open(zeros)).toBeUndefined();
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
    const stale = sealer(key, 0).seal(header(0))!;
    expect(opener(key, REKEY_FRAMES).open(stale)).toBeUndefined();
  });

  it('never throws and never accepts random or mutated bytes (property)', () => {
    const key = randomBytes(32);
    const good = sealer(key).seal(header(1), randomBytes(40))!;
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.nat(good.length - 1),
        fc.integer({ min: 1, max: 255 }),
        (junk, at, xor) => {
          expect(opener(key).open(Buffer.from(junk))).toBeUndefined();
          const bad = Buffer.from(good);
          bad[at] ^= xor;
          expect(opener(key).open(bad)).toBeUndefined();
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('the native frame cipher', () => {
  const rand = (n: number): Buffer => randomBytes(n);

  it("seals every frame exactly as node:crypto does, and each opens the other's (property)", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 5, maxLength: 40 }),
        fc.uint8Array({ maxLength: 3000 }),
        fc.integer({ min: 0, max: 20 }),
        (h, body, frames) => {
          const key = rand(32);
          // Started near a ratchet, so that some runs cross it (a new native context).
          const first = REKEY_FRAMES - 10;
          const [a, b] = [
            new FrameSealer(key, first, 'node'),
            new FrameSealer(key, first, native()),
          ];
          const [na, nb] = [
            new FrameOpener(key, first, native()),
            new FrameOpener(key, first, 'node'),
          ];
          for (let i = 0; i <= frames; i++) {
            const x = a.seal(Buffer.from(h), Buffer.from(body))!;
            const y = b.seal(Buffer.from(h), Buffer.from(body))!;
            expect(y.equals(x)).toBe(true);
            expect(na.open(x)!.equals(Buffer.concat([h, body]))).toBe(true);
            expect(nb.open(y)!.equals(Buffer.concat([h, body]))).toBe(true);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('refuses arguments that are not what it checks for, and a freed context', () => {
    const gcm = native();
    const key = rand(32);
    const nonce = rand(12);
    const s = gcm.create(key, true);
    const o = gcm.create(key, false);
    expect(() => gcm.create(rand(31), true)).toThrow('key must be 32 bytes');
    expect(() => gcm.create('x'.repeat(32) as unknown as Buffer, true)).toThrow(
      'key must be a Buffer',
    );
    expect(() => gcm.seal(s, rand(11), rand(5))).toThrow('nonce must be 12 bytes');
    expect(() => gcm.seal(s, nonce, 'header' as unknown as Buffer)).toThrow(
      'header must be a Buffer',
    );
    expect(() => gcm.seal(s, nonce, rand(5), 7 as unknown as Buffer)).toThrow(
      'body must be a Buffer',
    );
    expect(() => gcm.seal({} as GcmContext, nonce, rand(5))).toThrow('not a seal context');
    // A context of the other direction is refused, not used.
    expect(() => gcm.seal(o, nonce, rand(5))).toThrow('not a seal context');
    expect(() => gcm.open(s, nonce, rand(40))).toThrow('not an open context');
    // Shorter than a tag: nothing to check, nothing returned.
    expect(gcm.open(o, nonce, rand(15))).toBeUndefined();
    expect(gcm.open(o, nonce, Buffer.alloc(0))).toBeUndefined();
    gcm.free(s);
    gcm.free(s); // twice is harmless
    expect(() => gcm.seal(s, nonce, rand(5))).toThrow('context was freed');
    gcm.free(o);
    expect(() => gcm.open(o, nonce, rand(40))).toThrow('context was freed');
  });

  it('returns nothing of a frame whose tag does not check, and goes on opening good ones', () => {
    const gcm = native();
    const key = rand(32);
    const s = gcm.create(key, true);
    const o = gcm.create(key, false);
    const nonce = rand(12);
    const wire = gcm.seal(s, nonce, rand(11), rand(500));
    for (const at of [0, 10, 300, wire.length - 16, wire.length - 1]) {
      const bad = Buffer.from(wire);
      bad[at] ^= 0x80;
      expect(gcm.open(o, nonce, bad)).toBeUndefined();
      // The context is not left half-used: the good frame still opens after a failure.
      expect(gcm.open(o, nonce, wire)).toBeDefined();
    }
    const other = rand(12);
    expect(gcm.open(o, other, wire)).toBeUndefined();
    // Nothing but a tag: an empty plaintext opens to an empty buffer, a forged tag to nothing.
    const empty = gcm.seal(s, nonce, Buffer.alloc(0));
    expect(empty.length).toBe(16);
    expect(gcm.open(o, nonce, empty)?.length).toBe(0);
    expect(gcm.open(o, nonce, rand(16))).toBeUndefined();
    gcm.free(s);
    gcm.free(o);
  });

  it('is what the tunnel uses by default here (the project builds it at npm ci)', () => {
    expect(frameCipherImplementation).toMatch(/^native/);
    const key = rand(32);
    // No implementation given: a frame sealed by default opens with node:crypto and vice versa.
    expect(
      new FrameOpener(key, 0, 'node').open(new FrameSealer(key).seal(header(1), rand(9))!),
    ).toBeDefined();
    expect(
      new FrameOpener(key).open(new FrameSealer(key, 0, 'node').seal(header(1), rand(9))!),
    ).toBeDefined();
  });
});
