import fc from 'fast-check';
import { PassThrough } from 'node:stream';
import { demuxer } from './docker.engine';

/** One frame of Docker's multiplexed attach stream: type 1 stdout, 2 stderr. */
const frame = (type: 1 | 2, payload: Buffer) => {
  const h = Buffer.alloc(8);
  h[0] = type;
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
};

describe('attach stream demultiplexer', () => {
  it('splits frames into stdout and stderr whatever the chunk boundaries', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(fc.constantFrom(1 as const, 2 as const), fc.uint8Array({ maxLength: 40 })),
        ),
        fc.integer({ min: 1, max: 17 }),
        async (frames, step) => {
          const stream = Buffer.concat(frames.map(([t, p]) => frame(t, Buffer.from(p))));
          const out = new PassThrough();
          const err = new PassThrough();
          const got = { out: [] as Buffer[], err: [] as Buffer[] };
          out.on('data', (c: Buffer) => got.out.push(c));
          err.on('data', (c: Buffer) => got.err.push(c));
          const d = demuxer(out, err);
          for (let at = 0; at < stream.length; at += step) d.write(stream.subarray(at, at + step));
          await new Promise((r) => d.end(r));
          const want = (t: number) =>
            Buffer.concat(frames.filter(([ft]) => ft === t).map(([, p]) => Buffer.from(p)));
          expect(Buffer.concat(got.out)).toEqual(want(1));
          expect(Buffer.concat(got.err)).toEqual(want(2));
        },
      ),
    );
  });

  it('takes no more input while an output is full, and more once it drains', async () => {
    const out = new PassThrough({ highWaterMark: 16 });
    const d = demuxer(out, new PassThrough());
    let acked = 0;
    d.write(frame(1, Buffer.alloc(64, 'a')), () => acked++);
    await new Promise((r) => setImmediate(r));
    expect(acked).toBe(0);
    out.resume();
    await new Promise((r) => setImmediate(r));
    expect(acked).toBe(1);
  });
});
