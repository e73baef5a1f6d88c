import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exitCode, ROOT, runCli } from '../support/daemon';
import { freePort, waitForPort } from '../support/ports';
import { relayEnvWith, workerEnvIn } from '../support/system';

jest.setTimeout(60_000);

const dir = mkdtempSync(path.join(tmpdir(), 'gsc-cli-'));
const keyFile = path.join(dir, 'tunnel.key');

describe('gpu-sidecar command line', () => {
  it('prints help naming every command', async () => {
    const p = runCli(['--help'], {});
    expect(await exitCode(p)).toBe(0);
    for (const cmd of ['keygen', 'relay', 'worker']) expect(p.stdout()).toContain(cmd);
  });

  it('prints its version with --version (and -V)', async () => {
    const { version } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      version: string;
    };
    for (const flag of ['--version', '-V']) {
      const p = runCli([flag], {});
      expect(await exitCode(p)).toBe(0);
      expect(p.stdout()).toBe(`${version}\n`);
      expect(p.stderr()).toBe('');
    }
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
    // ... and with V8's linear-time fallback for runaway regular expressions (params patterns).
    expect(argv).toContain('--enable-experimental-regexp-engine-on-excessive-backtracks');
    // ... and with a fixed young generation that is not given back while idle.
    expect(argv).toEqual(
      expect.arrayContaining([
        '--min-semi-space-size=16',
        '--max-semi-space-size=16',
        '--no-memory-reducer',
      ]),
    );
    // ... and with glibc told to keep freed heap (same file): the daemon's environment shows it.
    const environ = readFileSync(`/proc/${w.child.pid}/environ`, 'utf8').split('\0');
    expect(environ).toEqual(
      expect.arrayContaining(['MALLOC_TOP_PAD_=67108864', 'MALLOC_TRIM_THRESHOLD_=134217728']),
    );
    expect(await w.stop('SIGTERM')).toBe(0);
    expect(w.stderr()).toContain('worker stopped');
  });
});

/**
 * Signals that come while a daemon is still starting: before its handlers existed, Node's
 * defaults ended it at once, with no clean stop (a `systemctl stop` right after a start).
 * Each signal is sent on the daemon's first log line, long before it is ready.
 */
describe('signals during start-up', () => {
  const workerEnv = async (): Promise<Record<string, string>> =>
    (await workerEnvIn(dir, keyFile)).env;
  const relayEnv = async (): Promise<Record<string, string>> =>
    (
      await relayEnvWith({
        TUNNEL_KEY_FILE: keyFile,
        TUNNEL_CONNECT: `ws://127.0.0.1:${await freePort()}`,
      })
    ).env;

  it.each([
    ['relay', relayEnv],
    ['worker', workerEnv],
  ] as const)('the %s stops cleanly on a SIGTERM during start-up', async (name, env) => {
    const p = runCli([name], await env());
    await p.waitForLog(`${name} starting`);
    p.child.kill('SIGTERM');
    expect(await exitCode(p)).toBe(0);
    expect(p.stderr()).toContain(`${name} stopping once started`);
    expect(p.stderr()).toContain(`${name} stopped`);
  });

  it('reloads the keys once started for a SIGHUP during start-up, and keeps running', async () => {
    const p = runCli(['relay'], await relayEnv());
    await p.waitForLog('relay starting');
    p.child.kill('SIGHUP');
    await p.waitForLog('tunnel key ring loaded');
    expect(p.stderr()).toContain('SIGHUP during start-up');
    expect(p.stderr()).toContain('relay ready');
    expect(p.child.exitCode).toBeNull();
    expect(await p.stop('SIGTERM')).toBe(0);
  });
});

