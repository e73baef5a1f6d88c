/* eslint-disable @typescript-eslint/no-explicit-any -- the API answers JSON of any shape */
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { JobsClient } from '../../libs/jobs/src/testing/client';
import { runCli, type DaemonProcess } from '../support/daemon';
import { startRedis, type TestRedis } from '../support/redis';
import { keygen, waitUntil, workerEnvIn } from '../support/system';
import { GPU0, GPU1, mig, MIG_SMI_DIR as MIG, pointLayout } from '../support/mig';
import { ATTACK_SCALE, recordAttack, timed, type LegitFigures } from './support';

jest.setTimeout(180_000);

/**
 * nvidia-smi replies that try to widen the devices a job gets. A GPU or MIG UUID from
 * nvidia-smi becomes the job's NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES and Docker
 * DeviceIDs, where `all` means every GPU and a comma adds one. The built worker samples a fake
 * nvidia-smi whose replies are the real captures (test/fixtures/nvidia-smi/mig) with one hostile
 * change each, switched under it while GPU jobs run. What got through: a job that saw anything
 * but one well-formed UUID of the real layout, or the shell text run. The legitimate user: the
 * GPU jobs all succeed once the layout is sound again, and /health/live answers meanwhile.
 */
/** The devices of the sound layout (h100-h200): what a job may see, one at a time. */
const REAL = new Set([mig(0), mig(1), mig(2), mig(3), GPU1]);

