import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  generateKeyFile,
  keyFingerprint,
  KeyFileError,
  loadKeyFile,
  loadKeyRing,
  readAtMost,
  readKeyBytes,
} from './keys';

const dir = mkdtempSync(join(tmpdir(), 'tunnel-keys-'));

describe('key files', () => {
  it('generates 32 random bytes with mode 0600 and refuses to overwrite', async () => {
    const file = join(dir, 'new.key');
    const fp = await generateKeyFile(file);
    expect(readFileSync(file)).toHaveLength(32);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(fp).toMatch(/^[0-9a-f]{16}$/);
    await expect(generateKeyFile(file)).rejects.toThrow('refusing to overwrite');
  });

  it('refuses a key readable by group or others and says the chmod', async () => {
    const file = join(dir, 'open.key');
    writeFileSync(file, Buffer.alloc(32, 1), { mode: 0o644 });
    await expect(loadKeyRing(file)).rejects.toThrow(`chmod 600 ${file}`);
  });

  it('refuses a key shorter than 32 bytes', async () => {
    const file = join(dir, 'short.key');
    writeFileSync(file, Buffer.alloc(31, 1), { mode: 0o600 });
    await expect(loadKeyRing(file)).rejects.toThrow(KeyFileError);
  });

  it('refuses a missing key file with its name', async () => {
    await expect(loadKeyRing(join(dir, 'missing.key'))).rejects.toThrow('missing.key');
  });

  it('loads a comma-separated ring in order, first key primary', async () => {
    const a = join(dir, 'a.key');
    const b = join(dir, 'b.key');
    const fa = await generateKeyFile(a);
    const fb = await generateKeyFile(b);
    const ring = await loadKeyRing(`${a}, ${b}`);
    expect(ring.fingerprints).toEqual([fa, fb]);
    expect(ring.primary.file).toBe(a);
  });

  it('refuses a symbolic link as the key file, and names the fix', async () => {
    const real = join(dir, 'real.key');
    await generateKeyFile(real);
    const link = join(dir, 'link.key');
    symlinkSync(real, link);
    await expect(loadKeyRing(link)).rejects.toThrow(`key file ${link} is a symbolic link`);
    await expect(loadKeyRing(link)).rejects.toThrow('readlink -f');
    await expect(loadKeyRing(real)).resolves.toBeDefined();
  });

  it('refuses a FIFO at once, without waiting for a writer', async () => {
    const fifo = join(dir, 'fifo.key');
    execFileSync('mkfifo', ['-m', '600', fifo]);
    await expect(loadKeyRing(fifo)).rejects.toThrow(`key file ${fifo} is a FIFO`);
  });

  it('refuses a directory and a device', async () => {
    const sub = join(dir, 'dir.key');
    mkdirSync(sub, { mode: 0o700 });
    await expect(loadKeyRing(sub)).rejects.toThrow('is a directory');
    await expect(loadKeyRing('/dev/zero')).rejects.toThrow('is a device');
  });

  it('refuses a key file over 4 KiB', async () => {
    const file = join(dir, 'huge.key');
    writeFileSync(file, Buffer.alloc(64 * 1024 * 1024, 7), { mode: 0o600 });
    await expect(loadKeyRing(file)).rejects.toThrow(/holds 67108864 bytes, more than 4096/);
  });

  it("refuses a key file owned by another user (not this daemon's, not root)", async () => {
    const file = join(dir, 'foreign.key');
    writeFileSync(file, Buffer.alloc(32, 3), { mode: 0o600 });
    // The tests run as root (CI needs root for its Docker Engine): root may give the file away.
    chownSync(file, 4242, 4242);
    await expect(loadKeyRing(file)).rejects.toThrow(
      `key file ${file} is owned by uid 4242, not by this daemon's user (uid ${process.geteuid!()}) or root`,
    );
  });

  it('loads a credential as systemd leaves it (0400 in a 0500 directory) without a warning', async () => {
    const creds = join(dir, 'credentials');
    mkdirSync(creds, { mode: 0o700 });
    const file = join(creds, 'tunnel.key');
    await generateKeyFile(file);
    chmodSync(file, 0o400);
    chmodSync(creds, 0o500);
    const ring = await loadKeyRing(file);
    expect(ring.warnings).toEqual([]);
    chmodSync(creds, 0o700);
  });

  it('warns when the directory of a key file is writable by others', async () => {
    const open = join(dir, 'open-dir');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const file = join(open, 'tunnel.key');
    await generateKeyFile(file);
    const entry = await loadKeyFile(file);
    expect(entry.warnings).toHaveLength(1);
    expect(entry.warnings[0]).toMatch(/writable by group or others \(mode 777\)/);
    // The sticky bit (as on /tmp) keeps others from replacing a file they do not own.
    chmodSync(open, 0o1777);
    expect((await loadKeyFile(file)).warnings).toEqual([]);
  });

  it('readKeyBytes private: false, follow: true (install --key): any owner and mode, a link followed; never a FIFO, a device or more than 4 KiB', async () => {
    const file = join(dir, 'admin-copy.key');
    writeFileSync(file, Buffer.alloc(32, 9), { mode: 0o644 });
    chownSync(file, 1000, 1000);
    symlinkSync(file, join(dir, 'admin-link.key'));
    const opts = { private: false, follow: true };
    expect(await readKeyBytes(join(dir, 'admin-link.key'), opts)).toEqual(Buffer.alloc(32, 9));
    // Without those options it is a daemon's key: the same file is refused.
    await expect(readKeyBytes(file)).rejects.toThrow(/owned by uid 1000|chmod 600/);
    await expect(readKeyBytes(join(dir, 'admin-link.key'))).rejects.toThrow('symbolic link');
    const fifo = join(dir, 'source.fifo');
    execFileSync('mkfifo', [fifo]);
    symlinkSync(fifo, join(dir, 'fifo-link.key'));
    await expect(readKeyBytes(join(dir, 'fifo-link.key'), opts)).rejects.toThrow(
      `key file ${join(dir, 'fifo-link.key')} is a FIFO: a key file must be a regular file`,
    );
    await expect(readKeyBytes('/dev/zero', opts)).rejects.toThrow('is a device');
    const big = join(dir, 'big-copy.key');
    writeFileSync(big, Buffer.alloc(4097, 1), { mode: 0o644 });
    await expect(readKeyBytes(big, opts)).rejects.toThrow('holds 4097 bytes, more than 4096');
  });

  it('fingerprints are stable, distinct, and do not contain the key', () => {
    const secret = Buffer.alloc(32, 0xab);
    expect(keyFingerprint(secret)).toBe(keyFingerprint(Buffer.alloc(32, 0xab)));
    expect(keyFingerprint(secret)).not.toBe(keyFingerprint(Buffer.alloc(32, 0xac)));
    expect(keyFingerprint(secret)).not.toContain('abab');
  });

  it('readAtMost stops one byte past the cap on an endless source, and wipes what it copied', async () => {
    const given: Buffer[] = [];
    let pulled = 0;
    async function* endless() {
      try {
        for (;;) {
          const chunk = Buffer.alloc(1000, 0x41);
          given.push(chunk);
          pulled++;
          yield chunk;
        }
      } finally {
        given.push(Buffer.from('closed'));
      }
    }
    const got = await readAtMost(endless(), 4096);
    expect(got.length).toBe(4097);
    expect(got.every((b) => b === 0x41)).toBe(true);
    expect(pulled).toBe(5);
    // The source was closed, and every chunk copied from it is zeros now.
    expect(given.pop()!.toString()).toBe('closed');
    expect(given.every((c) => c.every((b) => b === 0))).toBe(true);
    // A short source is read to its end.
    async function* short() {
      yield Buffer.from('abc');
      yield Buffer.from('de');
    }
    expect((await readAtMost(short(), 4096)).toString()).toBe('abcde');
  });
});
