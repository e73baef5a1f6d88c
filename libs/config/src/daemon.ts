/**
 * What a daemon's start function returns (startRelay, startWorker), as runDaemon (apps/cli)
 * drives it: `close()` stops it cleanly (SIGTERM/SIGINT); `reload()` on SIGHUP; `drain()` on
 * SIGUSR2. Here, in a lib, because apps never import each other (docs/ARCHITECTURE.md: layout).
 */
export interface Daemon<C = unknown> {
  close(): Promise<void>;
  /**
   * SIGHUP: reload what can change without a restart. `next` is the started configuration
   * with TUNNEL_KEY_FILE read again (the env file may have changed); nothing else is reloaded.
   */
  reload?(next?: C): Promise<void>;
  /**
   * SIGHUP too, before and whatever becomes of the keys: re-reads the files the daemon follows
   * on its own (the worker's EXPERIMENTS_DIR, as at start). It reports its own problems (a bad
   * experiment file is a warning), so a key that cannot be loaded never keeps it from running,
   * nor the reverse.
   */
  refresh?(): Promise<void>;
  /** SIGUSR2: take no new work and let the running work end; resolves when it has. */
  drain?(): Promise<void>;
}
