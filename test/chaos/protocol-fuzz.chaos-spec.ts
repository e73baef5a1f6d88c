import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import {
  AUTH_I_BYTES,
  AUTH_R_BYTES,
  decodeFrame,
  deriveAuthKey,
  encodeFrame,
  FrameOpener,
  FrameSealer,
  HELLO_BYTES,
  InitiatorHandshake,
  LABEL_MAC_I,
  LABEL_MAC_R,
  MAX_DATA,
  MAX_SEALED_FRAME,
  MSG_AUTH_I,
  MSG_AUTH_R,
  MSG_HELLO,
  ResponderHandshake,
  type Frame,
} from '../../libs/tunnel/src/protocol';
import { hmac } from '../../libs/tunnel/src/protocol/kdf';
import { recordChaos, SCALE } from './support';

/**
 * Hostile bytes against the tunnel protocol's parsers, called directly (libs/tunnel/src/protocol):
 * random and mutated sealed frames to FrameOpener (AEAD, then decodeFrame), random plaintexts to
 * decodeFrame, random and mutated handshake messages to both handshake sides. Nothing forged or
 * altered may be accepted and nothing may throw. Each mutated case has an unmutated control
 * that IS accepted, so a parser that refused everything would fail this test.
 *
 * Cases: CHAOS_SCALE=full 100,000+; short (npm test) 20,000+.
 */
const N = SCALE.full
  ? { sealed: 50_000, plain: 20_000, responder: 28_000, initiator: 2_000 }
  : { sealed: 10_000, plain: 4_000, responder: 5_600, initiator: 400 };
const counts = { cases: 0, accepted: 0, thrown: 0 };

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; byte: number }
  | { kind: 'truncate'; to: number }
  | { kind: 'extend'; extra: Uint8Array }
  | { kind: 'splice'; at: number; junk: Uint8Array };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.nat(255) }),
  fc.record({ kind: fc.constant('truncate' as const), to: fc.nat() }),
  fc.record({
    kind: fc.constant('extend' as const),
    extra: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  }),
  fc.record({
    kind: fc.constant('splice' as const),
    at: fc.nat(),
    junk: fc.uint8Array({ minLength: 1, maxLength: 32 }),
  }),
);

/** Applies a mutation; the result always differs from `b` (a no-op `set` flips instead). */
function mutate(b: Buffer, m: Mutation): Buffer {
  const out = Buffer.from(b);
  switch (m.kind) {
    case 'flip':
      out[m.at % out.length] ^= 1 << m.bit;
      return out;
    case 'set': {
      const i = m.at % out.length;
      out[i] = out[i] === m.byte ? out[i] ^ 0xff : m.byte;
      return out;
    }
    case 'truncate':
      return out.subarray(0, m.to % out.length);
    case 'extend':
      return Buffer.concat([out, m.extra]);
    case 'splice': {
      const i = m.at % out.length;
      return Buffer.concat([out.subarray(0, i), m.junk, out.subarray(i)]);
    }
  }
}

const sid = fc.integer({ min: 1, max: 0xffffffff });
const frame: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({
    type: fc.constant('open' as const),
    sid,
    target: fc.stringMatching(/^[a-z0-9._-]{1,64}$/),
  }),
  fc.record({
    type: fc.constant('data' as const),
    sid,
    data: fc.uint8Array({ minLength: 1, maxLength: 2048 }).map((u) => Buffer.from(u)),
  }),
  fc.record({ type: fc.constant('fin' as const), sid }),
  fc.record({ type: fc.constant('reset' as const), sid, reason: fc.string({ maxLength: 40 }) }),
  fc.record({
    type: fc.constant('window' as const),
    sid,
    increment: fc.integer({ min: 1, max: 2 ** 30 }),
  }),
  fc.record({
    type: fc.constant('ping' as const),
    body: fc.uint8Array({ minLength: 8, maxLength: 8 }).map((u) => Buffer.from(u)),
  }),
  fc.record({ type: fc.constant('close' as const), reason: fc.string({ maxLength: 40 }) }),
);

