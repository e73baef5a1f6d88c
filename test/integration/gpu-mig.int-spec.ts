import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadWorkerConfig, silentLogger } from '../../libs/config/src';
import { GpuSampler, nvidiaSmiQuery } from '../../libs/health/src';
import { JobRequestError } from '../../libs/jobs/src';
import { startRedis, type TestRedis } from '../support/redis';
import { GPU0, GPU1, mig, MIG_SMI_DIR as MIG, NEW_3G, pointCapture } from '../support/mig';
import { waitUntil } from '../support/system';
import { startJobs } from '../../libs/jobs/src/testing/start-jobs';

jest.setTimeout(60_000);

/**
 * MIG instances as devices, end to end in one process: the job runtime against a real Redis,
 * its GPUs from the sampler over the fake nvidia-smi that replays real MIG hosts
 * (test/fixtures/nvidia-smi/mig), process jobs that write the CUDA_VISIBLE_DEVICES they got.
 */

/** A process experiment that records its GPUs, then sleeps `sleep` seconds. */
const experiment = (name: string, gpu: string, sleep = 0) =>
  `name: ${name}\nrunner: process\n` +
  `command: ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES > $JOB_OUTPUT/gpu.txt; sleep ${sleep}"]\n` +
  `${gpu}\nparams: { type: object }\n`;

