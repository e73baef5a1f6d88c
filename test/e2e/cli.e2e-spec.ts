import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exitCode, runCli } from '../support/daemon';
import { freePort, waitForPort } from '../support/ports';

jest.setTimeout(60_000);

const dir = mkdtempSync(path.join(tmpdir(), 'gsc-cli-'));
const keyFile = path.join(dir, 'tunnel.key');

describe('gpu-sidecar command line', () => {
  it('prints help naming every command', async () => {
    const p = runCli(['--help'], {});
    expect(await exitCode(p)).toBe(0);
    for (const cmd of ['keygen', 'relay', 'worker']) expect(p.stdout()).toContain(cmd);
  });

  it('keygen writes 32 random bytes with mode 0600 and refuses to overwrite', async () => {
    const p = runCli(['keygen', keyFile], {});
    expect(await exitCode(p)).toBe(0);
    const st = statSync(keyFile);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.size).toBe(32);
    const key = readFileSync(keyFile);
    expect(p.stdout()).not.toContain(key.toString('hex'));

    const again = runCli(['keygen', keyFile], {});
    expect(await exitCode(again)).not.toBe(0);
    expect(again.stderr()).toMatch(/exists/);
    expect(readFileSync(keyFile).equals(key)).toBe(true);
  });

  it('stops the worker at start when API_LISTEN is not host:port, naming the variable', async () => {
    const p = runCli(['worker'], { TUNNEL_KEY_FILE: keyFile, API_LISTEN: 'nonsense' });
    expect(await exitCode(p)).toBe(2);
    expect(p.stderr()).toContain(
      "API_LISTEN: expected host:port (e.g. 127.0.0.1:8000), got 'nonsense'",
    );
  });

  it('reads variables from --env-file, under the process environment', async () => {
    const envFile = path.join(dir, 'bad.env');
    writeFileSync(envFile, `TUNNEL_KEY_FILE=${keyFile}\nGPU_MAX_TEMP=boiling\nRELAY_LISTEN=x\n`);
    const w = runCli(['worker', '--env-file', envFile], {});
    expect(await exitCode(w)).toBe(2);
    expect(w.stderr()).toContain('GPU_MAX_TEMP: expected a whole number');
    // The shell's value wins over the file's.
    const w2 = runCli(['worker', `--env-file=${envFile}`], {
      GPU_MAX_TEMP: '80',
      API_LISTEN: 'bad',
    });
    expect(await exitCode(w2)).toBe(2);
    expect(w2.stderr()).not.toContain('GPU_MAX_TEMP');
    expect(w2.stderr()).toContain('API_LISTEN');
    const r = runCli(['relay', '--env-file', envFile], { TUNNEL_CONNECT: 'ws://127.0.0.1:1' });
    expect(await exitCode(r)).toBe(2);
    expect(r.stderr()).toContain('RELAY_LISTEN: expected host:port');
    expect(r.stderr()).not.toContain('GPU_MAX_TEMP'); // a worker variable: the relay ignores it
  });

  it('refuses an --env-file that does not exist', async () => {
    const p = runCli(['worker', '--env-file', path.join(dir, 'missing.env')], {});
    expect(await exitCode(p)).toBe(2);
    expect(p.stderr()).toContain('missing.env: no such file');
  });

  it('runs the worker until SIGTERM, then exits 0', async () => {
    const api = await freePort();
    const w = runCli(['worker'], {
      TUNNEL_KEY_FILE: keyFile,
      API_LISTEN: `127.0.0.1:${api}`,
      TUNNEL_LISTEN: `127.0.0.1:${await freePort()}`,
      DATA_FOLDER: path.join(dir, 'data'),
      EXPERIMENTS_DIR: path.join(__dirname, '..', '..', 'examples', 'experiments'),
      GPU_DEVICES: 'none',
    });
    await w.waitForLog('worker ready');
    await waitForPort(api);
    const res = await fetch(`http://127.0.0.1:${api}/test`);
    expect(await res.json()).toEqual({ response: 'ok' });
    expect(w.stderr()).not.toContain(readFileSync(keyFile).toString('hex'));
    // The wrapper execs Node without incremental marking (bin/gpu-sidecar, PROTOCOL.md
    // "Garbage collection"): the daemon's own command line shows it.
    const argv = readFileSync(`/proc/${w.child.pid}/cmdline`, 'utf8').split('\0');
    expect(argv).toContain('--no-incremental-marking');
    expect(await w.stop('SIGTERM')).toBe(0);
    expect(w.stderr()).toContain('worker stopped');
  });
});
