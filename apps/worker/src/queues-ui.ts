import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { JobsRuntime } from '../../../libs/jobs/src';

export const QUEUES_PATH = '/queues';

/**
 * The one file that imports bull-board: its page at /queues on API_LISTEN, over this worker's
 * BullMQ queues. QUEUE_UI=readonly (the default) builds every queue adapter with readOnlyMode,
 * which bull-board enforces on the server for each state-changing route (retry, clean, add,
 * pause, empty, obliterate, promote: 405 "Method not allowed on read only queue"), not only by
 * hiding buttons; so a visitor that reaches the API through the tunnel can look but change
 * nothing. `admin` allows retry and clean; `off` mounts nothing (404).
 */
export function mountQueuesUi(
  app: NestExpressApplication,
  rt: JobsRuntime,
  mode: 'readonly' | 'off' | 'admin',
): void {
  if (mode === 'off') return;
  const readOnlyMode = mode !== 'admin';
  const serverAdapter = new ExpressAdapter().setBasePath(QUEUES_PATH);
  createBullBoard({
    queues: rt.queue
      .bullQueues()
      .map((q) => new BullMQAdapter(q, { readOnlyMode, allowRetries: !readOnlyMode })),
    serverAdapter,
    options: { uiConfig: { boardTitle: readOnlyMode ? 'gpu-sidecar (read-only)' : 'gpu-sidecar' } },
  });
  app.use(QUEUES_PATH, serverAdapter.getRouter());
}
