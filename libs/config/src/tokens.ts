/**
 * Nest injection tokens for what the CLI hands a daemon: its validated configuration
 * (`WorkerConfig`) and its logger (`Logger`). The job module provides both and injects them
 * into the job system's providers (libs/jobs/src/jobs.providers.ts).
 */
export const WORKER_CONFIG = Symbol('WORKER_CONFIG');
export const LOGGER = Symbol('LOGGER');
