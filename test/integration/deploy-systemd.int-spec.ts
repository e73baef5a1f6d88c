// The systemd units: `systemd-analyze verify` passes, the relay's `systemd-analyze security`
// exposure is at most 4.0 (a property of the unit file, not a timing), the worker's is reported,
// and the settings the deployment relies on are there. Needs Debian's `systemd` package (for
// systemd-analyze); systemd does not have to be running.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const unitDir = path.join(__dirname, '..', '..', 'systemd');
const units = ['gpu-sidecar-relay.service', 'gpu-sidecar-worker.service'];

function analyze(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync('systemd-analyze', args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error) {
    throw new Error(
      `systemd-analyze is not installed (apt-get install systemd; systemd need not run): ${r.error.message}`,
    );
  }
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** `systemd-analyze security --offline=true UNIT`'s overall exposure (0.0 safest, 10.0 worst). */
function exposure(unit: string): number {
  const r = analyze(['security', '--offline=true', '--no-pager', path.join(unitDir, unit)]);
  const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(r.out + r.err);
  if (!m)
    throw new Error(`no exposure level in systemd-analyze security output:\n${r.out}${r.err}`);
  return Number(m[1]);
}

/** The unit's `Key=value` lines (comments dropped), every value for repeated keys. */
function settings(unit: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const raw of readFileSync(path.join(unitDir, unit), 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith('[')) continue;
    const i = line.indexOf('=');
    const key = line.slice(0, i);
    map.set(key, [...(map.get(key) ?? []), line.slice(i + 1)]);
  }
  return map;
}

describe.each(units)('%s', (unit) => {
  it('passes systemd-analyze verify with no finding about it', () => {
    const r = analyze(['verify', path.join(unitDir, unit)]);
    const findings = (r.out + r.err).split('\n').filter((l) => l.includes('gpu-sidecar'));
    expect(findings).toEqual([]);
    expect(r.code).toBe(0);
  });

  it('has the settings the deployment relies on', () => {
    const s = settings(unit);
    const one = (k: string) => s.get(k)?.[0];
    expect(one('Type')).toBe('simple');
    expect(one('ExecStart')).toMatch(/^\/usr\/bin\/env gpu-sidecar (relay|worker)$/);
    expect(one('Restart')).toBe('on-failure');
    expect(one('EnvironmentFile')).toMatch(/^\/etc\/gpu-sidecar\/(relay|worker)\.env$/);
    expect(s.get('LoadCredential')).toEqual(['tunnel.key:/etc/gpu-sidecar/tunnel.key']);
    expect(s.get('Environment')).toContain('TUNNEL_KEY_FILE=%d/tunnel.key');
    for (const [k, v] of [
      ['NoNewPrivileges', 'yes'],
      ['ProtectSystem', 'strict'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['RestrictAddressFamilies', 'AF_UNIX AF_INET AF_INET6'],
      ['CapabilityBoundingSet', ''],
    ]) {
      expect([k, one(k)]).toEqual([k, v]);
    }
    expect(s.get('SystemCallFilter')).toContain('@system-service');
    // V8's JIT needs writable+executable pages: this setting would crash Node at start.
    expect(s.has('MemoryDenyWriteExecute')).toBe(false);
  });
});

describe('gpu-sidecar-worker.service reload', () => {
  it('sends SIGHUP to the main process alone (experiments and key files read again)', () => {
    expect(settings('gpu-sidecar-worker.service').get('ExecReload')).toEqual([
      '/bin/kill -HUP $MAINPID',
    ]);
  });
});

describe('exposure (systemd-analyze security --offline=true)', () => {
  it('relay: at most 4.0', () => {
    const e = exposure('gpu-sidecar-relay.service');
    process.stdout.write(`gpu-sidecar-relay.service exposure ${e}\n`);
    expect(e).toBeLessThanOrEqual(4.0);
  });

  it('worker: reported (Docker socket access makes it root-equivalent whatever the figure)', () => {
    const e = exposure('gpu-sidecar-worker.service');
    process.stdout.write(`gpu-sidecar-worker.service exposure ${e}\n`);
    expect(e).toBeGreaterThanOrEqual(0);
    expect(e).toBeLessThanOrEqual(10);
  });
});

describe('worker unit: stopping and access', () => {
  const s = settings('gpu-sidecar-worker.service');
  it('SIGTERM to the daemon only, a generous stop timeout', () => {
    expect(s.get('KillSignal')).toEqual(['SIGTERM']);
    // mixed: the embedded redis-server must outlive the worker's hand-back of running jobs.
    expect(s.get('KillMode')).toEqual(['mixed']);
    expect(s.get('TimeoutStopSec')).toEqual(['5min']);
  });

  it('a dedicated user in the docker group, DATA_FOLDER writable, devices visible', () => {
    expect(s.get('User')).toEqual(['gpu-sidecar']);
    expect(s.get('SupplementaryGroups')).toEqual(['docker']);
    expect(s.get('ReadWritePaths')).toEqual(['/var/lib/gpu-sidecar']);
    expect(s.get('Environment')).toContain('DATA_FOLDER=/var/lib/gpu-sidecar/data');
    expect(s.has('PrivateDevices')).toBe(false); // /dev/nvidia*
  });
});

describe('relay unit', () => {
  it('runs as a dynamic user with no devices and no privileges', () => {
    const s = settings('gpu-sidecar-relay.service');
    expect(s.get('DynamicUser')).toEqual(['yes']);
    expect(s.get('PrivateDevices')).toEqual(['yes']);
    expect(s.get('AmbientCapabilities')).toEqual(['']);
  });

  it("raises the descriptor limit as the worker's does (every client connection is one)", () => {
    const relay = settings('gpu-sidecar-relay.service').get('LimitNOFILE');
    expect(relay).toEqual(['65536']);
    expect(settings('gpu-sidecar-worker.service').get('LimitNOFILE')).toEqual(relay);
  });
});
