/**
 * libs/docker: the Docker Engine adapter the worker's parts share (the Docker runner in
 * libs/jobs, the container probe in libs/health, doctor in apps/cli): the client for
 * DOCKER_HOST, the labels of job containers, the GPU device request, and how engine errors
 * read (unreachable, not found, conflict).
 */
export * from './client';
export * from './containers';
export * from './errors';
