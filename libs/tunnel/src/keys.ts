import { randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fs, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../../config/src';
import {
  deriveAuthKey,
  fingerprintOf,
  KEY_BYTES,
  MAX_KEY_FILE_BYTES,
  MIN_KEY_FILE_BYTES,
} from './protocol';

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
  /** What the daemon should log about this file (e.g. a directory others can write to). */
  readonly warnings: readonly string[];
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

  /** Warnings about the ring's files, to log once loaded (see loadKeyFile). */
  get warnings(): string[] {
    return this.entries.flatMap((e) => e.warnings);
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
  return {
    file,
    fingerprint: fingerprintOf(secret),
    authKey: deriveAuthKey(secret),
    warnings: [],
  };
}

/** Open flags for a key file (see loadKeyFile); `follow` drops O_NOFOLLOW (readKeyBytes). */
const keyOpenFlags = (follow: boolean) =>
  fsConstants.O_RDONLY |
  (follow ? 0 : (fsConstants.O_NOFOLLOW ?? 0)) |
  (fsConstants.O_NONBLOCK ?? 0) |
  (fsConstants.O_NOCTTY ?? 0);

/** How readKeyBytes checks the file it reads. */
export interface ReadKeyOptions {
  /**
   * true (a daemon's own key, the default): the file must be owned by this process's user or
   * root and readable by nobody else. false: any owner and mode (a key an admin copied into
   * their home, given to `gpu-sidecar install --key FILE`).
   */
  private?: boolean;
  /**
   * false (the default): a symbolic link as the last part of the path is refused. true: it is
   * followed; what it leads to gets every other check all the same.
   */
  follow?: boolean;
}

const errCode = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? String(err);

/** What a key file is, for an error that says what was found instead of a regular file. */
function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isDirectory()) return 'a directory';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * Checks a key file's descriptor (fstat, so these are the facts of the file that will be read,
 * not of whatever the path names a moment later): a regular file, owned by this daemon's user
 * or root (any other owner could rewrite it), not readable or writable by group or others, and
 * at most MAX_KEY_FILE_BYTES long. `privately` false (readKeyBytes' `private: false`) leaves
 * out owner and mode: the file is a key being handed over (install --key), not one in use.
 */
function checkKeyStat(file: string, st: Stats, privately = true): void {
  if (!st.isFile()) {
    throw new KeyFileError(
      privately
        ? `key file ${file} is ${kindOf(st)}, not a regular file: create one with \`gpu-sidecar keygen ${file}\``
        : `key file ${file} is ${kindOf(st)}: a key file must be a regular file (what \`gpu-sidecar keygen\` writes)`,
    );
  }
  if (privately) {
    const euid = process.geteuid?.();
    if (euid !== undefined && st.uid !== euid && st.uid !== 0) {
      throw new KeyFileError(
        `key file ${file} is owned by uid ${st.uid}, not by this daemon's user (uid ${euid}) or root: ` +
          `that user could change the key; run \`chown ${euid} ${file}\``,
      );
    }
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8);
      throw new KeyFileError(
        `key file ${file} is readable by group or others (mode ${mode}): run \`chmod 600 ${file}\``,
      );
    }
  }
  if (st.size > MAX_KEY_FILE_BYTES) {
    throw new KeyFileError(
      `key file ${file} holds ${st.size} bytes, more than ${MAX_KEY_FILE_BYTES}: a key file is ` +
        `the ${KEY_BYTES} random bytes \`gpu-sidecar keygen\` writes; ` +
        (privately ? 'is TUNNEL_KEY_FILE naming the right file?' : 'is it the right file?'),
    );
  }
}

/**
 * Reads at most `cap` + 1 bytes of `source` (one more than `cap` says "too long") and stops
 * there, however much more it would give: an endless source costs `cap` + 1 bytes. Each chunk
 * is wiped once copied, and the bytes are returned in a buffer of their own (the caller wipes
 * it), so no copy of a key is left in a larger buffer.
 */
export async function readAtMost(source: AsyncIterable<Buffer>, cap: number): Promise<Buffer> {
  const buf = Buffer.alloc(cap + 1);
  let n = 0;
  try {
    for await (const chunk of source) {
      const take = Math.min(chunk.length, buf.length - n);
      chunk.copy(buf, n, 0, take);
      chunk.fill(0);
      if ((n += take) === buf.length) break; // leaving the loop destroys the source
    }
    return Buffer.from(buf.subarray(0, n));
  } finally {
    buf.fill(0);
  }
}