/** Runs one case: it must not throw, and `accepted` must be false. */
function expectRefused(run: () => boolean): void {
  counts.cases++;
  let accepted: boolean;
  try {
    accepted = run();
  } catch (err) {
    counts.thrown++;
    throw err;
  }
  if (accepted) counts.accepted++;
  expect(accepted).toBe(false);
}

const key = randomBytes(32);

describe(`tunnel protocol under hostile bytes (${SCALE.name})`, () => {
  afterAll(() => recordChaos('protocol-fuzz', { ...counts, scale: SCALE.name }));

  it(`FrameOpener refuses ${N.sealed / 2} random wire frames (no key, or any key but the session's)`, () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: MAX_SEALED_FRAME + 64 }),
        fc.nat(1000),
        (wire, counter) => {
          expectRefused(() => new FrameOpener(key, counter).open(Buffer.from(wire)) !== undefined);
        },
      ),
      { numRuns: N.sealed / 2 },
    );
  });

  it(`FrameOpener refuses ${N.sealed / 2} altered, replayed or reordered sealed frames`, () => {
    fc.assert(
      fc.property(
        frame,
        fc.nat(1000),
        fc.oneof(mutation, fc.integer({ min: 1, max: 5 })),
        (f, counter, change) => {
          const e = encodeFrame(f);
          const wire = new FrameSealer(key, counter).seal(e.header, e.body)!;
          // Control: the untouched frame at its own counter opens and decodes to what was sent.
          const plain = new FrameOpener(key, counter).open(wire);
          expect(plain && decodeFrame(plain)?.type).toBe(f.type);
          if (typeof change === 'number') {
            // The same bytes at another counter: a replay (earlier) or a reorder (later).
            const at = counter >= change ? counter - change : counter + change;
            expectRefused(() => new FrameOpener(key, at).open(wire) !== undefined);
          } else {
            expectRefused(
              () => new FrameOpener(key, counter).open(mutate(wire, change)) !== undefined,
            );
          }
        },
      ),
      { numRuns: N.sealed / 2 },
    );
  });

  it(`decodeFrame reads ${N.plain} random plaintexts without throwing, and nothing loosely`, () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 64 }),
          fc
            .tuple(
              fc.integer({ min: 0, max: 10 }),
              fc.uint8Array({ minLength: 4, maxLength: MAX_DATA + 16 }),
            )
            .map(([t, rest]) => Uint8Array.from([t, ...rest])),
        ),
        (bytes) => {
          counts.cases++;
          const p = Buffer.from(bytes);
          const f = decodeFrame(p);
          if (!f) return;
          // Whatever is accepted is exactly what an honest encoder would have produced.
          const e = encodeFrame(f);
          const again = Buffer.concat([e.header, e.body ?? Buffer.alloc(0)]);
          if (f.type === 'reset' || f.type === 'close') {
            expect(p.length).toBeLessThanOrEqual(5 + 128);
          } else {
            expect(again.equals(p)).toBe(true);
          }
        },
      ),
      { numRuns: N.plain },
    );
  });

  it(`the responder refuses ${N.responder} random and altered AUTH_I messages`, () => {
    const authKey = deriveAuthKey(randomBytes(32));
    const other = deriveAuthKey(randomBytes(32));
    /** An AUTH_I an initiator with `k` would send to `hello` (any public key will do here). */
    const authI = (hello: Buffer, k: Buffer, nonce: Uint8Array, pub: Uint8Array): Buffer => {
      const signed = Buffer.concat([Buffer.from([MSG_AUTH_I]), nonce, pub]);
      return Buffer.concat([signed, hmac(k, LABEL_MAC_I, hello, signed)]);
    };
    let controls = 0;
    fc.assert(
      fc.property(
        fc.oneof(
          // Random bytes, of any length or of exactly AUTH_I's length with its type byte.
          fc.uint8Array({ maxLength: 256 }).map((u) => ({ kind: 'random' as const, bytes: u })),
          fc
            .uint8Array({ minLength: AUTH_I_BYTES - 1, maxLength: AUTH_I_BYTES - 1 })
            .map((u) => ({ kind: 'random' as const, bytes: Uint8Array.from([MSG_AUTH_I, ...u]) })),
          // A well-formed AUTH_I under another key.
          fc.constant({ kind: 'other-key' as const }),
          // An AUTH_I for another handshake's HELLO (a replay).
          fc.constant({ kind: 'replay' as const }),
          // The right AUTH_I, altered.
          mutation.map((m) => ({ kind: 'mutated' as const, m })),
        ),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        (c, nonce, pub) => {
          const r = new ResponderHandshake([authKey]);
          let m2: Buffer;
          if (c.kind === 'random') m2 = Buffer.from(c.bytes);
          else if (c.kind === 'other-key') m2 = authI(r.hello, other, nonce, pub);
          else if (c.kind === 'replay')
            m2 = authI(new ResponderHandshake([authKey]).hello, authKey, nonce, pub);
          else {
            const good = authI(r.hello, authKey, nonce, pub);
            // Control, now and then (X25519 in JS costs milliseconds): the unaltered one passes.
            if (controls < 50) {
              controls++;
              const fresh = new ResponderHandshake([authKey]);
              const step = fresh.receive(authI(fresh.hello, authKey, nonce, pub));
              expect(step.ok || step.reason === 'bad public key').toBe(true);
            }
            m2 = mutate(good, c.m);
          }
          expectRefused(() => r.receive(m2).ok);
          // One AUTH_I per handshake: even a correct one afterwards is refused.
          expectRefused(() => r.receive(authI(r.hello, authKey, nonce, pub)).ok);
        },
      ),
      { numRuns: N.responder / 2 },
    );
    expect(controls).toBeGreaterThan(0);
  });

  it(`the initiator refuses ${N.initiator} random HELLOs and random or altered AUTH_R messages`, () => {
    const authKey = deriveAuthKey(randomBytes(32));
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 128 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.oneof(
          fc.uint8Array({ maxLength: 128 }).map((u) => ({ kind: 'random' as const, bytes: u })),
          mutation.map((m) => ({ kind: 'mutated' as const, m })),
        ),
        (hello, pubR, c) => {
          // A HELLO of the wrong shape is refused at once.
          const bad = Buffer.from(hello);
          if (!(bad.length === HELLO_BYTES && bad[0] === MSG_HELLO))
            expectRefused(() => new InitiatorHandshake(authKey).receive(bad).ok);
          // A proper HELLO, then a forged or altered AUTH_R.
          const i = new InitiatorHandshake(authKey);
          const m1 = Buffer.concat([Buffer.from([MSG_HELLO]), randomBytes(32)]);
          const step = i.receive(m1);
          expect(step.ok && step.reply?.length).toBe(AUTH_I_BYTES);
          const m2 = (step as { reply: Buffer }).reply;
          const head = Buffer.concat([Buffer.from([MSG_AUTH_R]), pubR]);
          const good = Buffer.concat([head, hmac(authKey, LABEL_MAC_R, m1, m2, head)]);
          expect(good.length).toBe(AUTH_R_BYTES);
          const m3 = c.kind === 'random' ? Buffer.from(c.bytes) : mutate(good, c.m);
          expectRefused(() => i.receive(m3).ok);
        },
      ),
      { numRuns: N.initiator / 2 },
    );
  });

  it('counts the cases and finds none accepted', () => {
    const min = SCALE.full ? 100_000 : 20_000;
    process.stdout.write(
      `protocol fuzz (${SCALE.name}): ${counts.cases} cases, ${counts.accepted} accepted, ${counts.thrown} thrown\n`,
    );
    expect(counts.cases).toBeGreaterThanOrEqual(min);
    expect([counts.accepted, counts.thrown]).toEqual([0, 0]);
  });
});
