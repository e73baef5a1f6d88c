import { diskStatus } from './host/disk';
import { summarizeHealth } from './summary';

describe('summarizeHealth', () => {
  const redisOk = { up: true, healthy: true, problems: [] };

  it('is ok with nothing wrong, and with nothing probed yet', () => {
    expect(summarizeHealth({ redis: redisOk })).toEqual({
      status: 'ok',
      ready: true,
      problems: [],
    });
    expect(summarizeHealth({})).toEqual({ status: 'ok', ready: true, problems: [] });
  });

  it('is down (not ready) with Redis unhealthy or the disk under MIN_FREE_DISK', () => {
    const disk = diskStatus('/data', { bsize: 4096, blocks: 1000, bavail: 40 }, { percent: 5 });
    expect(
      summarizeHealth({
        redis: { up: false, healthy: false, problems: ['Redis is down: x'] },
        disk,
      }),
    ).toEqual({
      status: 'down',
      ready: false,
      problems: [
        'redis: Redis is down: x',
        'disk: /data has 163840 bytes (4.0 %) free, under MIN_FREE_DISK 5%',
      ],
    });
  });

  it('is down with DATA_FOLDER unreadable, that problem first', () => {
    const s = summarizeHealth({
      redis: redisOk,
      diskError: 'ENOENT: no such file or directory',
      queue: { ok: false, error: 'timeout' },
    });
    expect(s).toEqual({
      status: 'down',
      ready: false,
      problems: ['disk: ENOENT: no such file or directory', 'queue: not answering: timeout'],
    });
  });

  it('is degraded by a hot GPU, a failing nvidia-smi, a lost GPU or a stopped service container', () => {
    const hot = {
      index: 0,
      uuid: 'GPU-a',
      name: 'X',
      pciBusId: 'b',
      healthy: false,
      problems: [],
      reasons: ['temperature 92 °C ≥ GPU_MAX_TEMP 90 °C'],
    };
    const s = summarizeHealth({
      redis: redisOk,
      gpu: { gpus: [hot], missing: ['3'], stale: false },
      containers: {
        ok: true,
        watching: true,
        containers: [
          {
            name: 'redis',
            kind: 'service',
            status: 'exited',
            running: false,
            restartCount: 0,
            oomKilled: true,
            exitCode: 137,
          },
          {
            name: 'job-1',
            kind: 'job',
            status: 'exited',
            running: false,
            restartCount: 0,
            oomKilled: false,
            exitCode: 1,
          },
        ],
      },
    });
    expect(s).toEqual({
      status: 'degraded',
      ready: true,
      problems: [
        'gpu 0 (GPU-a): temperature 92 °C ≥ GPU_MAX_TEMP 90 °C',
        'gpu 3: in GPU_DEVICES but not seen by nvidia-smi',
        'container redis: exited (exit 137, OOM killed)',
      ],
    });
    const failing = summarizeHealth({
      gpu: {
        gpus: [],
        missing: [],
        stale: true,
        error: { reason: 'exit', message: 'exited 9', at: new Date() },
      },
    });
    expect(failing.problems).toEqual(['gpu: nvidia-smi exit: exited 9']);
  });

  it('an experiment file a reload could not use: degraded, still ready, one line each', () => {
    const line =
      'experiment file /etc/x/train.yaml: runner must be one of docker, process (the version loaded before stays in use)';
    expect(summarizeHealth({ redis: redisOk, experiments: [line] })).toEqual({
      status: 'degraded',
      ready: true,
      problems: [`experiments: ${line}`],
    });
    expect(summarizeHealth({ redis: redisOk, experiments: [] }).status).toBe('ok');
  });

  it('Docker unreachable: degraded and still ready when a docker experiment needs it, naming it; silent when nothing does', () => {
    const containers = {
      ok: false,
      watching: false,
      containers: [],
      error: { reason: 'unreachable' as const, message: 'connect ENOENT', at: new Date() },
    };
    const down = { reachable: false, reason: 'Docker Engine is unreachable' };
    // Only the docker experiments' jobs wait; every other job runs, so the worker stays ready.
    expect(
      summarizeHealth({
        containers,
        redis: redisOk,
        docker: { ...down, required: true, experiments: ['hello-docker', 'train'] },
      }),
    ).toEqual({
      status: 'degraded',
      ready: true,
      problems: [
        'docker: Docker Engine is unreachable: docker experiments (hello-docker, train) wait until it answers; the others run',
      ],
    });
    expect(summarizeHealth({ containers, docker: { ...down, required: true } }).problems).toEqual([
      'docker: Docker Engine is unreachable: docker experiments wait until it answers; the others run',
    ]);
    expect(summarizeHealth({ containers, docker: { ...down, required: false } })).toEqual({
      status: 'ok',
      ready: true,
      problems: [],
    });
    expect(
      summarizeHealth({ containers, docker: { ...down, required: false }, servicesWatched: true }),
    ).toEqual({
      status: 'degraded',
      ready: true,
      problems: ['docker: unreachable: connect ENOENT'],
    });
  });

  it('a queue that does not answer makes the worker not ready; a missing nvidia-smi gets a hint', () => {
    expect(summarizeHealth({ queue: { ok: false, error: 'Connection is closed.' } })).toEqual({
      status: 'down',
      ready: false,
      problems: ['queue: not answering: Connection is closed.'],
    });
    const missing = summarizeHealth({
      gpu: {
        gpus: [],
        missing: [],
        stale: true,
        error: { reason: 'missing', message: 'nvidia-smi not found on PATH', at: new Date() },
      },
    });
    expect(missing.problems).toEqual([
      'gpu: nvidia-smi missing: nvidia-smi not found on PATH (set GPU_DEVICES=none on a host without GPUs)',
    ]);
  });
});

describe('health summary with MIG instances', () => {
  const redisOk = { up: true, healthy: true, problems: [] };
  const instance = (n: number, healthy: boolean, reasons: string[] = []) => ({
    uuid: `MIG-0000000${n}-0000-0000-0000-00000000000${n}`,
    device: n,
    profile: '1g.10gb',
    healthy,
    problems: [],
    reasons,
  });

  it("names an instance with its own problem; a sick GPU's instances are said once, by the GPU", () => {
    const gpu = { index: 0, uuid: 'GPU-a', name: 'H100', pciBusId: 'b', problems: [], reasons: [] };
    const ecc = '2 uncorrected ECC error(s) since the driver loaded';
    const own = summarizeHealth({
      redis: redisOk,
      gpu: {
        gpus: [{ ...gpu, healthy: true, mig: [instance(0, true), instance(1, false, [ecc])] }],
        missing: [],
        stale: false,
      },
    });
    expect(own).toMatchObject({ status: 'degraded', ready: true });
    expect(own.problems).toEqual([
      `gpu 0 MIG MIG-00000001-0000-0000-0000-000000000001 (1g.10gb): ${ecc}`,
    ]);
    const hot = 'temperature 92 °C ≥ GPU_MAX_TEMP 90 °C';
    const sick = summarizeHealth({
      redis: redisOk,
      gpu: {
        gpus: [
          {
            ...gpu,
            healthy: false,
            reasons: [hot],
            mig: [instance(0, false, [hot]), instance(1, false, [hot])],
          },
        ],
        missing: [],
        stale: false,
      },
    });
    expect(sick.problems).toEqual([`gpu 0 (GPU-a): ${hot}`]);
  });
});
