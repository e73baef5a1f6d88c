import type { TunnelView } from '../../../libs/tunnel/src';

/** DI tokens and the view of tunnels the admin endpoints read. */
export const RELAY_REGISTRY = Symbol('RELAY_REGISTRY');
export const RELAY_STATE = Symbol('RELAY_STATE');

export interface RelayState {
  /** The tunnels as `/healthz` shows them (TunnelEndpoint.views). */
  tunnels(): TunnelView[];
}