/** Reads at most MAX_KEY_FILE_BYTES + 1 bytes of the file from its start. */
function readCapped(fh: FileHandle): Promise<Buffer> {
  return readAtMost(
    fh.createReadStream({ start: 0, end: MAX_KEY_FILE_BYTES, autoClose: false }),
    MAX_KEY_FILE_BYTES,
  );
}

/**
 * Warnings about where a key file lives: a directory that group or others may write to (without
 * the sticky bit), or that another user owns, lets them replace the key file by another one.
 * Not an error: systemd's credentials directory, /run/secrets and a home directory all pass.
 */
async function directoryWarnings(file: string): Promise<string[]> {
  const dir = dirname(file);
  const st = await fs.stat(dir).catch(() => undefined);
  if (!st) return [];
  const euid = process.geteuid?.();
  const writable = (st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0;
  const foreign = euid !== undefined && st.uid !== euid && st.uid !== 0;
  if (!writable && !foreign) return [];
  const why = writable
    ? `is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`
    : `is owned by uid ${st.uid}`;
  return [
    `the directory of key file ${file} (${dir}) ${why}: whoever can write there can replace the key; ` +
      `keep key files in a directory only this daemon's user or root can write to`,
  ];
}

/**
 * Reads a key file's bytes, checked as `opts` says (ReadKeyOptions); the caller wipes them.
 *
 * Why it is safe: the file is opened once with O_NOFOLLOW (unless `follow`: a symbolic link as
 * the last part of the path is refused, so a link planted in place of the key cannot make the
 * daemon read another file as its key), O_NONBLOCK (opening a FIFO cannot hang) and O_NOCTTY;
 * every check (regular file, owner, mode, size) is made with fstat on that same descriptor,
 * before any byte is read, and the bytes are read from it, so nothing can be swapped between
 * the check and the read (the old stat-then-readFile had that window). Reading stops one byte
 * past the size cap, so a huge or endless file costs 4 KiB, never the process's memory.
 */
export async function readKeyBytes(file: string, opts: ReadKeyOptions = {}): Promise<Buffer> {
  let fh: FileHandle;
  try {
    fh = await fs.open(file, keyOpenFlags(opts.follow === true));
  } catch (err) {
    const code = errCode(err);
    if (code === 'ELOOP' || code === 'EMLINK') {
      throw new KeyFileError(
        `key file ${file} is a symbolic link: name the file itself (\`readlink -f ${file}\`), ` +
          `so that the link cannot be pointed at another file`,
      );
    }
    throw new KeyFileError(`key file ${file} cannot be read (${code})`);
  }
  let secret: Buffer | undefined;
  try {
    checkKeyStat(file, await fh.stat(), opts.private !== false);
    secret = await readCapped(fh);
    if (secret.length > MAX_KEY_FILE_BYTES) {
      throw new KeyFileError(
        `key file ${file} grew past ${MAX_KEY_FILE_BYTES} bytes while it was read: is it a key file?`,
      );
    }
    const read = secret;
    secret = undefined;
    return read;
  } catch (err) {
    if (err instanceof KeyFileError) throw err;
    throw new KeyFileError(`key file ${file} cannot be read (${errCode(err)})`);
  } finally {
    secret?.fill(0);
    await fh.close();
  }
}

/**
 * Loads one key file (readKeyBytes: O_NOFOLLOW, O_NONBLOCK, owner, mode and size checked on the
 * descriptor, a capped read) and derives K; the bytes read are wiped once K is derived.
 */
export async function loadKeyFile(file: string): Promise<KeyEntry> {
  const secret = await readKeyBytes(file);
  try {
    const entry = entryOf(file, secret);
    return { ...entry, warnings: await directoryWarnings(file) };
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

/** Logs each warning of a loaded ring (a key directory others can write to), once per load. */
export function logKeyWarnings(ring: KeyRing, log: Logger): void {
  for (const warning of ring.warnings) log.warn({ keys: ring.fingerprints }, warning);
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
