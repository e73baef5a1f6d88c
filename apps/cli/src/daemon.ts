import {
  ConfigError,
  createLogger,
  loadKeyFiles,
  readEnvironment,
  type Daemon,
  type Env,
  type Logger,
} from '../../../libs/config/src';

// Declared in libs/config, so that the relay and the worker share it without importing apps/cli.
export type { Daemon };

/** How long a clean stop may take before the process exits anyway: under the worker unit's
 * TimeoutStopSec=5min and docker.sh's `docker stop --time 300`, so running jobs can hand back. */
const STOP_DEADLINE_MS = 270_000;

/**
 * Validates the environment once, starts a daemon and stops it cleanly on SIGTERM or SIGINT.
 * A configuration error prints every bad variable and exits 2; a start failure exits 1.
 */
export async function runDaemon<C extends { logLevel: string; keyFiles: readonly string[] }>(
  name: 'relay' | 'worker',
  envFile: string | undefined,
  load: (env: Env) => C,
  start: (config: C, log: Logger) => Promise<Daemon<C>>,
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
  let daemon: Daemon<C>;
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
  // SIGUSR2 drains (several GPU hosts: taking one out): no new job, the running ones finish,
  // then a clean stop and exit 0. Without a drain (the relay) it is only logged: Node's default
  // for SIGUSR2 would end the process.
  process.on('SIGUSR2', () => {
    if (stopping) return;
    if (!daemon.drain) {
      log.warn(`SIGUSR2: the ${name} has nothing to drain`);
      return;
    }
    log.info('SIGUSR2: draining, then stopping');
    daemon.drain().then(
      () => stop('SIGUSR2'),
      (err: unknown) => log.error({ err }, 'drain failed; still running'),
    );
  });
  process.on('SIGHUP', () => {
    const reason = (err: unknown): string =>
      err instanceof ConfigError ? err.issues.join('; ') : (err as Error).message;
    // A failed reload keeps the keys in use: a typo in a key file never takes the tunnel down.
    const failed = (err: unknown): void => {
      log.error({ err }, `reload failed, keeping the keys in use: ${reason(err)}`);
    };
    let env: Env;
    let keyFiles: string[];
    try {
      // Read again so that an edited env file's TUNNEL_KEY_FILE list takes effect; that one
      // variable alone is taken (the process environment still wins over the file).
      env = readEnvironment(process.env, envFile);
      keyFiles = loadKeyFiles(env);
    } catch (err) {
      return failed(err);
    }
    // The rest is only checked, so that a bad value does not wait silently for the next start.
    try {
      load(env);
    } catch (err) {
      const invalid = err instanceof ConfigError ? err.variables : [];
      log.warn(
        { invalid },
        `SIGHUP: invalid ${invalid.join(', ') || 'configuration'} in the environment, ignored: ` +
          `only TUNNEL_KEY_FILE is reloaded, the other variables take effect only on restart ` +
          `(where this would stop the ${name}): ${reason(err)}`,
      );
    }
    const next: C = Object.freeze({ ...config, keyFiles });
    daemon.reload?.(next).catch(failed);
  });
}
