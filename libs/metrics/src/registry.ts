import { collectDefaultMetrics, Registry } from 'prom-client';

/**
 * The one place prom-client is imported (docs/ARCHITECTURE.md: one adapter per outside library). Each daemon
 * owns one Registry; libraries receive typed recorders built on it, never prom-client itself.
 */
export { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** A registry with Node's process metrics (`process_*`, `nodejs_*`) and a `daemon` label. */
export function createRegistry(daemon: 'relay' | 'worker'): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ daemon });
  collectDefaultMetrics({ register: registry });
  return registry;
}
