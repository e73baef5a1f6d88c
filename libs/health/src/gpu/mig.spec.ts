import { readFileSync } from 'node:fs';
import path from 'node:path';
import { attachMig, parseNvidiaSmi } from './nvidia-smi';
import { DEVICE_UUID, joinMig, parseMigDetails, parseMigList } from './mig';

/** Real captures of MIG hosts (test/fixtures/nvidia-smi/README.md says where each is from). */
const MIG = path.join(__dirname, '..', '..', '..', '..', 'test', 'fixtures', 'nvidia-smi', 'mig');
const read = (host: string, file: string) => readFileSync(path.join(MIG, host, file), 'utf8');
const MIB = 1024 * 1024;
const GPU0 = 'GPU-00000000-0000-0000-0000-000000000000';
const mig = (n: number) => `MIG-0000000${n}-0000-0000-0000-00000000000${n}`;

/** The GPUs of one capture as the probe reads them: the query, then -L and -q. */
function host(name: string) {
  const gpus = parseNvidiaSmi(read(name, 'gpus.csv'));
  attachMig(gpus, read(name, 'list.txt'), read(name, 'query-q.txt'));
  return gpus;
}

describe('MIG discovery from real nvidia-smi output', () => {
  it('H100 (590.48.01): four instances with profile, GI/CI ids and memory, the GPU N/A utilization', () => {
    const [gpu] = host('h100');
    expect(gpu).toMatchObject({ index: 0, uuid: GPU0, migEnabled: true, temperatureC: 42 });
    expect(gpu).not.toHaveProperty('utilizationGpuPercent');
    expect(gpu.mig).toEqual([
      {
        uuid: mig(0),
        device: 0,
        profile: '3g.40gb',
        gpuInstanceId: 2,
        computeInstanceId: 0,
        multiprocessors: 60,
        memoryTotalBytes: 40448 * MIB,
        memoryUsedBytes: 26 * MIB,
        memoryFreeBytes: 40423 * MIB,
        eccUncorrectedVolatile: 0,
      },
      expect.objectContaining({ uuid: mig(1), profile: '2g.20gb', gpuInstanceId: 3 }),
      expect.objectContaining({ uuid: mig(2), profile: '1g.10gb', gpuInstanceId: 9 }),
      expect.objectContaining({ uuid: mig(3), profile: '1g.10gb', gpuInstanceId: 10 }),
    ]);
    expect(gpu.mig![3].memoryTotalBytes).toBe(9984 * MIB);
  });

  it('H200 (590.48.01): two compute instances of one GPU instance share its id and memory', () => {
    const [gpu] = host('h200');
    expect(gpu.mig?.map((i) => [i.profile, i.gpuInstanceId, i.computeInstanceId])).toEqual([
      ['1c.3g.71gb', 2, 0],
      ['2c.3g.71gb', 2, 1],
      ['2g.35gb', 3, 0],
      ['1g.18gb', 9, 0],
      ['1g.18gb', 10, 0],
    ]);
    expect(gpu.mig![0].memoryTotalBytes).toBe(71424 * MIB);
    expect(gpu.mig![1].memoryTotalBytes).toBe(71424 * MIB);
  });

  it('H200 (580.173.02): reads the older driver\'s "FB Memory Usage" and an unmasked MIG UUID', () => {
    const [gpu] = host('h200-580');
    expect(gpu.driverVersion).toBe('580.173.02');
    expect(gpu.mig).toEqual([
      expect.objectContaining({
        uuid: 'MIG-f165f0ad-bde2-5b72-acdf-73bbf48eeb2c',
        profile: '3g.71gb',
        gpuInstanceId: 2,
        memoryTotalBytes: 71424 * MIB,
        memoryUsedBytes: 44 * MIB,
      }),
    ]);
  });

  it('a GPU without MIG beside one with it stays one device, with no instances', () => {
    const gpus = host('h100-h200');
    expect(gpus.map((g) => [g.index, g.migEnabled, g.mig?.length])).toEqual([
      [0, true, 4],
      [1, false, undefined],
    ]);
    expect(gpus[1]).not.toHaveProperty('mig');
  });

  it('a GPU with MIG on and no instance listed has none; GeForce (N/A) has no MIG mode', () => {
    const [g] = parseNvidiaSmi(read('h100', 'gpus.csv'));
    attachMig([g], 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: ' + GPU0 + ')\n', '');
    expect(g.mig).toEqual([]);
    const rtx = parseNvidiaSmi(
      '1, GPU-8f6e2b1d-3c4a-4f5e-9a7b-1c2d3e4f5a6b, RTX, b, 1, 46, 7, 2, 16376, 1474, 14470, 1, 320, 1, 1, [N/A], 0, [N/A]',
    )[0];
    expect(rtx).not.toHaveProperty('migEnabled');
  });

  it('joins -L and -q by the device index; an instance -q does not describe keeps its name only', () => {
    const [listed] = parseMigList(read('h100', 'list.txt'));
    expect(joinMig(listed, new Map())).toEqual([
      { uuid: mig(0), device: 0, profile: '3g.40gb' },
      { uuid: mig(1), device: 1, profile: '2g.20gb' },
      { uuid: mig(2), device: 2, profile: '1g.10gb' },
      { uuid: mig(3), device: 3, profile: '1g.10gb' },
    ]);
    expect([...parseMigDetails(read('h100', 'query-q.txt')).keys()]).toEqual([GPU0.toLowerCase()]);
  });
});

describe('MIG parsing refuses what it cannot identify', () => {
  const gpuLine = `GPU 0: NVIDIA H100 80GB HBM3 (UUID: ${GPU0})`;

  it.each([
    [
      'a MIG line before any GPU',
      `  MIG 1g.10gb     Device  0: (UUID: ${mig(0)})`,
      /before any GPU/,
    ],
    [
      'a UUID that would widen the device list (comma)',
      `${gpuLine}\n  MIG 1g.10gb     Device  0: (UUID: ${mig(0)},${mig(1)})`,
      /bad MIG UUID/,
    ],
    ['`all` as a UUID', `${gpuLine}\n  MIG 1g.10gb     Device  0: (UUID: all)`, /bad MIG UUID/],
    [
      'a GPU UUID where a MIG one belongs',
      `${gpuLine}\n  MIG 1g.10gb     Device  0: (UUID: ${GPU0})`,
      /bad MIG UUID/,
    ],
    [
      'a profile with a space or shell text',
      `${gpuLine}\n  MIG 1g.10gb;rm     Device  0: (UUID: ${mig(0)})`,
      /bad MIG profile/,
    ],
    ['a bad GPU UUID', 'GPU 0: X (UUID: GPU-../../etc)', /bad GPU UUID/],
  ])('%s', (_what, text, error) => {
    expect(() => parseMigList(text)).toThrow(error);
  });

  it("accepts exactly the driver's UUID shape", () => {
    expect(DEVICE_UUID.test(mig(0))).toBe(true);
    expect(DEVICE_UUID.test('MIG-f165f0ad-bde2-5b72-acdf-73bbf48eeb2c')).toBe(true);
    for (const bad of ['MIG-', 'MIG-f165f0ad', `${mig(0)}\n`, ` ${mig(0)}`, 'MIG-GPU-1/1/0', 'all'])
      expect(DEVICE_UUID.test(bad)).toBe(false);
  });

  it('skips -q sections it does not know and survives garbage', () => {
    expect(parseMigDetails('garbage\n  : :\n\tGPU\n')).toEqual(new Map());
    expect(parseMigList('No devices were found\n')).toEqual([]);
  });
});
