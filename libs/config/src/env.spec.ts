import {
  ConfigError,
  describeConfig,
  loadKeyFiles,
  loadRelayConfig,
  loadWorkerConfig,
} from './env';

const key = { TUNNEL_KEY_FILE: '/etc/gpu-sidecar/key' };

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('worker configuration', () => {
  it('applies the documented defaults', () => {
    const c = loadWorkerConfig(key);
    expect(c.apiListen).toEqual({ host: '127.0.0.1', port: 8000 });
    expect(c.tunnelListen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(c.dataFolder).toBe('./data');
    expect(c.experimentsDir).toBe('./experiments');
    expect(c.gpuDevices).toEqual({ kind: 'all' });
    expect(c.workerConcurrency).toBe(1);
    expect(c.gpuSlotsPerDevice).toBe(1);
    expect(c.gpuSampleIntervalMs).toBe(5000);
    expect(c.healthSampleIntervalMs).toBe(5000);
    expect(c.gpuMaxTemp).toBe(90);
    expect(c.resultsTtlMs).toBe(30 * 86_400_000);
    expect(c.minFreeDisk).toEqual({ percent: 5 });
    expect(c.dockerHost).toBe('unix:///var/run/docker.sock');
    expect(c.redisUrl).toBeUndefined();
    expect(c.logLevel).toBe('info');
  });

  it('samples the other probes at GPU_SAMPLE_INTERVAL unless HEALTH_SAMPLE_INTERVAL says otherwise', () => {
    const gpuOnly = loadWorkerConfig({ ...key, GPU_SAMPLE_INTERVAL: '2s' });
    expect(gpuOnly.gpuSampleIntervalMs).toBe(2000);
    expect(gpuOnly.healthSampleIntervalMs).toBe(2000);
    const both = loadWorkerConfig({
      ...key,
      GPU_SAMPLE_INTERVAL: '2s',
      HEALTH_SAMPLE_INTERVAL: '30s',
    });
    expect(both.gpuSampleIntervalMs).toBe(2000);
    expect(both.healthSampleIntervalMs).toBe(30_000);
    expect(() => loadWorkerConfig({ ...key, HEALTH_SAMPLE_INTERVAL: 'often' })).toThrow(
      /HEALTH_SAMPLE_INTERVAL/,
    );
  });

  it('names the variable and the fix when API_LISTEN is not host:port', () => {
    expect(issuesOf(() => loadWorkerConfig({ ...key, API_LISTEN: 'nonsense' }))).toEqual([
      "API_LISTEN: expected host:port (e.g. 127.0.0.1:8000), got 'nonsense'",
    ]);
  });

  it('reports every bad variable at once, not only the first', () => {
    const issues = issuesOf(() =>
      loadWorkerConfig({
        API_LISTEN: 'x',
        GPU_MAX_TEMP: 'hot',
        RESULTS_TTL: '3 weeks',
        LOG_LEVEL: 'loud',
      }),
    );
    expect(issues.map((i) => i.split(':')[0]).sort()).toEqual([
      'API_LISTEN',
      'GPU_MAX_TEMP',
      'LOG_LEVEL',
      'RESULTS_TTL',
      'TUNNEL_KEY_FILE',
    ]);
  });

  it('does not listen for tunnels by default in reverse mode', () => {
    const c = loadWorkerConfig({ ...key, TUNNEL_CONNECT: 'wss://front.example.org/tunnel' });
    expect(c.tunnelListen).toBeUndefined();
    expect(c.tunnelConnect).toEqual(['wss://front.example.org/tunnel']);
  });

  it('parses GPU lists, JOB_UID, sizes and key lists', () => {
    const c = loadWorkerConfig({
      TUNNEL_KEY_FILE: '/k/new, /k/old',
      GPU_DEVICES: '0,GPU-8f6e1a2b-0000-1111-2222-333344445555',
      JOB_UID: '1000:1001',
      MIN_FREE_DISK: '10GB',
      HEALTH_CONTAINERS: 'redis, nginx',
    });
    expect(c.keyFiles).toEqual(['/k/new', '/k/old']);
    expect(c.gpuDevices).toEqual({
      kind: 'list',
      ids: ['0', 'GPU-8f6e1a2b-0000-1111-2222-333344445555'],
    });
    expect(c.jobUser).toEqual({ uid: 1000, gid: 1001 });
    expect(c.minFreeDisk).toEqual({ bytes: 10e9 });
    expect(c.healthContainers).toEqual(['redis', 'nginx']);
  });

  it('reads extra tunnel targets and refuses to redefine api', () => {
    expect(loadWorkerConfig({ ...key, TUNNEL_TARGETS: 'ssh=127.0.0.1:22' }).tunnelTargets).toEqual({
      ssh: { host: '127.0.0.1', port: 22 },
    });
    expect(
      issuesOf(() => loadWorkerConfig({ ...key, TUNNEL_TARGETS: 'api=127.0.0.1:1' }))[0],
    ).toMatch(/^TUNNEL_TARGETS: 'api' is always API_LISTEN/);
  });

  it('refuses a Redis URL of another scheme', () => {
    expect(issuesOf(() => loadWorkerConfig({ ...key, REDIS_URL: 'http://x' }))[0]).toMatch(
      /^REDIS_URL:/,
    );
  });

  it('hides Redis credentials when the configuration is logged', () => {
    const c = loadWorkerConfig({ ...key, REDIS_URL: 'redis://user:s3cret@redis:6379/0' });
    expect(JSON.stringify(describeConfig(c))).not.toContain('s3cret');
    const s = loadWorkerConfig({
      ...key,
      REDIS_URL: 'redis+sentinel://s1,s2/gsc?sentinelPassword=t0p&tls=1',
    });
    expect(describeConfig(s).redisUrl).toBe(
      'redis+sentinel://s1,s2/gsc?sentinelPassword=***&tls=1',
    );
  });

  it('hides every password of a Sentinel URL and of tunnel URLs when logged', () => {
    const c = loadWorkerConfig({
      ...key,
      REDIS_URL: 'redis+sentinel://:m4ster@s1,s2/gsc?sentinelPassword=sent1nel',
      TUNNEL_CONNECT: 'wss://relay:pr0xy@front.example.org/tunnel',
    });
    const shown = JSON.stringify(describeConfig(c));
    for (const secret of ['m4ster', 'sent1nel', 'pr0xy']) expect(shown).not.toContain(secret);
    expect(describeConfig(c)).toMatchObject({
      redisUrl: 'redis+sentinel://:***@s1,s2/gsc?sentinelPassword=***',
      tunnelConnect: ['wss://relay:***@front.example.org/tunnel'],
    });
  });

  it('never repeats a password in the error about a bad REDIS_URL', () => {
    const issues = issuesOf(() => loadWorkerConfig({ ...key, REDIS_URL: 'http://u:s3cret@x' }));
    expect(issues[0]).toMatch(/^REDIS_URL: expected redis:\/\//);
    expect(issues.join('\n')).not.toContain('s3cret');
  });

  it('reads API_HOSTS and MAX_UPLOAD, with their defaults', () => {
    expect(loadWorkerConfig(key)).toMatchObject({ apiHosts: [], maxUploadBytes: 1024 ** 3 });
    expect(
      loadWorkerConfig({ ...key, API_HOSTS: 'front.example.org,GPU1', MAX_UPLOAD: '20MB' }),
    ).toMatchObject({ apiHosts: ['front.example.org', 'gpu1'], maxUploadBytes: 20e6 });
    expect(issuesOf(() => loadWorkerConfig({ ...key, API_HOSTS: 'https://front:443' }))[0]).toMatch(
      /^API_HOSTS: expected host names or IP addresses without scheme or port/,
    );
    expect(issuesOf(() => loadWorkerConfig({ ...key, MAX_UPLOAD: 'big' }))[0]).toMatch(
      /^MAX_UPLOAD: expected a size like 1GiB/,
    );
  });
});

describe('relay configuration', () => {
  it('needs a worker to dial or a port to listen on', () => {
    expect(issuesOf(() => loadRelayConfig(key))[0]).toMatch(/^TUNNEL_CONNECT: is required/);
  });

  it('applies the documented defaults', () => {
    const c = loadRelayConfig({ ...key, TUNNEL_CONNECT: 'ws://gpu1:8080' });
    expect(c.relayListen).toEqual({ host: '127.0.0.1', port: 8001 });
    expect(c.adminListen).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(c.tunnelConnect).toEqual(['ws://gpu1:8080/']);
  });

  it('refuses a tunnel URL that is not ws:// or wss://', () => {
    expect(
      issuesOf(() => loadRelayConfig({ ...key, TUNNEL_CONNECT: 'http://gpu1:8080' }))[0],
    ).toMatch(/^TUNNEL_CONNECT: expected a ws:\/\/ or wss:\/\/ URL/);
  });

  it('takes RELAY_FORWARDS_SERVER_FIRST as names of RELAY_FORWARDS, none by default', () => {
    const env = { ...key, TUNNEL_CONNECT: 'ws://gpu1:8080' };
    expect(loadRelayConfig(env).relayForwardsServerFirst).toEqual([]);
    const forwards = { RELAY_FORWARDS: 'ssh=127.0.0.1:2222,mysql=127.0.0.1:3306' };
    expect(
      loadRelayConfig({ ...env, ...forwards, RELAY_FORWARDS_SERVER_FIRST: 'mysql' })
        .relayForwardsServerFirst,
    ).toEqual(['mysql']);
    expect(
      issuesOf(() =>
        loadRelayConfig({ ...env, ...forwards, RELAY_FORWARDS_SERVER_FIRST: 'mysql,smtp' }),
      ),
    ).toEqual(["RELAY_FORWARDS_SERVER_FIRST: 'smtp' is not a name in RELAY_FORWARDS"]);
  });

  it('wants both TLS files or neither', () => {
    expect(
      issuesOf(() =>
        loadRelayConfig({ ...key, TUNNEL_LISTEN: ':9000', TUNNEL_TLS_CERT: '/c.pem' }),
      ),
    ).toEqual(['TUNNEL_TLS_CERT and TUNNEL_TLS_KEY: set both or neither']);
  });
});

describe('TUNNEL_KEY_FILE alone (SIGHUP)', () => {
  it('reads the list while other variables are invalid', () => {
    const env = { TUNNEL_KEY_FILE: '/k/new, /k/old', REDIS_URL: 'http://x', LOG_LEVEL: 'loud' };
    expect(loadKeyFiles(env)).toEqual(['/k/new', '/k/old']);
    const invalid = new ConfigError(issuesOf(() => loadWorkerConfig(env))).variables;
    expect(invalid.sort()).toEqual(['LOG_LEVEL', 'REDIS_URL']);
  });

  it('names TUNNEL_KEY_FILE when it is missing or empty', () => {
    expect(issuesOf(() => loadKeyFiles({ TUNNEL_KEY_FILE: '' }))).toEqual([
      'TUNNEL_KEY_FILE: is required',
    ]);
    expect(issuesOf(() => loadKeyFiles({ TUNNEL_KEY_FILE: ' , ' }))[0]).toMatch(
      /^TUNNEL_KEY_FILE: is empty/,
    );
  });
});
