import {
  ConfigError,
  createLogger,
  readEnvironment,
  type Env,
  type Logger,
} from '../../../libs/config/src';

/** What a daemon's start function returns. */
export interface Daemon {
  close(): Promise<void>;
  /** SIGHUP: reload what can change without a restart (tunnel keys). */
  reload?(): Promise<void>;
}

/** How long a clean stop may take before the process exits anyway: under the worker unit's
 * TimeoutStopSec=5min and docker.sh's `docker stop --time 300`, so running jobs can hand back. */
const STOP_DEADLINE_MS = 270_000;

/**
 * Validates the environment once, starts a daemon and stops it cleanly on SIGTERM or SIGINT.
 * A configuration error prints every bad variable and exits 2; a start failure exits 1.
 */
export async function runDaemon<C extends { logLevel: string }>(
  name: 'relay' | 'worker',
  envFile: string | undefined,
  load: (env: Env) => C,
  start: (config: C, log: Logger) => Promise<Daemon>,
): Promise<void> {
  let config: C;
  try {
    config = load(readEnvironment(process.env, envFile));
  } catch (err) {
    const msg = err instanceof ConfigError ? err.message : (err as Error).message;
    process.stderr.write(`gpu-sidecar ${name}: ${msg}\n`);
    process.exit(2);
  }
  const log = createLogger(config.logLevel, name);
  let daemon: Daemon;
  try {
    daemon = await start(config, log);
  } catch (err) {
    log.fatal({ err }, `${name} failed to start: ${(err as Error).message}`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, `${name} stopping`);
    const deadline = setTimeout(() => {
      log.error('clean stop took too long: exiting');
      process.exit(1);
    }, STOP_DEADLINE_MS);
    deadline.unref();
    daemon.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', () => {
    // A failed reload keeps the keys in use: a typo in a key file never takes the tunnel down.
    daemon
      .reload?.()
      .catch((err: unknown) => log.error({ err }, `reload failed: ${(err as Error).message}`));
  });
}
