import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './daemon';

/** The image .ci/run (and this helper) imports from busybox. */
export const TEST_IMAGE = 'gpu-sidecar-test:latest';

/**
 * The Docker Engine for integration tests: the private one .ci/run started
 * (GPU_SIDECAR_TEST_DOCKER_HOST), or else a private one started now in a temporary folder.
 * Never the machine's shared engine. Fails, with the fix, when none can be had: tests that need
 * Docker do not skip.
 */
export function testDockerHost(): string {
  const given = process.env.GPU_SIDECAR_TEST_DOCKER_HOST;
  if (given) return given;
  const dir = mkdtempSync('/tmp/gsc-dockerd-');
  try {
    const host = execFileSync(path.join(ROOT, 'scripts', 'dockerd-private.sh'), [dir], {
      encoding: 'utf8',
    }).trim();
    execFileSync(path.join(ROOT, 'scripts', 'make-test-image.sh'), [TEST_IMAGE], {
      env: { ...process.env, DOCKER_HOST: host },
    });
    process.env.GPU_SIDECAR_TEST_DOCKER_HOST = host;
    return host;
  } catch (err) {
    throw new Error(
      `these tests need a Docker Engine: run them through .ci/run, or as root with docker.io and ` +
        `busybox-static installed, or set GPU_SIDECAR_TEST_DOCKER_HOST (${(err as Error).message})`,
    );
  }
}
