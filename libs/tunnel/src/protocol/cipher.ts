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

  /** Key and nonce for the next frame, or undefined once the counter is exhausted. */
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

/** Seals outgoing frames: AES-256-GCM, nonce = this direction's frame counter. */
export class FrameSealer {
  private readonly dir: Direction;

  /** @param firstFrame counter of the first frame: 0 on the wire; tests start near a rekey. */
  constructor(key: Buffer, firstFrame = 0) {
    this.dir = new Direction(key, firstFrame);
  }

  /**
   * Seals `header || body` into one wire frame (ciphertext || tag), returned as its parts in
   * wire order: joining them is the frame. The parts are not copied into one buffer, so that a
   * transport that can write them as one message with a gathered write (the ws adapter) saves
   * a copy of every DATA frame (docs/PROTOCOL.md, "Where the time goes"). Returns undefined once
   * 2^48 frames were sent: the caller must then end the session ('counter exhausted').
   */
  sealParts(header: Buffer, body?: Buffer): Buffer[] | undefined {
    const next = this.dir.next();
    if (!next) return undefined;
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
    const parts = this.sealParts(header, body);
    return parts && Buffer.concat(parts);
  }

  /** Frames sealed so far. */
  get frames(): number {
    return this.dir.frames;
  }

  /** Overwrites the key; the sealer is unusable afterwards. */
  wipe(): void {
    this.dir.wipe();
  }
}

/** Opens incoming frames in order. After one failure it refuses everything. */
export class FrameOpener {
  private readonly dir: Direction;
  private failed = false;

  /** @param firstFrame counter of the first frame: 0 on the wire; tests start near a rekey. */
  constructor(key: Buffer, firstFrame = 0) {
    this.dir = new Direction(key, firstFrame);
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
    this.dir.wipe();
  }

  private fail(): undefined {
    this.failed = true;
    return undefined;
  }
}
