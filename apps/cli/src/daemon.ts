import {
  ConfigError,
  createLogger,
  loadKeyFiles,
  readEnvironment,
  type Daemon,
  type Env,
  type Logger,
} from '../../../libs/config/src';

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
  // The handlers are in place before start() runs. Until a JS handler exists, Node's own for
  // SIGTERM and SIGINT ends the process at once, and so does the default for SIGHUP and SIGUSR2:
  // a `systemctl stop` (or a test) that came right after, or during, the start killed the
  // daemon uncleanly. Start-up takes a while (Nest, Redis, and a full GC may fall there), so
  // that window was not small. A signal during start-up is now acted on once start() returns.
  let daemon: Daemon<C> | undefined;
  let stopping = false;
  const close = (d: Daemon<C>): void => {
    d.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, daemon ? `${name} stopping` : `${name} stopping once started`);
    const deadline = setTimeout(() => {
      log.error('clean stop took too long: exiting');
      process.exit(1);
    }, STOP_DEADLINE_MS);
    deadline.unref();
    if (daemon) close(daemon);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // SIGUSR2 drains (several GPU hosts: taking one out): no new job, the running ones finish,
  // then a clean stop and exit 0. Without a drain (the relay) it is only logged: Node's default
  // for SIGUSR2 would end the process.
  const drain = (d: Daemon<C>): void => {
    if (stopping) return;
    if (!d.drain) {
      log.warn(`SIGUSR2: the ${name} has nothing to drain`);
      return;
    }
    log.info('SIGUSR2: draining, then stopping');
    d.drain().then(
      () => stop('SIGUSR2'),
      (err: unknown) => log.error({ err }, 'drain failed; still running'),
    );
  };
  const reload = (d: Daemon<C>): void => {
    // The worker's experiments first, on their own: a key problem below never keeps them back.
    d.refresh?.().catch((err: unknown) => log.error({ err }, 'SIGHUP: refresh failed'));
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
    d.reload?.(next).catch(failed);
  };
  // During start-up a drain or a reload waits for start() (each at most once), then runs.
  const later = new Map<NodeJS.Signals, (d: Daemon<C>) => void>();
  const onSignal = (signal: NodeJS.Signals, act: (d: Daemon<C>) => void) => {
    process.on(signal, () => {
      if (daemon) return act(daemon);
      log.info({ signal }, `${signal} during start-up: acted on once started`);
      later.set(signal, act);
    });
  };
  onSignal('SIGUSR2', drain);
  onSignal('SIGHUP', reload);
  try {
    daemon = await start(config, log);
  } catch (err) {
    log.fatal({ err }, `${name} failed to start: ${(err as Error).message}`);
    process.exit(1);
  }
  if (stopping) return close(daemon);
  for (const act of later.values()) act(daemon);
}
