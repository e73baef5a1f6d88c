import { readFileSync } from 'node:fs';
import path from 'node:path';
import { GPU_QUERY_FIELDS, NVIDIA_SMI_ARGS, parseNvidiaSmi } from './nvidia-smi';

const FIXTURES = path.join(__dirname, '..', '..', '..', '..', 'test', 'fixtures', 'nvidia-smi');
const MIB = 1024 * 1024;

describe('parseNvidiaSmi', () => {
  it('asks for index and UUID first, in the order the fixtures expect', () => {
    expect(GPU_QUERY_FIELDS.slice(0, 2)).toEqual(['index', 'uuid']);
    expect(NVIDIA_SMI_ARGS.join(' ')).toBe(
      readFileSync(path.join(FIXTURES, 'query.txt'), 'utf8').trim(),
    );
  });

  it('reads the fixture lines exactly (MiB to bytes, N/A absent, zero kept)', () => {
    const gpus = parseNvidiaSmi(readFileSync(path.join(FIXTURES, 'gpus.csv'), 'utf8'));
    expect(gpus).toHaveLength(2);
    expect(gpus[0].memoryTotalBytes).toBe(81559 * MIB);
    expect(gpus[0].powerDrawW).toBe(631.95);
    expect(gpus[0].eccUncorrectedVolatile).toBe(0);
    expect(gpus[0]).not.toHaveProperty('fanSpeedPercent');
    expect(gpus[1].fanSpeedPercent).toBe(0);
    expect(gpus[1]).not.toHaveProperty('powerDrawW');
    expect(gpus[1]).not.toHaveProperty('eccUncorrectedVolatile');
    expect(gpus[0].migEnabled).toBe(false);
    expect(gpus[1]).not.toHaveProperty('migEnabled');
  });

  it('keeps an idle GPU at 0 % (systeminformation drops it)', () => {
    const [g] = parseNvidiaSmi(
      '3, GPU-0a0a0a0a-0000-4000-8000-00000000000a, Tesla T4, 00000000:3B:00.0, 535.1, 0, 0, 0, 15360, 0, 15360, 0.00, 70.00, 0, 0, 0, 0, [N/A]\n',
    );
    expect(g).toMatchObject({
      index: 3,
      temperatureC: 0,
      utilizationGpuPercent: 0,
      memoryUsedBytes: 0,
      powerDrawW: 0,
      fanSpeedPercent: 0,
      eccUncorrectedVolatile: 0,
    });
  });

  it.each(['N/A', '[N/A]', '[Not Supported]', '[Unknown Error]', ''])(
    'treats %p as absent',
    (na) => {
      const [g] = parseNvidiaSmi(
        `0, GPU-0a0a0a0a-0000-4000-8000-00000000000a, X, 00000000:01:00.0, 1, ${na}, 5, 5, 100, 10, 90, ${na}, 100, 1, 1, ${na}, ${na}, ${na}`,
      );
      expect(g).not.toHaveProperty('temperatureC');
      expect(g).not.toHaveProperty('powerDrawW');
      expect(g).not.toHaveProperty('eccUncorrectedVolatile');
      expect(g).not.toHaveProperty('fanSpeedPercent');
      expect(g).not.toHaveProperty('migEnabled');
      expect(g.utilizationGpuPercent).toBe(5);
    },
  );

  it('accepts an empty reply (no GPU) and CRLF line ends', () => {
    expect(parseNvidiaSmi('')).toEqual([]);
    expect(
      parseNvidiaSmi(
        '0, GPU-0a0a0a0a-0000-4000-8000-00000000000a, X, b, 1, 40, 5, 5, 100, 10, 90, 1, 100, 1, 1, 0, 0, Disabled\r\n',
      ),
    ).toHaveLength(1);
  });

  it('refuses a line with the wrong number of fields, a non-number, or no identity', () => {
    expect(() => parseNvidiaSmi('0, GPU-0a0a0a0a-0000-4000-8000-00000000000a, X')).toThrow(
      /has 3 fields, expected 18/,
    );
    expect(() =>
      parseNvidiaSmi(
        '0, GPU-0a0a0a0a-0000-4000-8000-00000000000a, X, b, 1, hot, 5, 5, 100, 10, 90, 1, 100, 1, 1, 0, 0, [N/A]',
      ),
    ).toThrow(/'hot' for temperature.gpu/);
    expect(() =>
      parseNvidiaSmi(
        '[N/A], GPU-0a0a0a0a-0000-4000-8000-00000000000a, X, b, 1, 4, 5, 5, 100, 10, 90, 1, 100, 1, 1, 0, 0, [N/A]',
      ),
    ).toThrow(/lacks index or uuid/);
    expect(() =>
      parseNvidiaSmi(
        '0, GPU-0a0a0a0a-0000-4000-8000-00000000000a, X, b, 1, 4, 5, 5, 100, 10, 90, 1, 100, 1, 1, 0, 0, Maybe',
      ),
    ).toThrow(/'Maybe' for mig.mode.current/);
  });

  it.each([
    'all',
    'none',
    'GPU-aa',
    'MIG-0a0a0a0a-0000-4000-8000-00000000000a',
    'GPU-0a0a0a0a-0000-4000-8000-00000000000a;x',
  ])('refuses %p as a GPU UUID (it would reach NVIDIA_VISIBLE_DEVICES)', (uuid) => {
    expect(() =>
      parseNvidiaSmi(`0, ${uuid}, X, b, 1, 4, 5, 5, 100, 10, 90, 1, 100, 1, 1, 0, 0, [N/A]`),
    ).toThrow(`nvidia-smi gave '${uuid}' as a GPU UUID`);
  });
});
