/** DI tokens and the view of tunnels the admin endpoints read. */
export const RELAY_REGISTRY = Symbol('RELAY_REGISTRY');
export const RELAY_STATE = Symbol('RELAY_STATE');

/** One tunnel as `/healthz` shows it. */
export interface TunnelView {
  /** TUNNEL_CONNECT URL, or `reverse:host:port` for a worker that dialed TUNNEL_LISTEN. */
  url: string;
  state: 'connecting' | 'up' | 'down';
  /** This daemon's number for the session up now: it changes when the tunnel reconnects. */
  session?: number;
  streams: number;
  rttMs?: number;
  /** When the tunnel entered its current state. */
  since?: string;
  /** Why the last session ended or the last attempt failed. */
  lastError?: string;
}

export interface RelayState {
  tunnels(): TunnelView[];
}
