export { setupOpenApi } from './api/docs';
export { ApiHostGuard, jsonContent } from './api/responses';
export * from './experiments/catalog';
export * from './experiments/experiment';
export * from './experiments/experiment-files';
export * from './gpu-allocator';
export * from './job-record';
export * from './jobs.metrics';
export * from './jobs.module';
export * from './jobs.providers';
export * from './jobs.runtime';
export * from './jobs.service';
export * from './runner/docker.engine';
export * from './runner/docker.runner';
export * from './runner/progress';
export * from './runner/runner';
export * from './runner/process.runner';
export * from './store/results.store';
// For doctor's Redis check: the queue's own ioredis adapter.
export {
  connect as connectRedis,
  optionsFromUrl as redisOptionsFromUrl,
} from './queue/redis-connection';