let redis: TestRedis;
const dir = mkdtempSync(path.join(tmpdir(), 'gsc-mig-rt-'));
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => {
  redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A runtime whose GPUs are the capture `layout` (re-pointable), with `experiments` installed. */
async function runtime(layout: string, experiments: Record<string, string>, slots = '1') {
  const root = mkdtempSync(path.join(dir, 'rt-'));
  const worker = `mig-${path.basename(root)}`;
  const link = path.join(root, 'layout');
  pointCapture(link, layout);
  const exp = path.join(root, 'experiments');
  mkdirSync(exp);
  for (const [name, text] of Object.entries(experiments))
    writeFileSync(path.join(exp, `${name}.yaml`), text);
  const config = loadWorkerConfig({
    TUNNEL_KEY_FILE: '/unused',
    REDIS_URL: redis.url,
    DATA_FOLDER: path.join(root, 'data'),
    EXPERIMENTS_DIR: exp,
    GPU_DEVICES: 'all',
    GPU_SLOTS_PER_DEVICE: slots,
    WORKER_NAME: worker,
  });
  const sampler = new GpuSampler({
    query: nvidiaSmiQuery({
      env: { ...process.env, PATH: `${MIG}:${process.env.PATH}`, NVIDIA_SMI_FIXTURE: link },
    }),
    selection: config.gpuDevices,
    maxTemp: 90,
    intervalMs: 100,
  });
  await sampler.start();
  const rt = await startJobs(config, silentLogger(), {
    killGraceMs: 500,
    gpuInventory: sampler.inventory(),
  });
  return {
    rt,
    worker,
    /** The admin re-partitions: nvidia-smi lists another capture from its next call. */
    repartition: (next: string) => pointCapture(link, next),
    gpuSeen: (experimentName: string, id: string) =>
      readFileSync(
        path.join(root, 'data', 'jobs', experimentName, id, 'output', 'gpu.txt'),
        'utf8',
      ).trim(),
    async close() {
      await rt.close();
      await sampler.stop();
    },
  };
}

async function refusal(submit: Promise<unknown>): Promise<{ status: number; message: string }> {
  try {
    await submit;
  } catch (err) {
    if (err instanceof JobRequestError) return { status: err.status, message: err.message };
    throw err;
  }
  throw new Error('the submission was accepted');
}

describe('allocation on a host with a partitioned H100 and a whole H200', () => {
  it('gives jobs devices by count, memory and MIG profile; the record names instance and GPU', async () => {
    const w = await runtime('h100-h200', {
      'any-one': experiment('any-one', 'gpus: 1', 1),
      'by-profile': experiment('by-profile', 'mig_profile: 2g.20gb'),
      'by-memory': experiment('by-memory', 'gpu_memory: 50GB'),
      'two-small': experiment('two-small', 'gpus: 2\nmig_profile: 1g.10gb'),
    });
    try {
      expect(w.rt.gpus.devices).toEqual([mig(0), mig(1), mig(2), mig(3), GPU1]);
      const any = (await w.rt.service.submit({ experiment: 'any-one' })).record.id;
      const profile = (await w.rt.service.submit({ experiment: 'by-profile' })).record.id;
      const memory = (await w.rt.service.submit({ experiment: 'by-memory' })).record.id;
      const ends = await Promise.all(
        [any, profile, memory].map((id) => w.rt.service.waitForEnd(id, 30_000)),
      );
      expect(ends.map((e) => e.state)).toEqual(['succeeded', 'succeeded', 'succeeded']);
      // The smallest device free: a 1g.10gb instance, not the 3g.40gb nor the whole H200.
      expect([mig(2), mig(3)]).toContain(w.gpuSeen('any-one', any));
      expect(ends[0].gpu).toBe(`${w.gpuSeen('any-one', any)} (${GPU0})`);
      expect(w.gpuSeen('by-profile', profile)).toBe(mig(1));
      expect(ends[1].gpu).toBe(`${mig(1)} (${GPU0})`);
      // 50 GB: more than any instance (the 3g.40gb has 40448 MiB), so the whole H200.
      expect(w.gpuSeen('by-memory', memory)).toBe(GPU1);
      expect(ends[2].gpu).toBe(GPU1);
      const two = (await w.rt.service.submit({ experiment: 'two-small' })).record.id;
      const twoEnd = await w.rt.service.waitForEnd(two, 30_000);
      expect(w.gpuSeen('two-small', two).split(',').sort()).toEqual([mig(2), mig(3)]);
      expect(twoEnd.gpu).toBe(
        w
          .gpuSeen('two-small', two)
          .split(',')
          .map((u) => `${u} (${GPU0})`)
          .join(','),
      );
      expect(w.rt.gpus.inUse()).toEqual(
        Object.fromEntries([mig(0), mig(1), mig(2), mig(3), GPU1].map((u) => [u, 0])),
      );
    } finally {
      await w.close();
    }
  });

  it('refuses at submit with 400 what no device here can ever give, naming what exists', async () => {
    const w = await runtime('h100-h200', {
      'too-big': experiment('too-big', 'mig_profile: 7g.80gb'),
      'three-small': experiment('three-small', 'gpus: 3\nmig_profile: 1g.10gb'),
      'six-any': experiment('six-any', 'gpus: 6'),
      huge: experiment('huge', 'gpu_memory: 200GB'),
    });
    try {
      const tooBig = await refusal(w.rt.service.submit({ experiment: 'too-big' }));
      expect(tooBig.status).toBe(400);
      expect(tooBig.message).toBe(
        "experiment 'too-big' needs 1 GPU(s) with mig_profile 7g.80gb: no 1 device(s) on this " +
          `worker match; it has: ${mig(0)} (3g.40gb, 40448 MiB, GPU 0), ${mig(1)} (2g.20gb, ` +
          `20096 MiB, GPU 0), ${mig(2)} (1g.10gb, 9984 MiB, GPU 0), ${mig(3)} (1g.10gb, 9984 MiB, ` +
          `GPU 0), ${GPU1} (NVIDIA H200, 143771 MiB) (${w.worker})`,
      );
      for (const name of ['three-small', 'six-any', 'huge']) {
        const r = await refusal(w.rt.service.submit({ experiment: name }));
        expect(r.status).toBe(400);
        expect(r.message).toContain(`experiment '${name}' needs`);
        expect(r.message).toContain(`${GPU1} (NVIDIA H200, 143771 MiB)`);
      }
    } finally {
      await w.close();
    }
  });
});

describe('a re-partition while the worker runs (real H200 layouts, driver 590 then 580)', () => {
  it('fails the job on a vanished instance with the reason, and runs new ones on the new instance', async () => {
    const w = await runtime('h200', {
      small: experiment('small', 'mig_profile: 1g.18gb', 30),
      whole: experiment('whole', 'mig_profile: 3g.71gb'),
    });
    try {
      expect(w.rt.gpus.capacity).toBe(5);
      // Before: only the 1c/2c compute instances of the 3g GI exist, no 3g.71gb.
      expect((await refusal(w.rt.service.submit({ experiment: 'whole' }))).status).toBe(400);
      const id = (await w.rt.service.submit({ experiment: 'small' })).record.id;
      await waitUntil(
        'the job running',
        async () => (await w.rt.service.get(id)).state === 'running',
      );
      const on = (await w.rt.service.get(id)).gpu!;
      expect([`${mig(3)} (${GPU0})`, `${mig(4)} (${GPU0})`]).toContain(on);
      w.repartition('h200-580');
      const end = await w.rt.service.waitForEnd(id, 20_000);
      expect(end.state).toBe('failed');
      expect(end.error).toBe(
        `MIG instance ${on.split(' ')[0]} (1g.18gb on GPU 0 ${GPU0}) vanished while the job ` +
          'ran: its GPU was re-partitioned',
      );
      expect(w.rt.gpus.devices).toEqual([NEW_3G]);
      expect(w.rt.gpus.capacity).toBe(1);
      // No restart: the new instance takes a job asking for its profile.
      const next = (await w.rt.service.submit({ experiment: 'whole' })).record.id;
      const done = await w.rt.service.waitForEnd(next, 20_000);
      expect(done).toMatchObject({ state: 'succeeded', gpu: `${NEW_3G} (${GPU0})` });
      expect(w.gpuSeen('whole', next)).toBe(NEW_3G);
      expect((await refusal(w.rt.service.submit({ experiment: 'small' }))).status).toBe(400);
    } finally {
      await w.close();
    }
  });
});
