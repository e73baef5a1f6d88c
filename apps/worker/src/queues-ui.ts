import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { Application, Response } from 'express';
import type { JobsRuntime } from '../../../libs/jobs/src';

export const QUEUES_PATH = '/queues';

/**
 * The page may load only what the worker serves: no fonts, scripts or styles from the internet
 * (a GPU host often has no way out, and a visitor's browser should not tell a third party that
 * it looks at this page). Inline styles stay allowed: bull-board's loading screen and React use
 * them.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'self'",
  "frame-ancestors 'self'",
].join('; ');

/** bull-board's page links Google Fonts' stylesheet; it renders with the fallback font instead. */
const EXTERNAL_STYLESHEET = /<link\b[^>]*\bhref="https?:\/\/[^"]*"[^>]*>\s*/gi;

type Engine = (
  path: string,
  options: object,
  done: (err: Error | null, html?: string) => void,
) => void;

/** Wraps the sub-app's EJS engine so that the page it renders links nothing outside the worker. */
function keepPageLocal(app: Application): void {
  const engines = (app as unknown as { engines: Record<string, Engine> }).engines;
  const ejs = engines['.ejs'];
  app.engine('ejs', (file, options, done) =>
    ejs(file, options, (err, html) => done(err, html?.replace(EXTERNAL_STYLESHEET, ''))),
  );
}

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
  const router = serverAdapter.getRouter() as Application;
  keepPageLocal(router);
  // Before bull-board's routes: the policy that keeps the browser from fetching anything else.
  const policy = (_req: unknown, res: Response, next: () => void) => {
    res.setHeader('Content-Security-Policy', CONTENT_SECURITY_POLICY);
    next();
  };
  app.use(QUEUES_PATH, policy, router);
}
