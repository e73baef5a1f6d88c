import { createCipheriv, createDecipheriv } from 'node:crypto';
import {
  CIPHER,
  GCM_NONCE_BYTES,
  KEY_BYTES,
  LABEL_REKEY,
  MAX_FRAMES,
  MAX_SEALED_FRAME,
  MIN_SEALED_FRAME,
  REKEY_FRAMES,
  TAG_BYTES,
} from './constants';
import { hkdf } from './kdf';
import { nativeGcm, type GcmContext, type NativeGcm } from './native-gcm';

/**
 * Which AES-256-GCM implementation a sealer or opener uses: the native frame cipher (one
 * OpenSSL context per key, only the nonce set per frame) where it is built, else node:crypto
 * (a new context per frame). Same wire either way; tests pass one explicitly.
 */
export type GcmImplementation = NativeGcm | 'node';

/**
 * One direction's key and frame counter. The counter is the GCM nonce and is never sent: both
 * ends count, so a frame replayed, dropped or moved fails the tag check (docs/PROTOCOL.md,
 * "Frames"). Every REKEY_FRAMES the key is ratcheted through HKDF and the old one wiped.
 */
class Direction {
  private key: Buffer;
  private readonly nonce = Buffer.alloc(GCM_NONCE_BYTES);

  constructor(
    key: Buffer,
    private counter: number,
  ) {
    this.key = Buffer.from(key);
  }

  /**
   * Key and nonce for the next frame, or undefined once the counter is exhausted. The key is
   * a new Buffer after each ratchet: a native context made for the old one is then replaced.
   */
  next(): { key: Buffer; nonce: Buffer } | undefined {
    if (this.counter >= MAX_FRAMES) return undefined;
    if (this.counter > 0 && this.counter % REKEY_FRAMES === 0) this.rekey();
    // nonce = 00000000 || u64be(counter); the counter stays below 2^48, exact in a double.
    this.nonce.writeUInt32BE(Math.floor(this.counter / 2 ** 32), 4);
    this.nonce.writeUInt32BE(this.counter >>> 0, 8);
    this.counter++;
    return { key: this.key, nonce: this.nonce };
  }

  get frames(): number {
    return this.counter;
  }

  wipe(): void {
    this.key.fill(0);
  }

  private rekey(): void {
    const next = hkdf(this.key, '', LABEL_REKEY, KEY_BYTES);
    this.key.fill(0);
    this.key = next;
  }
}

/**
 * The native context for the current key of a direction, made anew when the key changed
 * (a ratchet) and freed, wiping its key schedule, when replaced or wiped.
 */
class NativeKey {
  private key?: Buffer;
  private ctx?: GcmContext;

  constructor(
    private readonly gcm: NativeGcm,
    private readonly encrypt: boolean,
  ) {}

  seal(key: Buffer, nonce: Buffer, header: Buffer, body?: Buffer): Buffer {
    return this.gcm.seal(this.contextFor(key), nonce, header, body);
  }

  open(key: Buffer, nonce: Buffer, wire: Buffer): Buffer | undefined {
    return this.gcm.open(this.contextFor(key), nonce, wire);
  }

  wipe(): void {
    if (this.ctx) this.gcm.free(this.ctx);
    this.ctx = undefined;
    this.key = undefined;
  }

  private contextFor(key: Buffer): GcmContext {
    if (this.key !== key || !this.ctx) {
      this.wipe();
      this.ctx = this.gcm.create(key, this.encrypt);
      this.key = key;
    }
    return this.ctx;
  }
}

/** Seals outgoing frames: AES-256-GCM, nonce = this direction's frame counter. */
export class FrameSealer {
  private readonly dir: Direction;
  private readonly native?: NativeKey;
  /** Once wiped, nothing is sealed: the key is zeros then, and a frame under it is readable. */
  private wiped = false;

  /**
   * @param firstFrame counter of the first frame: 0 on the wire; tests start near a rekey.
   * @param impl the native frame cipher where built (default), or 'node'.
   */
  constructor(key: Buffer, firstFrame = 0, impl: GcmImplementation = nativeGcm ?? 'node') {
    this.dir = new Direction(key, firstFrame);
    if (impl !== 'node') this.native = new NativeKey(impl, true);
  }

