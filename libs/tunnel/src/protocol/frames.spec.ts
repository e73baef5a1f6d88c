import fc from 'fast-check';
import { MAX_DATA, MAX_REASON_BYTES } from './constants';
import { decodeFrame, encodeFrame, type Frame } from './frames';

const wire = (f: Frame): Buffer => {
  const { header, body } = encodeFrame(f);
  return body ? Buffer.concat([header, body]) : header;
};

describe('frame encoding', () => {
  it('decodes what it encodes, for every frame type', () => {
    const frames: Frame[] = [
      { type: 'open', sid: 1, target: 'api' },
      { type: 'data', sid: 3, data: Buffer.from('x') },
      { type: 'fin', sid: 5 },
      { type: 'reset', sid: 7, reason: 'unknown target' },
      { type: 'window', sid: 0, increment: 65536 },
      { type: 'ping', body: Buffer.alloc(8, 1) },
      { type: 'pong', body: Buffer.alloc(8, 2) },
      { type: 'close', reason: 'bye' },
    ];
    for (const f of frames) expect(decodeFrame(wire(f))).toEqual(f);
  });

  it('refuses frames outside the contract', () => {
    const bad: Buffer[] = [
      Buffer.from([1, 0, 0, 0, 0, 0x61]), // OPEN on stream 0
      Buffer.concat([Buffer.from([1, 0, 0, 0, 1]), Buffer.from('API')]), // target not [a-z0-9._-]
      Buffer.concat([Buffer.from([1, 0, 0, 0, 1]), Buffer.alloc(65, 0x61)]), // target too long
      Buffer.from([2, 0, 0, 0, 1]), // empty DATA
      Buffer.concat([Buffer.from([2, 0, 0, 0, 1]), Buffer.alloc(MAX_DATA + 1)]),
      Buffer.from([3, 0, 0, 0, 1, 0]), // FIN with a body
      Buffer.concat([Buffer.from([4, 0, 0, 0, 1]), Buffer.alloc(MAX_REASON_BYTES + 1)]),
      Buffer.from([5, 0, 0, 0, 1, 0, 0, 0, 0]), // WINDOW of 0
      Buffer.from([5, 0, 0, 0, 1, 0x80, 0, 0, 0]), // WINDOW above 2^30
      Buffer.from([6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), // PING on a stream
      Buffer.from([7, 0, 0, 0, 0, 0]), // PONG too short
      Buffer.from([9, 0, 0, 0, 0]), // unknown type
      Buffer.from([2, 0, 0]), // shorter than a header
    ];
    for (const b of bad) expect(decodeFrame(b)).toBeUndefined();
  });

  it('never throws on random bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
        expect(() => decodeFrame(Buffer.from(bytes))).not.toThrow();
      }),
      { numRuns: 2000 },
    );
  });
});
