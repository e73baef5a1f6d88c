import pino from 'pino';

/** The project's structured logger (pino). Call as `log.info({ field: 1 }, 'message')`. */
export type Logger = pino.Logger;

/**
 * Creates the process logger. JSON lines on stderr, so stdout stays free for command output
 * (`gpu-sidecar status`, `keygen`); `pino-pretty` is not needed to read them.
 */
export function createLogger(level: string, name: string): Logger {
  return pino({ level, name, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

/** A logger that drops everything: for unit tests and libraries used without a daemon. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
