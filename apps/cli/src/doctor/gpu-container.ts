import type { GpuSelection } from '../../../../libs/config/src';
import {
  dockerMessage,
  gpuDeviceRequest,
  type DockerClient,
  type GpuDeviceRequest,
} from '../../../../libs/docker/src';
import type { Experiment } from '../../../../libs/jobs/src';
import type { CheckResult } from './result';

const NAME = 'GPUs in a container';
const INSTALL_TOOLKIT =
  'apt-get install nvidia-container-toolkit && nvidia-ctk runtime configure --runtime=docker && systemctl restart docker';
/** `nvidia-smi -L`: `GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-3e1c...)`. */
const GPU_LINE = /^GPU (\d+): (.+) \(UUID: (GPU-[0-9a-fA-F-]+)\)$/;

/** The DeviceRequest a job gets (libs/docker, as the Docker runner asks), for GPU_DEVICES. */
export function deviceRequest(gpus: GpuSelection): GpuDeviceRequest {
  return gpuDeviceRequest(gpus.kind === 'list' ? gpus.ids : 'all');
}

/**
 * A non-TTY container's logs: frames of an 8-byte header (stream, 0, 0, 0, u32be size) and the
 * bytes; anything else is taken as plain text.
 */
export function demux(buf: Buffer): string {
  const parts: Buffer[] = [];
  let i = 0;
  while (i + 8 <= buf.length && buf[i] <= 2 && buf.readUIntBE(i + 1, 3) === 0) {
    const n = buf.readUInt32BE(i + 4);
    parts.push(buf.subarray(i + 8, i + 8 + n));
    i += 8 + n;
  }
  return i === buf.length ? Buffer.concat(parts).toString('utf8') : buf.toString('utf8');
}

const bad = (detail: string, fix: string): CheckResult => ({ name: NAME, ok: false, detail, fix });

/** The image to try: a GPU experiment's image that is on this host, else any Docker experiment's. */
async function pickImage(
  docker: DockerClient,
  experiments: readonly Experiment[],
): Promise<{ image?: string; missing: string[] }> {
  const candidates = experiments
    .filter((e) => e.runner === 'docker' && e.image)
    .sort((a, b) => Number(b.gpus > 0) - Number(a.gpus > 0))
    .map((e) => e.image as string);
  const missing: string[] = [];
  for (const image of [...new Set(candidates)]) {
    try {
      await docker.getImage(image).inspect();
      return { image, missing };
    } catch {
      missing.push(image);
    }
  }
  return { missing };
}

/**
 * Runs `nvidia-smi -L` in a container started the way GPU jobs are (the nvidia DeviceRequest,
 * no network), in an experiment's own image, and checks that it lists the GPUs GPU_DEVICES
 * names. The NVIDIA Container Toolkit puts nvidia-smi into the container; the image needs
 * only a libc.
 */
export async function gpuContainerCheck(
  docker: DockerClient,
  gpus: GpuSelection,
  hasNvidiaRuntime: boolean,
  experiments: readonly Experiment[],
): Promise<CheckResult> {
  if (!hasNvidiaRuntime)
    return bad(
      'not checked: Docker has no NVIDIA runtime, so GPU jobs cannot start',
      INSTALL_TOOLKIT,
    );
  const { image, missing } = await pickImage(docker, experiments);
  if (!image) {
    return missing.length
      ? bad(
          `no experiment image is on this host (${missing.join(', ')})`,
          `docker pull ${missing[0]} (or docker load it): jobs never pull`,
        )
      : { name: NAME, ok: true, detail: 'not checked: no experiment runs in Docker' };
  }
  let out = '';
  let exitCode: number;
  try {
    const c = await docker.createContainer({
      Image: image,
      Entrypoint: ['nvidia-smi'],
      Cmd: ['-L'],
      Env: ['NVIDIA_DRIVER_CAPABILITIES=utility'],
      Labels: { 'org.gpu-sidecar.doctor': 'gpu-check' },
      HostConfig: { NetworkMode: 'none', DeviceRequests: [deviceRequest(gpus)] },
    });
    try {
      await c.start();
      const waited = (await Promise.race([
        c.wait(),
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error('nvidia-smi -L ran over 30 s')), 30_000).unref(),
        ),
      ])) as { StatusCode: number };
      exitCode = waited.StatusCode;
      out = demux(await c.logs({ stdout: true, stderr: true }));
    } finally {
      await c.remove({ force: true }).catch(() => undefined);
    }
  } catch (err) {
    const msg = dockerMessage(err);
    if (/unknown device/i.test(msg))
      return bad(
        `${image}: ${msg}`,
        'GPU_DEVICES names a GPU that does not exist: see nvidia-smi -L on the host',
      );
    return /device driver|nvidia/i.test(msg)
      ? bad(`${image}: ${msg}`, INSTALL_TOOLKIT)
      : bad(
          `${image}: ${msg}`,
          `try it by hand: docker run --rm --gpus all --entrypoint nvidia-smi ${image} -L`,
        );
  }
  const lines = out
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const found = lines.map((l) => GPU_LINE.exec(l)).filter((m): m is RegExpExecArray => !!m);
  const want = gpus.kind === 'list' ? gpus.ids.length : undefined;
  if (exitCode !== 0 || found.length === 0 || (want !== undefined && found.length !== want)) {
    const said = lines.join(' | ').slice(0, 300) || `exit ${exitCode}`;
    return bad(
      `${image}: nvidia-smi -L in the container: ${said}` +
        (want !== undefined ? ` (GPU_DEVICES names ${want})` : ''),
      /driver/i.test(said)
        ? 'the host driver is not loaded or does not match: nvidia-smi on the host, reinstall the NVIDIA driver, reboot'
        : `GPU_DEVICES must name GPUs that exist (nvidia-smi -L on the host), and the toolkit must work: ${INSTALL_TOOLKIT}`,
    );
  }
  return {
    name: NAME,
    ok: true,
    detail: `${image}: ${found.map((m) => `${m[1]} ${m[2]} (${m[3]})`).join(', ')}`,
  };
}
