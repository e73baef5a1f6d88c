import { execFileSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { exitCode, runCli } from '../support/daemon';
import { testDockerHost } from '../support/docker';
import { freePort } from '../support/ports';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, startPair, type Pair } from '../support/system';

jest.setTimeout(120_000);

async function doctor(role: string, env: Record<string, string>) {
  const p = runCli(['doctor', role, '--env-file', '/dev/null'], env);
  const code = await exitCode(p, 60_000);
  return { code, out: p.stdout() };
}

describe('gpu-sidecar doctor', () => {
  let pair: Pair;
  let redis: TestRedis;
  let workerEnv: Record<string, string>;
  beforeAll(async () => {
    pair = await startPair();
    redis = await startRedis();
    workerEnv = {
      TUNNEL_KEY_FILE: pair.keyFile,
      DATA_FOLDER: path.join(pair.dir, 'doctor-data'),
      EXPERIMENTS_DIR: path.join(__dirname, '..', '..', 'examples', 'experiments'),
      GPU_DEVICES: 'none',
      REDIS_URL: redis.url,
      DOCKER_HOST: testDockerHost(),
    };
  });
  afterAll(async () => {
    await pair?.stop();
    redis?.stop();
  });

  it('passes every check of a good worker setup and exits 0', async () => {
    const { code, out } = await doctor('worker', workerEnv);
    expect(out).toContain('all checks passed');
    for (const name of ['key file', 'docker', 'redis', 'data folder', 'experiments'])
      expect(out).toMatch(new RegExp(`^ok +${name}:`, 'm'));
    expect(code).toBe(0);
  });

  it('names each broken part of a worker setup with its fix and exits 1', async () => {
    const badKey = keygen(pair.dir, 'loose.key');
    chmodSync(badKey, 0o644);
    const notADir = path.join(pair.dir, 'a-file');
    writeFileSync(notADir, '');
    const evicting = await startRedis();
    try {
      execFileSync('redis-cli', [
        '-p',
        String(evicting.port),
        'config',
        'set',
        'maxmemory-policy',
        'allkeys-lru',
      ]);
      const { code, out } = await doctor('worker', {
        ...workerEnv,
        TUNNEL_KEY_FILE: badKey,
        DATA_FOLDER: path.join(notADir, 'data'),
        REDIS_URL: evicting.url,
        DOCKER_HOST: `unix://${pair.dir}/no-docker.sock`,
        EXPERIMENTS_DIR: path.join(pair.dir, 'no-experiments'),
      });
      expect(code).toBe(1);
      expect(out).toMatch(/^FAIL key file: .*— fix: chmod 600 /m);
      expect(out).toMatch(/^FAIL docker: .*— fix: start Docker/m);
      expect(out).toMatch(
        /^FAIL redis: .*allkeys-lru.*— fix: redis-cli CONFIG SET maxmemory-policy noeviction/m,
      );
      expect(out).toMatch(/^FAIL data folder: .*— fix: mkdir -p /m);
      expect(out).toMatch(/^FAIL experiments: /m);
    } finally {
      evicting.stop();
    }
  });

  it('confirms the relay reaches the worker with the same key', async () => {
    const { code, out } = await doctor('relay', pair.relayEnv);
    expect(out).toMatch(
      /^ok +tunnel: ws:\/\/127\.0\.0\.1:\d+\/: authenticated with key [0-9a-f]{16}/m,
    );
    expect(out).toMatch(/^ok +relay: running; 1 of 1 tunnels up/m);
    expect(code).toBe(0);
  });

  it('tells a closed tunnel port (firewall hint) from a key mismatch (fingerprints)', async () => {
    const closed = await freePort();
    const other = keygen(pair.dir, 'other-doctor.key');
    const refused = await doctor('relay', {
      ...pair.relayEnv,
      TUNNEL_CONNECT: `ws://127.0.0.1:${closed}`,
    });
    expect(refused.code).toBe(1);
    expect(refused.out).toMatch(
      /^FAIL tunnel port: .*ECONNREFUSED — fix: open TCP \d+ on the peer's host firewall.*security list/m,
    );
    const mismatch = await doctor('relay', { ...pair.relayEnv, TUNNEL_KEY_FILE: other });
    expect(mismatch.code).toBe(1);
    expect(mismatch.out).toMatch(
      /^FAIL tunnel: .*handshake failed.*— fix: the peer refused our key: compare the fingerprints/m,
    );
  });
});
