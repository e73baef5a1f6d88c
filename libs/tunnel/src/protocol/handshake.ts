import { randomBytes, timingSafeEqual } from 'node:crypto';
import nacl from 'tweetnacl';
import {
  AUTH_I_BYTES,
  AUTH_R_BYTES,
  HELLO_BYTES,
  KEY_BYTES,
  LABEL_I2R,
  LABEL_MAC_I,
  LABEL_MAC_R,
  LABEL_R2I,
  MAC_BYTES,
  MSG_AUTH_I,
  MSG_AUTH_R,
  MSG_HELLO,
  NONCE_BYTES,
  PUBLIC_KEY_BYTES,
} from './constants';
import { hkdf, hmac, sha256 } from './kdf';

/** Keys of an established session, one per direction (docs/PROTOCOL.md, "Handshake"). */
export interface SessionKeys {
  send: Buffer;
  receive: Buffer;
  /** Index in the ring of the key the peer proved (always 0 on the initiator). */
  keyIndex: number;
}

export type HandshakeFailure = 'bad message' | 'bad key' | 'bad public key';

/** One step of a handshake: a reply to send, the session keys once done, or why it failed. */
export type HandshakeStep =
  { ok: true; reply?: Buffer; keys?: SessionKeys } | { ok: false; reason: HandshakeFailure };

const ZERO = Buffer.alloc(KEY_BYTES);
const fail = (reason: HandshakeFailure): HandshakeStep => ({ ok: false, reason });

/**
 * X25519 then HKDF over the transcript. Wipes the ephemeral secret, Z and the IKM so that
 * nothing that could recompute the session keys outlives this call (forward secrecy).
 */
function deriveKeys(
  secretKey: Uint8Array,
  peerPublic: Uint8Array,
  authKey: Buffer,
  transcript: Buffer[],
  initiator: boolean,
): SessionKeys | undefined {
  const z = Buffer.from(nacl.scalarMult(secretKey, peerPublic));
  secretKey.fill(0);
  // An all-zero Z means a low-order public key: the peer would fix the shared secret.
  if (timingSafeEqual(z, ZERO)) return undefined;
  const ikm = Buffer.concat([z, authKey]);
  const th = sha256(...transcript);
  const i2r = hkdf(ikm, th, LABEL_I2R, KEY_BYTES);
  const r2i = hkdf(ikm, th, LABEL_R2I, KEY_BYTES);
  z.fill(0);
  ikm.fill(0);
  return initiator
    ? { send: i2r, receive: r2i, keyIndex: 0 }
    : { send: r2i, receive: i2r, keyIndex: 0 };
}

/**
 * The listener's side. `hello` (M1) is sent as soon as the WebSocket is accepted; it is only a
 * fresh nonce, so it reveals nothing. `receive(M2)` succeeds only if M2's MAC verifies under one
 * of the ring's keys; only then is M3 (which proves our key) produced.
 */
export class ResponderHandshake {
  readonly hello: Buffer;
  private done = false;

  /** @param authKeys the ring's handshake keys K (see `deriveAuthKey`), in ring order. */
  constructor(private readonly authKeys: readonly Buffer[]) {
    this.hello = Buffer.concat([Buffer.from([MSG_HELLO]), randomBytes(NONCE_BYTES)]);
  }

  /** Handles M2. Any call after the first fails: a handshake has exactly one M2. */
  receive(m2: Buffer): HandshakeStep {
    if (this.done) return fail('bad message');
    this.done = true;
    // Exact length and type before reading any field.
    if (m2.length !== AUTH_I_BYTES || m2[0] !== MSG_AUTH_I) return fail('bad message');
    const signed = m2.subarray(0, AUTH_I_BYTES - MAC_BYTES);
    const macI = m2.subarray(AUTH_I_BYTES - MAC_BYTES);
    const index = this.findKey(signed, macI);
    if (index < 0) return fail('bad key');
    const peerPublic = m2.subarray(1 + NONCE_BYTES, 1 + NONCE_BYTES + PUBLIC_KEY_BYTES);
    const own = nacl.box.keyPair();
    const authKey = this.authKeys[index];
    const head = Buffer.concat([Buffer.from([MSG_AUTH_R]), own.publicKey]);
    const m3 = Buffer.concat([head, hmac(authKey, LABEL_MAC_R, this.hello, m2, head)]);
    const keys = deriveKeys(own.secretKey, peerPublic, authKey, [this.hello, m2, m3], false);
    if (!keys) return fail('bad public key');
    return { ok: true, reply: m3, keys: { ...keys, keyIndex: index } };
  }

  /**
   * Tries every key and compares in constant time without stopping early, so timing depends
   * only on the ring's size (not secret), never on which key matched or how close a guess was.
   */
  private findKey(signed: Buffer, macI: Buffer): number {
    let found = -1;
    this.authKeys.forEach((key, i) => {
      const ok = timingSafeEqual(hmac(key, LABEL_MAC_I, this.hello, signed), macI);
      found = ok && found < 0 ? i : found;
    });
    return found;
  }
}

/**
 * The dialer's side: `receive(M1)` replies M2 (our proof), `receive(M3)` checks the responder's
 * proof and yields the keys. No frame may be sent before that second call succeeds.
 */
export class InitiatorHandshake {
  private state: 'wait-hello' | 'wait-auth' | 'finished' = 'wait-hello';
  private m1?: Buffer;
  private m2?: Buffer;
  private secretKey?: Uint8Array;

  /** @param authKey K of the ring's first key. */
  constructor(private readonly authKey: Buffer) {}

  /** Feeds the next handshake message from the responder. */
  receive(msg: Buffer): HandshakeStep {
    const state = this.state;
    this.state = 'finished';
    if (state === 'wait-hello') return this.onHello(msg);
    if (state === 'wait-auth') return this.onAuth(msg);
    return fail('bad message');
  }

  private onHello(m1: Buffer): HandshakeStep {
    if (m1.length !== HELLO_BYTES || m1[0] !== MSG_HELLO) return fail('bad message');
    const own = nacl.box.keyPair();
    this.secretKey = own.secretKey;
    this.m1 = Buffer.from(m1);
    const signed = Buffer.concat([
      Buffer.from([MSG_AUTH_I]),
      randomBytes(NONCE_BYTES),
      own.publicKey,
    ]);
    this.m2 = Buffer.concat([signed, hmac(this.authKey, LABEL_MAC_I, this.m1, signed)]);
    this.state = 'wait-auth';
    return { ok: true, reply: this.m2 };
  }

  private onAuth(m3: Buffer): HandshakeStep {
    const { m1, m2, secretKey } = this;
    if (!m1 || !m2 || !secretKey) return fail('bad message');
    this.secretKey = undefined;
    if (m3.length !== AUTH_R_BYTES || m3[0] !== MSG_AUTH_R) {
      secretKey.fill(0);
      return fail('bad message');
    }
    const head = m3.subarray(0, 1 + PUBLIC_KEY_BYTES);
    const expected = hmac(this.authKey, LABEL_MAC_R, m1, m2, head);
    if (!timingSafeEqual(expected, m3.subarray(1 + PUBLIC_KEY_BYTES))) {
      secretKey.fill(0);
      return fail('bad key');
    }
    const keys = deriveKeys(secretKey, head.subarray(1), this.authKey, [m1, m2, m3], true);
    return keys ? { ok: true, keys } : fail('bad public key');
  }
}
