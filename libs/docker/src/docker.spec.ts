import {
  dockerClient,
  dockerMessage,
  DOCKER_UNREACHABLE_CODES,
  gpuDeviceRequest,
  isDockerUnreachable,
  isNotFound,
  JOB_LABELS,
  unlessGoneOrBusy,
  unlessNotFound,
  WORKER_LABEL,
} from './index';

const answered = (statusCode: number, message = `(HTTP code ${statusCode})`) =>
  Object.assign(new Error(message), { statusCode, json: { message: `engine: ${statusCode}` } });

describe('libs/docker', () => {
  it('reaches DOCKER_HOST over a unix socket or tcp, with the usual ports', () => {
    const modem = (url: string) =>
      (dockerClient(url) as unknown as { modem: Record<string, unknown> }).modem;
    expect(modem('unix:///var/run/docker.sock').socketPath).toBe('/var/run/docker.sock');
    expect(modem('tcp://10.0.0.2:2375')).toMatchObject({ host: '10.0.0.2', port: 2375 });
    expect(modem('http://docker')).toMatchObject({ host: 'docker', port: 2375 });
    expect(modem('https://docker')).toMatchObject({ host: 'docker', port: 2376 });
  });

  it('labels job containers with the worker, the job and the experiment', () => {
    expect(JOB_LABELS).toEqual({
      worker: 'gpu-sidecar.worker',
      job: 'gpu-sidecar.job',
      experiment: 'gpu-sidecar.experiment',
    });
    expect(WORKER_LABEL).toBe('gpu-sidecar.worker');
  });

  it('asks for the GPUs named, or for all of them', () => {
    expect(gpuDeviceRequest(['0', 'MIG-abc'])).toEqual({
      Driver: 'nvidia',
      DeviceIDs: ['0', 'MIG-abc'],
      Capabilities: [['gpu']],
    });
    expect(gpuDeviceRequest('all')).toEqual({
      Driver: 'nvidia',
      Count: -1,
      Capabilities: [['gpu']],
    });
  });

  it('has one list of the codes that mean the engine could not be reached', () => {
    expect([...DOCKER_UNREACHABLE_CODES].sort()).toEqual([
      'EACCES',
      'ECONNREFUSED',
      'ECONNRESET',
      'EHOSTUNREACH',
      'ENOENT',
      'EPIPE',
      'ETIMEDOUT',
    ]);
    for (const code of DOCKER_UNREACHABLE_CODES)
      expect(isDockerUnreachable(Object.assign(new Error(code), { code }))).toBe(true);
    expect(isDockerUnreachable(Object.assign(new Error('x'), { code: 'EPERM' }))).toBe(false);
    expect(isDockerUnreachable(answered(500))).toBe(false);
    expect(isDockerUnreachable(undefined)).toBe(false);
  });

  it('reads what the engine said, else the error message', () => {
    expect(dockerMessage(answered(409))).toBe('engine: 409');
    expect(dockerMessage(new Error('connect ENOENT'))).toBe('connect ENOENT');
    expect(dockerMessage('plain')).toBe('plain');
  });

  it('takes a 404 as nothing there, and a 404 or 409 on kill or removal as done', async () => {
    expect(isNotFound(answered(404))).toBe(true);
    expect(isNotFound(answered(409))).toBe(false);
    expect(await unlessNotFound(Promise.resolve(1))).toBe(1);
    expect(await unlessNotFound(Promise.reject(answered(404)))).toBeUndefined();
    await expect(unlessNotFound(Promise.reject(answered(500)))).rejects.toThrow('(HTTP code 500)');
    await expect(unlessGoneOrBusy(Promise.reject(answered(404)))).resolves.toBeUndefined();
    await expect(unlessGoneOrBusy(Promise.reject(answered(409)))).resolves.toBeUndefined();
    await expect(unlessGoneOrBusy(Promise.reject(answered(500)))).rejects.toThrow('500');
  });
});
