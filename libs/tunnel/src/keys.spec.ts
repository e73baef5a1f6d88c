import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyFile, keyFingerprint, KeyFileError, loadKeyRing } from './keys';

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

  it('fingerprints are stable, distinct, and do not contain the key', () => {
    const secret = Buffer.alloc(32, 0xab);
    expect(keyFingerprint(secret)).toBe(keyFingerprint(Buffer.alloc(32, 0xab)));
    expect(keyFingerprint(secret)).not.toBe(keyFingerprint(Buffer.alloc(32, 0xac)));
    expect(keyFingerprint(secret)).not.toContain('abab');
  });
});
