import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { silentLogger } from '../../config/src/logger';
import { CountingMetrics } from './testing/harness';
import { memoryChannels } from './testing/memory-channel';
import { TunnelSession } from './session';

/** Two sessions over in-memory channels with matching keys. */
function sessions() {
  const [a, b] = memoryChannels();
  const i2r = randomBytes(32);
  const r2i = randomBytes(32);
  const metrics = new CountingMetrics();
  const client = new TunnelSession(
    a,
    { send: Buffer.from(i2r), receive: Buffer.from(r2i), keyIndex: 0 },
    { initiator: true, logger: silentLogger() },
  );
  const server = new TunnelSession(
    b,
    { send: r2i, receive: i2r, keyIndex: 0 },
    { initiator: false, logger: silentLogger(), metrics },
  );
  return { a, client, server, metrics };
}

const ended = (s: TunnelSession): Promise<string> => new Promise((r) => s.once('close', r));

describe('tunnel session', () => {
  it('ends the session on a text message and counts it', async () => {
    const { a, server, metrics } = sessions();
    a.sendText('hello');
    expect(await ended(server)).toBe('text message');
    expect(metrics.count('frameRejected:text message')).toBe(1);
  });

  it('carries a stream both ways and closes cleanly when both sides finish', async () => {
    const { client, server, metrics } = sessions();
    server.on('stream', (_t: string, s: Duplex) => s.pipe(s));
    const stream = client.openStream('echo');
    stream.end('ping');
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('ping');
    await new Promise((r) => setImmediate(r));
    expect(client.openStreams).toBe(0);
    expect(server.openStreams).toBe(0);
    expect(metrics.count('streamClosed')).toBe(1);
  });

  it('refuses a stream when nobody serves streams', async () => {
    const { client } = sessions();
    const stream = client.openStream('echo');
    await expect(new Promise((_, reject) => stream.once('error', reject))).rejects.toThrow(
      'unknown target',
    );
  });

  it('refuses a bad target name locally without sending anything', async () => {
    const { client } = sessions();
    const stream = client.openStream('../etc');
    await expect(new Promise((_, reject) => stream.once('error', reject))).rejects.toThrow(
      'bad target name',
    );
  });

  it('reports an authenticated close with its reason on the other side', async () => {
    const { client, server } = sessions();
    const reason = ended(server);
    await client.close('bye');
    expect(await reason).toBe('peer closed: bye');
    expect(client.closeReason).toBe('closed: bye');
  });
});
