import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from '../support/daemon';
import { freePort } from '../support/ports';
import { waitUntil } from '../support/system';

jest.setTimeout(120_000);

/**
 * `npm start` (scripts/dev.js) as a person runs it in a terminal: both daemons come up, their log
 * lines keep their causes, and one Ctrl-C (SIGINT to the terminal's whole process group, passed on
 * by npm once more) stops both cleanly: exit 0, no "second signal".
 */
describe('npm start (scripts/dev.js)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gsc-dev-'));
  let dev: ChildProcess | undefined;
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  // Whatever failed, nothing is left running: the script stops its daemons on SIGTERM.
  afterEach(async () => {
    if (!dev || dev.exitCode !== null || dev.signalCode !== null) return;
    const gone = once(dev, 'exit');
    dev.kill('SIGTERM');
    const timer = setTimeout(() => process.kill(-dev!.pid!, 'SIGKILL'), 30_000);
    await gone;
    clearTimeout(timer);
  });

  it('keeps log causes, and stops both daemons cleanly on one Ctrl-C', async () => {
    const ports = [await freePort(), await freePort(), await freePort(), await freePort()];
    // Its own process group, as a terminal's foreground job is.
    dev = spawn(process.execPath, [path.join(ROOT, 'scripts', 'dev.js')], {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
        HOME: process.env.HOME ?? '/tmp',
        GPU_SIDECAR_DEV_PORTS: ports.join(','),
        GPU_SIDECAR_DEV_DIR: dir,
        GPU_DEVICES: 'none',
        // No Docker Engine there: the worker says so, with the cause.
        DOCKER_HOST: `unix://${path.join(dir, 'no-docker.sock')}`,
      },
    });
    let out = '';
    const d = dev;
    d.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    d.stderr!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const exited = once(d, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    await waitUntil(
      'both daemons up',
      () => out.includes('[worker] worker ready') && out.includes('[relay] relay ready'),
      90_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${out}`);
    });
    expect(out).toContain(
      `[worker] WARN cannot subscribe to Docker events: connect ENOENT ${path.join(dir, 'no-docker.sock')}`,
    );

    // Ctrl-C: the terminal signals the whole group, and npm passes its own SIGINT on as well.
    process.kill(-d.pid!, 'SIGINT');
    process.kill(d.pid!, 'SIGINT');
    const [code, signal] = await exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(out).not.toContain('second signal');
    expect(out).toContain('[worker] worker stopped');
    expect(out).toContain('[worker] exited (0)');
    expect(out).toContain('[relay] exited (0)');
  });
});