describe('gpu-sidecar jobs with a worker that does not answer', () => {
  // Accepts every connection and never says a word: a stuck worker, or a wrong port.
  const held = new Set<Socket>();
  let silent: Server;
  let url: string;
  beforeAll(async () => {
    silent = createServer((s) => held.add(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    for (const s of held) s.destroy();
    silent.close();
  });

  it('gives up after --timeout with one line naming the URL and the timeout, and exits 1', async () => {
    const cases: [string[], string][] = [
      [['submit', 'hello'], '/jobs'],
      [['watch', 'j1'], '/jobs/j1/events'],
      [['logs', 'j1', '-f'], '/jobs/j1/logs?follow=1'],
      [['cancel', 'j1'], '/jobs/j1'],
    ];
    const runs = cases.map(([args]) =>
      runCli(['jobs', ...args, '--url', url, '--timeout', '0.5'], {}),
    );
    for (const [i, p] of runs.entries()) {
      expect(await exitCode(p, 10_000)).toBe(1);
      expect(p.stderr()).toBe(
        `gpu-sidecar: no answer from ${url}${cases[i][1]} within 0.5 s: is the worker stuck? ` +
          'Use --timeout SECONDS to wait longer (0: no limit).\n',
      );
      expect(p.stdout()).toBe('');
    }
  });

  it('status gives up after its --timeout, naming the worker that does not answer, and exits 1', async () => {
    const p = runCli(['status', '--url', url, '--relay-url', url, '--timeout', '0.5'], {});
    expect(await exitCode(p, 10_000)).toBe(1);
    expect(p.stdout()).toBe('');
    expect(p.stderr()).toContain(
      `gpu-sidecar status: nothing answers at ${url} (the worker API): no answer within 0.5 s`,
    );
  });

  it('refuses a --timeout that is not a number of seconds', async () => {
    const p = runCli(['jobs', 'cancel', 'j1', '--url', url, '--timeout', 'soon'], {});
    expect(await exitCode(p, 10_000)).toBe(1);
    expect(p.stderr()).toContain("option '--timeout <seconds>' argument 'soon' is invalid");
  });

  it('never cuts an event stream that outlasts --timeout once it is open', async () => {
    const job = (state: string, progress: number) =>
      `event: job\ndata: ${JSON.stringify({ id: 'j2', experiment: 'x', state, progress, error: null, exitCode: null })}\n\n`;
    const sse = createHttpServer((req, res) => {
      if (req.url !== '/jobs/j2/events') return res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(job('running', 10));
      setTimeout(() => res.end(job('succeeded', 100)), 1_500);
    });
    await new Promise<void>((r) => sse.listen(0, '127.0.0.1', r));
    try {
      const port = (sse.address() as AddressInfo).port;
      const p = runCli(
        ['jobs', 'watch', 'j2', '--url', `http://127.0.0.1:${port}`, '--timeout', '0.5'],
        {},
      );
      expect(await exitCode(p, 10_000)).toBe(0);
      expect(p.stdout()).toBe('succeeded j2\n');
      expect(p.stderr()).toBe('running 10%\nsucceeded 100%\n');
    } finally {
      sse.close();
    }
  });
});

describe('gpu-sidecar status against something that is not the worker API', () => {
  it('shows its HTTP status and text, and exits 1', async () => {
    // What a relay with no tunnel (or a proxy) answers: not a daemon's JSON.
    const server = createHttpServer((_req, res) => res.writeHead(503).end('no tunnel up\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const p = runCli(['status', '--url', url, '--relay-url', url], {});
      expect(await exitCode(p, 10_000)).toBe(1);
      expect(p.stderr()).toContain(
        `gpu-sidecar status: no worker API at ${url} (the worker API): it answered HTTP 503: no tunnel up`,
      );
      expect(p.stderr()).not.toMatch(/SyntaxError|Unexpected token/);
    } finally {
      server.close();
    }
  });
});

describe('gpu-sidecar jobs get from a worker that breaks off mid-file', () => {
  let server: ReturnType<typeof createHttpServer>;
  let url: string;
  beforeAll(async () => {
    // Promises 100 kB, sends 5 kB, then drops the connection.
    server = createHttpServer((_req, res) => {
      res.writeHead(200, {
        'content-length': '100000',
        'content-type': 'application/octet-stream',
      });
      res.write(Buffer.alloc(5000, 1), () => res.socket?.destroy());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => server.close());

  it('leaves no partial file, and with --force keeps the old one, and exits 1', async () => {
    const here = mkdtempSync(path.join(tmpdir(), 'gsc-get-cut-'));
    const p = runCli(['jobs', 'get', 'j1', 'out/data.bin', '--url', url], {}, here);
    expect(await exitCode(p, 10_000)).toBe(1);
    expect(p.stderr()).toMatch(/^gpu-sidecar jobs: cannot download out\/data.bin to data.bin: /);
    expect(readdirSync(here)).toEqual([]);
    writeFileSync(path.join(here, 'data.bin'), 'old');
    const f = runCli(['jobs', 'get', 'j1', 'out/data.bin', '--force', '--url', url], {}, here);
    expect(await exitCode(f, 10_000)).toBe(1);
    expect(readdirSync(here)).toEqual(['data.bin']);
    expect(readFileSync(path.join(here, 'data.bin'), 'utf8')).toBe('old');
  });
});

describe('relay listeners off loopback', () => {
  it('warns, naming the forward and its address, when RELAY_FORWARDS binds a wildcard', async () => {
    const forward = await freePort();
    const { env } = await relayEnvWith({
      TUNNEL_KEY_FILE: keyFile,
      TUNNEL_CONNECT: `ws://127.0.0.1:${await freePort()}`,
      RELAY_FORWARDS: `open=0.0.0.0:${forward}`,
    });
    const r = runCli(['relay'], env);
    await r.waitForLog('relay ready');
    const warnings = r
      .stderr()
      .split('\n')
      .filter((l) => l.includes('not on loopback'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(warnings).toEqual([
      expect.objectContaining({
        level: 40,
        listener: 'RELAY_FORWARDS open',
        address: '0.0.0.0',
        port: forward,
        msg: expect.stringContaining(
          `RELAY_FORWARDS open listens on 0.0.0.0:${forward}, not on loopback: anyone`,
        ),
      }),
    ]);
    expect(await r.stop('SIGTERM')).toBe(0);
  });
});
