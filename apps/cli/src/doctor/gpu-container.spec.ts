import { demux, deviceRequest } from './gpu-container';

describe('doctor GPU container check helpers', () => {
  it('asks Docker for the GPUs GPU_DEVICES names, as jobs get them', () => {
    expect(deviceRequest({ kind: 'all' })).toEqual({
      Driver: 'nvidia',
      Count: -1,
      Capabilities: [['gpu']],
    });
    expect(deviceRequest({ kind: 'list', ids: ['0', 'GPU-abc'] })).toEqual({
      Driver: 'nvidia',
      DeviceIDs: ['0', 'GPU-abc'],
      Capabilities: [['gpu']],
    });
  });

  it('reads the text of a multiplexed log stream, and plain text as is', () => {
    const frame = (stream: number, text: string) => {
      const body = Buffer.from(text);
      const h = Buffer.alloc(8);
      h[0] = stream;
      h.writeUInt32BE(body.length, 4);
      return Buffer.concat([h, body]);
    };
    const muxed = Buffer.concat([frame(1, 'GPU 0: A (UUID: GPU-1)\n'), frame(2, 'warn\n')]);
    expect(demux(muxed)).toBe('GPU 0: A (UUID: GPU-1)\nwarn\n');
    expect(demux(Buffer.from('GPU 0: plain\n'))).toBe('GPU 0: plain\n');
  });
});
