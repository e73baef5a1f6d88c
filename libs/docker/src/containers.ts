/**
 * Labels on every job container (the Docker runner of libs/jobs sets them): the container probe
 * of libs/health and reconciliation filter on `gpu-sidecar.worker=<WORKER_NAME>`.
 */
export const JOB_LABELS = {
  worker: 'gpu-sidecar.worker',
  job: 'gpu-sidecar.job',
  experiment: 'gpu-sidecar.experiment',
} as const;

/** The label with the worker's name: `gpu-sidecar.worker=<WORKER_NAME>`. */
export const WORKER_LABEL = JOB_LABELS.worker;

/** A HostConfig.DeviceRequests entry (the Engine API's DeviceRequest). */
export interface GpuDeviceRequest {
  Driver: string;
  Count?: number;
  DeviceIDs?: string[];
  Capabilities: string[][];
}

/**
 * How a container asks NVIDIA's runtime for GPUs (`docker run --gpus`): the devices named (an
 * index, a `GPU-` or `MIG-` UUID), or every GPU of the host. Job containers and doctor's GPU
 * check ask the same way.
 */
export function gpuDeviceRequest(devices: readonly string[] | 'all'): GpuDeviceRequest {
  return devices === 'all'
    ? { Driver: 'nvidia', Count: -1, Capabilities: [['gpu']] }
    : { Driver: 'nvidia', DeviceIDs: [...devices], Capabilities: [['gpu']] };
}
