import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { deriveAuthKey, fingerprintOf, KEY_BYTES, MIN_KEY_FILE_BYTES } from './protocol';

/** A key file that cannot be used, with a message that says how to fix it. */
export class KeyFileError extends Error {
  override readonly name = 'KeyFileError';
}

/** One key of a ring: where it came from, its log-safe fingerprint and its handshake key K. */
export interface KeyEntry {
  readonly file: string;
  readonly fingerprint: string;
  /** K = HKDF(file bytes); the file's bytes themselves are not kept. */
  readonly authKey: Buffer;
}

/**
 * The keys a tunnel end accepts (TUNNEL_KEY_FILE, comma-separated): the first is used to dial,
 * any one authenticates a dialer. Never log it; log `fingerprints` instead.
 */
export class KeyRing {
  constructor(readonly entries: readonly KeyEntry[]) {
    if (entries.length === 0) throw new KeyFileError('a key ring needs at least one key');
  }

  /** The key used to connect. */
  get primary(): KeyEntry {
    return this.entries[0];
  }

  /** Handshake keys in ring order (what the responder tries). */
  get authKeys(): Buffer[] {
    return this.entries.map((e) => e.authKey);
  }

  /** Fingerprints in ring order, for logs and `doctor`. */
  get fingerprints(): string[] {
    return this.entries.map((e) => e.fingerprint);
  }

  /** Builds a ring from raw secrets (tests, or keys that do not live in files). */
  static fromSecrets(secrets: Uint8Array[], file = '(memory)'): KeyRing {
    return new KeyRing(secrets.map((s) => entryOf(file, s)));
  }
}

/** The fingerprint of a key file's bytes: 16 hex digits, one-way, safe to print. */
export function keyFingerprint(secret: Uint8Array): string {
  return fingerprintOf(secret);
}

function entryOf(file: string, secret: Uint8Array): KeyEntry {
  if (secret.length < MIN_KEY_FILE_BYTES) {
    throw new KeyFileError(
      `key file ${file} holds ${secret.length} bytes, at least ${MIN_KEY_FILE_BYTES} are needed: create one with \`gpu-sidecar keygen ${file}\``,
    );
  }
  return { file, fingerprint: fingerprintOf(secret), authKey: deriveAuthKey(secret) };
}

/**
 * Loads one key file: a regular file, not readable by group or others, at least 32 bytes.
 * The bytes read are wiped once K is derived.
 */
export async function loadKeyFile(file: string): Promise<KeyEntry> {
  let st;
  try {
    st = await fs.stat(file);
  } catch (err) {
    throw new KeyFileError(
      `key file ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
    );
  }
  if (!st.isFile()) throw new KeyFileError(`key file ${file} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8);
    throw new KeyFileError(
      `key file ${file} is readable by group or others (mode ${mode}): run \`chmod 600 ${file}\``,
    );
  }
  const secret = await fs.readFile(file);
  try {
    return entryOf(file, secret);
  } finally {
    secret.fill(0);
  }
}

/**
 * Loads TUNNEL_KEY_FILE: one path or a comma-separated list (rotation). Fails on the first
 * unusable file with a message naming it and the fix.
 */
export async function loadKeyRing(files: string | readonly string[]): Promise<KeyRing> {
  const list = (typeof files === 'string' ? files.split(',') : files)
    .map((f) => f.trim())
    .filter(Boolean);
  if (list.length === 0) throw new KeyFileError('TUNNEL_KEY_FILE names no key file');
  const entries: KeyEntry[] = [];
  for (const file of list) entries.push(await loadKeyFile(file));
  return new KeyRing(entries);
}

/**
 * Writes a new key file: 32 random bytes, mode 0600, created exclusively ('wx'), so an
 * existing key is never overwritten. Returns the new key's fingerprint.
 */
export async function generateKeyFile(file: string): Promise<string> {
  const secret = randomBytes(KEY_BYTES);
  try {
    await fs.writeFile(file, secret, { flag: 'wx', mode: 0o600 });
    return fingerprintOf(secret);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new KeyFileError(`${file} already exists: refusing to overwrite a key`);
    }
    throw err;
  } finally {
    secret.fill(0);
  }
}
