import Docker from 'dockerode';

/**
 * The one file of the project that imports dockerode (docs/ARCHITECTURE.md: one adapter per
 * outside library). Other files see dockerode's types through this lib only.
 */
export type { ContainerCreateOptions } from 'dockerode';

/** A client of one Docker Engine (dockerode's). */
export type DockerClient = Docker;

/**
 * A client of the Docker Engine API at `hostUrl` (DOCKER_HOST: unix:///path, tcp://host:port,
 * http(s)://host:port). Nothing is asked of the engine until the first call.
 */
export function dockerClient(hostUrl: string): DockerClient {
  const u = new URL(hostUrl);
  if (u.protocol === 'unix:') return new Docker({ socketPath: u.pathname });
  const protocol = u.protocol === 'https:' ? 'https' : 'http';
  const port = u.port ? Number(u.port) : protocol === 'https' ? 2376 : 2375;
  return new Docker({ host: u.hostname, port, protocol });
}
