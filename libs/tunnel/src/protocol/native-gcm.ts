import { createCipheriv, randomBytes } from 'node:crypto';
import { CIPHER, GCM_NONCE_BYTES, KEY_BYTES } from './constants';

/** An OpenSSL AES-256-GCM context of the native frame cipher (native/frame-cipher). */
export type GcmContext = { readonly __brand: 'GcmContext' };

/** The native frame cipher's functions (native/frame-cipher/frame_cipher.c says what each checks). */
export interface NativeGcm {
  create(key: Buffer, encrypt: boolean): GcmContext;
  /** ciphertext of header || body, then the tag, in one new buffer. */
  seal(ctx: GcmContext, nonce: Buffer, header: Buffer, body?: Buffer): Buffer;
  /** The plaintext if the tag checks under `nonce`, else undefined. */
  open(ctx: GcmContext, nonce: Buffer, wire: Buffer): Buffer | undefined;
  /** Wipes and frees the context now; later calls with it throw. */
  free(ctx: GcmContext): void;
}

const ADDON = 'native/frame-cipher/build/Release/frame_cipher.node';

/**
 * Loads the addon from the repository root: four folders up from this file in libs/, five in
 * dist/libs/ (and in the image's /app/dist). undefined if neither has it.
 */
function requireAddon(): NativeGcm | undefined {
  for (const up of [5, 4]) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(`${__dirname}/${'../'.repeat(up)}${ADDON}`) as NativeGcm;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    }
  }
  return undefined;
}

/**
 * Checks the addon against node:crypto on a random key and nonce: the same frame, both ways,
 * and a frame with one bit changed refused. A build that disagrees is never used, so the wire
 * is node:crypto's whichever seals it.
 */
function agrees(gcm: NativeGcm): boolean {
  const key = randomBytes(KEY_BYTES);
  const nonce = randomBytes(GCM_NONCE_BYTES);
  const header = randomBytes(11);
  const body = randomBytes(1000);
  const c = createCipheriv(CIPHER, key, nonce);
  const expected = Buffer.concat([c.update(header), c.update(body), c.final(), c.getAuthTag()]);
  const sealer = gcm.create(key, true);
  const opener = gcm.create(key, false);
  try {
    const wire = gcm.seal(sealer, nonce, header, body);
    if (!wire.equals(expected)) return false;
    if (!gcm.open(opener, nonce, wire)?.equals(Buffer.concat([header, body]))) return false;
    wire[wire.length - 1] ^= 1;
    return gcm.open(opener, nonce, wire) === undefined;
  } finally {
    gcm.free(sealer);
    gcm.free(opener);
    key.fill(0);
  }
}

/**
 * Loads the native frame cipher once. GPU_SIDECAR_NATIVE=off keeps it unloaded; `require`
 * makes its absence an error here (the daemons then do not start).
 */
function load(): { gcm?: NativeGcm; problem?: string } {
  const mode = process.env.GPU_SIDECAR_NATIVE ?? '';
  const result = ((): { gcm?: NativeGcm; problem?: string } => {
    if (mode === 'off') return { problem: 'turned off (GPU_SIDECAR_NATIVE=off)' };
    try {
      const gcm = requireAddon();
      if (!gcm) return { problem: `not built (${ADDON} missing: npm run build:native)` };
      return agrees(gcm) ? { gcm } : { problem: 'it disagrees with node:crypto, not used' };
    } catch (err) {
      return { problem: `it does not load: ${(err as Error).message.split('\n')[0]}` };
    }
  })();
  if (mode === 'require' && !result.gcm)
    throw new Error(`native frame cipher required (GPU_SIDECAR_NATIVE=require): ${result.problem}`);
  return result;
}

const loaded = load();

/** The native frame cipher, or undefined if it is not built, not loadable or turned off. */
export const nativeGcm: NativeGcm | undefined = loaded.gcm;

/** Which cipher implementation seals the frames, in words (for the daemons' start log). */
export const frameCipherImplementation: string = loaded.gcm
  ? 'native (OpenSSL context per key, native/frame-cipher)'
  : `node:crypto (native frame cipher ${loaded.problem})`;