  /**
   * Seals `header || body` into one wire frame (ciphertext || tag), returned as its parts in
   * wire order: joining them is the frame. With node:crypto the parts are not copied into one
   * buffer, so that a transport that can write them as one message with a gathered write (the
   * ws adapter) saves a copy of every DATA frame; the native cipher writes one buffer at once
   * (docs/PROTOCOL.md, "Where the time goes"). Returns undefined once 2^48 frames were sent
   * (the caller must then end the session: 'counter exhausted') or once wiped.
   */
  sealParts(header: Buffer, body?: Buffer): Buffer[] | undefined {
    const wire = this.sealWire(header, body);
    return wire && (Buffer.isBuffer(wire) ? [wire] : wire);
  }

  /**
   * sealParts, but the native cipher's one buffer is returned as it is, not in an array (the
   * session's send path: one allocation fewer per frame). Neither cipher keeps `header` or
   * `body` past the call (the native one copies them into its output, node:crypto's update()
   * returns new buffers), so a caller may reuse them at once.
   */
  sealWire(header: Buffer, body?: Buffer): Buffer | Buffer[] | undefined {
    if (this.wiped) return undefined;
    const next = this.dir.next();
    if (!next) return undefined;
    if (this.native) return this.native.seal(next.key, next.nonce, header, body);
    const c = createCipheriv(CIPHER, next.key, next.nonce);
    const parts = [c.update(header)];
    if (body && body.length > 0) parts.push(c.update(body));
    // GCM's final() outputs nothing (it is a stream mode) but must run before the tag exists.
    c.final();
    parts.push(c.getAuthTag());
    return parts;
  }

  /** sealParts, joined into one buffer. */
  seal(header: Buffer, body?: Buffer): Buffer | undefined {
    const wire = this.sealWire(header, body);
    return wire && (Buffer.isBuffer(wire) ? wire : Buffer.concat(wire));
  }

  /** Frames sealed so far. */
  get frames(): number {
    return this.dir.frames;
  }

  /** Overwrites the key; the sealer seals nothing afterwards. */
  wipe(): void {
    this.wiped = true;
    this.native?.wipe();
    this.dir.wipe();
  }
}

/** Opens incoming frames in order. After one failure it refuses everything. */
export class FrameOpener {
  private readonly dir: Direction;
  private readonly native?: NativeKey;
  private failed = false;

  /**
   * @param firstFrame counter of the first frame: 0 on the wire; tests start near a rekey.
   * @param impl the native frame cipher where built (default), or 'node'.
   */
  constructor(key: Buffer, firstFrame = 0, impl: GcmImplementation = nativeGcm ?? 'node') {
    this.dir = new Direction(key, firstFrame);
    if (impl !== 'node') this.native = new NativeKey(impl, false);
  }

  /**
   * Returns the plaintext of the next frame, or undefined if it is not exactly the frame the
   * peer sealed with the expected counter. The plaintext is returned only after `final()` has
   * verified the tag: nothing unauthenticated ever reaches a parser.
   */
  open(wire: Buffer): Buffer | undefined {
    if (this.failed) return undefined;
    const next = this.dir.next();
    // Bounds first: a frame shorter than header + tag or longer than the largest frame is refused.
    if (!next || wire.length < MIN_SEALED_FRAME || wire.length > MAX_SEALED_FRAME)
      return this.fail();
    if (this.native) {
      // The native open checks the tag before it returns anything (frame_cipher.c).
      const plain = this.native.open(next.key, next.nonce, wire);
      return plain ?? this.fail();
    }
    try {
      const d = createDecipheriv(CIPHER, next.key, next.nonce);
      d.setAuthTag(wire.subarray(wire.length - TAG_BYTES));
      const plain = d.update(wire.subarray(0, wire.length - TAG_BYTES));
      d.final();
      return plain;
    } catch {
      return this.fail();
    }
  }

  /** Overwrites the key; the opener is unusable afterwards. */
  wipe(): void {
    this.failed = true;
    this.native?.wipe();
    this.dir.wipe();
  }

  private fail(): undefined {
    this.failed = true;
    return undefined;
  }
}
