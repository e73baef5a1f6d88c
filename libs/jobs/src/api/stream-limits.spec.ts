import { STREAM_LIMITS, StreamLimitError, StreamLimits } from './stream-limits';

const JOB = (n: number) => `job-${n}`;

describe('stream limits', () => {
  it('refuses the stream past the limit per job with a 503 that names it', () => {
    const limits = new StreamLimits();
    for (let i = 0; i < STREAM_LIMITS.events.perJob; i++) limits.take('events', JOB(1));
    let refused: unknown;
    try {
      limits.take('events', JOB(1));
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(StreamLimitError);
    const e = refused as StreamLimitError;
    expect(e.getStatus()).toBe(503);
    expect(e.getResponse()).toMatchObject({
      statusCode: 503,
      limit: 'events per job',
      max: STREAM_LIMITS.events.perJob,
      message: expect.stringMatching(/event streams .* on this job: the limit is 32; retry after/),
    });
    // Another job, and the other kind, still have room.
    expect(() => limits.take('events', JOB(2))).not.toThrow();
    expect(() => limits.take('logs', JOB(1))).not.toThrow();
  });

  it('refuses past the total over all jobs, and gives a slot back once per release', () => {
    const limits = new StreamLimits();
    const releases: (() => void)[] = [];
    for (let i = 0; i < STREAM_LIMITS.logs.total; i++) releases.push(limits.take('logs', JOB(i)));
    expect(() => limits.take('logs', JOB(9999))).toThrow(StreamLimitError);
    expect(limits.open('logs')).toBe(STREAM_LIMITS.logs.total);
    releases[0]();
    releases[0]();
    expect(limits.open('logs')).toBe(STREAM_LIMITS.logs.total - 1);
    expect(limits.open('logs', JOB(0))).toBe(0);
    expect(() => limits.take('logs', JOB(9999))).not.toThrow();
    expect(() => limits.take('logs', JOB(10000))).toThrow(/log followers .* on this worker/);
  });

  it('counts downloads per client address and in total, below half of a session of streams', () => {
    const { perAddress, total } = STREAM_LIMITS.downloads;
    expect(
      STREAM_LIMITS.events.total + STREAM_LIMITS.logs.total + STREAM_LIMITS.downloads.total,
    ).toBeLessThanOrEqual(1024 - 256);
    expect(total).toBeLessThan(512);
    const limits = new StreamLimits();
    for (let i = 0; i < perAddress; i++) limits.take('downloads', 'tunnel');
    let refused: StreamLimitError | undefined;
    try {
      limits.take('downloads', 'tunnel');
    } catch (err) {
      refused = err as StreamLimitError;
    }
    expect(refused?.getStatus()).toBe(503);
    expect(refused?.getResponse()).toMatchObject({
      limit: 'downloads per address',
      max: perAddress,
      message: expect.stringMatching(/downloads .* from this address .*: the limit is 64; retry/),
    });
    // Another address still has room, up to the total.
    for (let i = perAddress; i < total; i++) limits.take('downloads', '127.0.0.1');
    expect(() => limits.take('downloads', '::1')).toThrow(/downloads .* on this worker/);
    expect(limits.open('downloads')).toBe(total);
    // Event streams and followers are counted apart.
    expect(() => limits.take('events', JOB(1))).not.toThrow();
  });
});
