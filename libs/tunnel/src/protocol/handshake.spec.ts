import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { AUTH_I_BYTES, AUTH_R_BYTES, HELLO_BYTES } from './constants';
import {
  InitiatorHandshake,
  ResponderHandshake,
  type HandshakeStep,
  type SessionKeys,
} from './handshake';
import { deriveAuthKey } from './kdf';

const key = (): Buffer => deriveAuthKey(randomBytes(32));

/** Runs a full handshake; returns both results. */
function handshake(iKey: Buffer, ring: Buffer[]): { i: HandshakeStep; r: HandshakeStep } {
  const responder = new ResponderHandshake(ring);
  const initiator = new InitiatorHandshake(iKey);
  const m2 = initiator.receive(responder.hello);
  if (!m2.ok || !m2.reply) throw new Error('no M2');
  const r = responder.receive(m2.reply);
  if (!r.ok || !r.reply) return { i: r, r };
  return { i: initiator.receive(r.reply), r };
}

function keysOf(step: HandshakeStep): SessionKeys {
  if (!step.ok || !step.keys) throw new Error(`no keys: ${JSON.stringify(step)}`);
  return step.keys;
}

describe('handshake', () => {
  it('gives both sides matching per-direction keys', () => {
    const k = key();
    const { i, r } = handshake(k, [k]);
    const ik = keysOf(i);
    const rk = keysOf(r);
    expect(ik.send.equals(rk.receive)).toBe(true);
    expect(ik.receive.equals(rk.send)).toBe(true);
    expect(ik.send.equals(ik.receive)).toBe(false);
  });

  it('sends messages of exactly the documented sizes', () => {
    const k = key();
    const responder = new ResponderHandshake([k]);
    const m2 = new InitiatorHandshake(k).receive(responder.hello);
    const m3 = responder.receive((m2 as { reply: Buffer }).reply);
    expect(responder.hello).toHaveLength(HELLO_BYTES);
    expect((m2 as { reply: Buffer }).reply).toHaveLength(AUTH_I_BYTES);
    expect((m3 as { reply: Buffer }).reply).toHaveLength(AUTH_R_BYTES);
  });

  it('derives fresh keys each session with the same key (ephemeral X25519, fresh nonces)', () => {
    const k = key();
    expect(keysOf(handshake(k, [k]).i).send.equals(keysOf(handshake(k, [k]).i).send)).toBe(false);
  });

  it('refuses an initiator with a wrong key, and reveals no M3', () => {
    const result = handshake(key(), [key()]).r;
    expect(result).toEqual({ ok: false, reason: 'bad key' });
  });

  it('accepts any key of the ring and reports which one matched', () => {
    const [a, b, c] = [key(), key(), key()];
    expect(keysOf(handshake(b, [a, b, c]).r).keyIndex).toBe(1);
    expect(keysOf(handshake(c, [a, b, c]).r).keyIndex).toBe(2);
  });

  it('refuses an M2 replayed to another responder connection', () => {
    const k = key();
    const first = new ResponderHandshake([k]);
    const m2 = new InitiatorHandshake(k).receive(first.hello) as { reply: Buffer };
    expect(new ResponderHandshake([k]).receive(m2.reply)).toEqual({ ok: false, reason: 'bad key' });
  });

  it('refuses an M3 replayed from another session', () => {
    const k = key();
    const old = handshake(k, [k]);
    const oldM3 = (old.r as { reply: Buffer }).reply;
    const responder = new ResponderHandshake([k]);
    const initiator = new InitiatorHandshake(k);
    initiator.receive(responder.hello);
    expect(initiator.receive(oldM3)).toEqual({ ok: false, reason: 'bad key' });
  });

  it('refuses every single flipped bit in M2 and in M3', () => {
    const k = key();
    for (const target of ['m2', 'm3'] as const) {
      for (let bit = 0; bit < (target === 'm2' ? AUTH_I_BYTES : AUTH_R_BYTES) * 8; bit += 13) {
        const responder = new ResponderHandshake([k]);
        const initiator = new InitiatorHandshake(k);
        const m2 = (initiator.receive(responder.hello) as { reply: Buffer }).reply;
        if (target === 'm2') m2[bit >> 3] ^= 1 << (bit & 7);
        const r = responder.receive(m2);
        if (target === 'm2') {
          expect(r.ok).toBe(false);
          continue;
        }
        const m3 = (r as { reply: Buffer }).reply;
        m3[bit >> 3] ^= 1 << (bit & 7);
        expect(initiator.receive(m3).ok).toBe(false);
      }
    }
  });

  it('refuses a second M2 on the same connection', () => {
    const k = key();
    const responder = new ResponderHandshake([k]);
    const m2 = (new InitiatorHandshake(k).receive(responder.hello) as { reply: Buffer }).reply;
    expect(responder.receive(m2).ok).toBe(true);
    expect(responder.receive(m2)).toEqual({ ok: false, reason: 'bad message' });
  });

  it('refuses a low-order public key (all-zero shared secret) even with a valid MAC', () => {
    // An insider with the key could try to force Z = 0; the responder must refuse.
    const k = key();
    const responder = new ResponderHandshake([k]);
    const initiator = new InitiatorHandshake(k);
    initiator.receive(responder.hello);
    const { hmac } = jest.requireActual<typeof import('./kdf')>('./kdf');
    const signed = Buffer.concat([Buffer.from([2]), randomBytes(32), Buffer.alloc(32)]);
    const m2 = Buffer.concat([
      signed,
      hmac(k, 'gpu-sidecar.v1 initiator', responder.hello, signed),
    ]);
    expect(responder.receive(m2)).toEqual({ ok: false, reason: 'bad public key' });
  });

  it('never throws and never accepts random or mutated bytes (property)', () => {
    const k = key();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ maxLength: 200 }), (a, b) => {
        const responder = new ResponderHandshake([k]);
        expect(responder.receive(Buffer.from(a)).ok).toBe(false);
        const initiator = new InitiatorHandshake(k);
        const first = initiator.receive(Buffer.from(a));
        if (first.ok) expect(first.keys).toBeUndefined();
        expect(initiator.receive(Buffer.from(b)).ok).toBe(false);
      }),
      { numRuns: 100 },
    );
  });

  it('never accepts an M2 with random bytes changed (property)', () => {
    const k = key();
    fc.assert(
      fc.property(fc.nat(AUTH_I_BYTES - 1), fc.integer({ min: 1, max: 255 }), (at, xor) => {
        const responder = new ResponderHandshake([k]);
        const m2 = (new InitiatorHandshake(k).receive(responder.hello) as { reply: Buffer }).reply;
        m2[at] ^= xor;
        expect(responder.receive(m2).ok).toBe(false);
      }),
      { numRuns: 100 },
    );
  });
});
