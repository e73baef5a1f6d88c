import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { ROOT } from './daemon';

/** The registry-less base image (scripts/make-base-image.sh), and what it must hold. */
export const BASE_IMAGE = 'gpu-sidecar-base:node20';
const PARTS = 'node,tini,redis-server,redis-cli';

/**
 * Makes BASE_IMAGE on the engine `env.DOCKER_HOST` names unless it is there already with this
 * machine's node and every part (the labels make-base-image.sh sets), so test files share one.
 */
export function ensureBaseImage(env: NodeJS.ProcessEnv): void {
  const r = spawnSync(
    'docker',
    [
      'image',
      'inspect',
      '-f',
      '{{index .Config.Labels "org.gpu-sidecar.node-version"}} {{index .Config.Labels "org.gpu-sidecar.base-parts"}}',
      BASE_IMAGE,
    ],
    { env, encoding: 'utf8' },
  );
  if (r.status !== 0 || r.stdout.trim() !== `${process.version} ${PARTS}`)
    execFileSync(path.join(ROOT, 'scripts', 'make-base-image.sh'), [BASE_IMAGE], { env });
}