let redis: TestRedis;
let dir: string;
let worker: DaemonProcess | undefined;
beforeAll(async () => {
  redis = await startRedis();
  dir = mkdtempSync(path.join(tmpdir(), 'gsc-mig-attack-'));
});
afterAll(async () => {
  await worker?.stop();
  redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A real layout (`from`) with one file changed by `edit`: a hostile reply. */
function hostile(
  name: string,
  file: string,
  edit: (text: string) => string,
  from = 'h100-h200',
): string {
  const out = path.join(dir, name);
  cpSync(path.join(MIG, from), out, { recursive: true });
  writeFileSync(path.join(out, file), edit(readFileSync(path.join(out, file), 'utf8')));
  return out;
}

it('nvidia-smi replies naming `all`, two devices in one UUID, shell text or 17 MiB: no job gets more than one real device', async () => {
  const canary = path.join(dir, 'shell-ran');
  const variants: Record<string, string> = {
    // The host's one GPU, without MIG, says its UUID is `all` (the query's CSV).
    'gpu-uuid-all': hostile(
      'gpu-uuid-all',
      'gpus.csv',
      (t) => t.replace(GPU0, 'all'),
      'h200-plain',
    ),
    'mig-uuid-comma': hostile('mig-uuid-comma', 'list.txt', (t) =>
      t.replace(`(UUID: ${mig(1)})`, `(UUID: ${mig(1)},${GPU0})`),
    ),
    'mig-uuid-all': hostile('mig-uuid-all', 'list.txt', (t) =>
      t.replace(`(UUID: ${mig(2)})`, '(UUID: all)'),
    ),
    'mig-shell': hostile('mig-shell', 'list.txt', (t) =>
      t.replace(
        `MIG 1g.10gb     Device  3: (UUID: ${mig(3)})`,
        `MIG 1g.10gb;touch${canary} Device  3: (UUID: MIG-$(touch ${canary}))`,
      ),
    ),
    'mig-q-17mib': hostile('mig-q-17mib', 'query-q.txt', (t) => t + 'x'.repeat(17 * 1024 * 1024)),
  };
  const link = path.join(dir, 'layout');
  const point = (target: string) => pointLayout(link, target);
  // Started on a hostile reply: what the worker takes at start is attacked too.
  point(variants['gpu-uuid-all']);
  const root = mkdtempSync(path.join(dir, 'worker-'));
  const folders = { data: path.join(root, 'data'), experiments: path.join(root, 'experiments') };
  mkdirSync(folders.experiments);
  writeFileSync(
    path.join(folders.experiments, 'probe.yaml'),
    // attempts: a job still running when a hostile reply hides its MIG instance is stopped
    // and fails that try ("vanished while the job ran", as designed); its next try runs once
    // the layout is sound again. Under load a try can outlast the 100 ms sampling interval.
    'name: probe\nrunner: process\ngpus: 1\nattempts: 5\nparams: { type: object }\n' +
      'command: ["sh", "-c", "echo \\"$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES\\" > $JOB_OUTPUT/gpu.txt"]\n',
  );
  const { env, api } = await workerEnvIn(root, keygen(root), {
    folders,
    name: 'mig-attack',
    redisUrl: redis.url,
    extra: {
      PATH: `${MIG}:${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
      NVIDIA_SMI_FIXTURE: link,
      GPU_DEVICES: 'all',
      GPU_SAMPLE_INTERVAL: '100ms',
    },
  });
  worker = runCli(['worker'], env, root);
  await worker.waitForLog('worker ready');
  const jobs = new JobsClient(`http://127.0.0.1:${api}`);

  // The legitimate client: /health/live every 100 ms for the whole attack.
  const legit: LegitFigures = { tried: 0, ok: 0, latenciesMs: [] };
  let attacking = true;
  const pinger = (async () => {
    while (attacking) {
      const r = await timed(async () => (await fetch(`${jobs.base}/health/live`)).ok);
      legit.tried++;
      if (r.ok) legit.ok++;
      legit.latenciesMs.push(r.ms);
      await new Promise((res) => setTimeout(res, 100));
    }
  })();

  const ids: string[] = [];
  let refused = 0;
  const submit = async () => {
    const r = await jobs.call('POST', '/jobs', { experiment: 'probe', params: {} });
    if (r.status === 201) ids.push(r.body.id as string);
    else refused++;
  };
  /** The devices /health lists (MIG instances in place of their GPU), or why the probe failed. */
  const seen = async () => {
    const g = (await jobs.call('GET', '/health')).body.gpus;
    if (g.error) return `error: ${g.error.reason}`;
    return JSON.stringify(g.devices.flatMap((d: any) => (d.mig ?? [d]).map((x: any) => x.uuid)));
  };
  const sound = JSON.stringify([mig(0), mig(1), mig(2), mig(3), GPU1]);
  // Right after the start on `all`: refused (no device) or queued, never run on `all`.
  await submit();
  const rounds = ATTACK_SCALE.full ? 5 : 1;
  let times = 1;
  for (let round = 0; round < rounds; round++) {
    for (const target of Object.values(variants)) {
      point(path.join(MIG, 'h100-h200'));
      await waitUntil('the sound layout sampled', async () => (await seen()) === sound);
      await submit();
      point(target);
      await waitUntil('the hostile reply sampled', async () => (await seen()) !== sound);
      await submit();
      times++;
      // A few samples of the hostile reply while the job waits for a device.
      await new Promise((r) => setTimeout(r, 400));
    }
  }
  point(path.join(MIG, 'h100-h200'));
  const ends = [];
  for (const id of ids) ends.push(await jobs.waitFor(id, ['succeeded', 'failed'], 60_000));
  attacking = false;
  await pinger;

  let through = existsSync(canary) ? 1 : 0;
  for (const end of ends) {
    const seen = readFileSync(
      path.join(folders.data, 'jobs', 'probe', end.id, 'output', 'gpu.txt'),
      'utf8',
    ).trim();
    const [cuda, nvidia] = seen.split('|');
    if (cuda !== nvidia || !REAL.has(cuda)) through++;
  }
  recordAttack('mig-nvidia-smi-replies', {
    attack: `nvidia-smi replies with a UUID of 'all', two devices in one, shell text, a 17 MiB -q, GPU jobs queued meanwhile`,
    times,
    gotThrough: through,
    counted: 'jobs that saw anything but one real device UUID, or the shell text run',
    legit,
    extra: { jobs: ends.length, refusedAtStart: refused },
  });
  expect(through).toBe(0);
  // Every job succeeded; a failed one is listed with its error, so a failure says why.
  expect(ends.filter((e) => e.state !== 'succeeded').map((e) => `${e.state}: ${e.error}`)).toEqual(
    [],
  );
  expect(ends.length).toBeGreaterThanOrEqual(2 * Object.keys(variants).length * rounds);
  expect(legit.ok).toBe(legit.tried);
  expect(legit.tried).toBeGreaterThan(0);
});
