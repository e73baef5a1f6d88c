import { createHash, createHmac, hkdfSync } from 'node:crypto';
import { FINGERPRINT_BYTES, KEY_BYTES, LABEL_AUTH_KEY, LABEL_FINGERPRINT } from './constants';

/** HKDF-SHA256 into a Buffer (node:crypto returns an ArrayBuffer). */
export function hkdf(
  ikm: Uint8Array,
  salt: Uint8Array | string,
  info: string,
  length: number,
): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, length));
}

/** HMAC-SHA256 over the concatenation of `parts`, without building the concatenation. */
export function hmac(key: Uint8Array, ...parts: (Uint8Array | string)[]): Buffer {
  const h = createHmac('sha256', key);
  for (const part of parts) h.update(part);
  return h.digest();
}

/** SHA-256 over the concatenation of `parts`. */
export function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const part of parts) h.update(part);
  return h.digest();
}

/**
 * The handshake key K derived from a key file's bytes S (docs/PROTOCOL.md, "Keys"). The raw
 * bytes are never used as a key, so any long file goes through the KDF first.
 */
export function deriveAuthKey(secret: Uint8Array): Buffer {
  return hkdf(secret, '', LABEL_AUTH_KEY, KEY_BYTES);
}

/** A short, one-way name for a key, safe for logs and `doctor` (16 hex digits). */
export function fingerprintOf(secret: Uint8Array): string {
  return hkdf(secret, '', LABEL_FINGERPRINT, FINGERPRINT_BYTES).toString('hex');
}
