/** DI tokens and the view of tunnels the admin endpoints read. */
export const RELAY_REGISTRY = Symbol('RELAY_REGISTRY');
export const RELAY_STATE = Symbol('RELAY_STATE');

export interface TunnelView {
  url: string;
  state: 'connecting' | 'up' | 'down';
  streams: number;
  rttMs?: number;
  since?: string;
  lastError?: string;
}

export interface RelayState {
  tunnels(): TunnelView[];
}
