import type { TunnelEndpoint, TunnelSession } from '../../../libs/tunnel/src';

/** The target every relayed connection asks for: the worker's job API (API_LISTEN). */
export const API_TARGET = 'api';

/**
 * The relay's choice of a worker for each client connection, among the tunnels of its endpoint
 * (one per TUNNEL_CONNECT URL, plus the sessions workers open to TUNNEL_LISTEN in reverse
 * mode): a new stream goes to the authenticated session with the fewest open streams. A
 * session leaves the choice the moment it ends (TunnelEndpoint). Nothing is served to the
 * workers: the relay only opens streams, and a stream a worker tries to open is refused.
 */
export class TunnelPool {
  constructor(private readonly endpoint: Pick<TunnelEndpoint, 'sessions' | 'views'>) {}

  /** The healthy session with the fewest open streams, if any. */
  pick(): TunnelSession | undefined {
    let best: TunnelSession | undefined;
    for (const s of this.endpoint.sessions())
      if (!best || s.openStreams < best.openStreams) best = s;
    return best;
  }

  /** Why no tunnel is up, in one line: each tunnel's URL and its last error (or state). */
  whyDown(): string {
    const views = this.endpoint.views();
    if (views.length === 0) return 'no worker has dialed TUNNEL_LISTEN';
    return views.map((v) => `${v.url}: ${v.lastError ?? v.state}`).join('; ');
  }
}
