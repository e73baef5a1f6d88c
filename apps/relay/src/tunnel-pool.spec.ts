import type { TunnelSession, TunnelView } from '../../../libs/tunnel/src';
import { TunnelPool } from './tunnel-pool';

/** An endpoint with these sessions up and these views. */
function pool(sessions: { openStreams: number }[], views: TunnelView[] = []): TunnelPool {
  return new TunnelPool({
    sessions: () => sessions as TunnelSession[],
    views: () => views,
  });
}

describe('TunnelPool', () => {
  it('picks the session with the fewest open streams, the first of equals', () => {
    const [a, b, c] = [{ openStreams: 3 }, { openStreams: 1 }, { openStreams: 1 }];
    expect(pool([a, b, c]).pick()).toBe(b);
    expect(pool([a]).pick()).toBe(a);
    expect(pool([]).pick()).toBeUndefined();
  });

  it('says why no tunnel is up: each URL with its last error or state', () => {
    expect(pool([]).whyDown()).toBe('no worker has dialed TUNNEL_LISTEN');
    const views: TunnelView[] = [
      { url: 'ws://a:8080/', state: 'down', streams: 0, lastError: 'bad key' },
      { url: 'ws://b:8080/', state: 'connecting', streams: 0 },
    ];
    expect(pool([], views).whyDown()).toBe('ws://a:8080/: bad key; ws://b:8080/: connecting');
  });
});
