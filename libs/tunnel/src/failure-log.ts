import type { Logger } from '../../config/src';

/** Failures of one reason logged one by one per interval; past that they are only counted. */
const PER_REASON = 5;
const INTERVAL_MS = 10_000;

/**
 * Logs failures (refused handshakes, refused streams) without letting a flood of them become a
 * flood of log lines: per reason, the first few of each 10 s are logged one by one (`what`,
 * with their fields), the others are counted and logged as one line with the counts at the end
 * of the interval (`<what>: more not logged one by one`). The metrics still count each.
 */
export class FailureLog {
  private readonly logged = new Map<string, number>();
  private readonly suppressed = new Map<string, number>();
  private timer?: NodeJS.Timeout;

  /** @param what the message of each line, e.g. `tunnel handshake failed` */
  constructor(
    private readonly log: Logger,
    private readonly what: string,
  ) {}

  /** One failure: `reason` is a fixed string (PROTOCOL.md section 5); `fields` say more. */
  note(reason: string, fields: Record<string, unknown>): void {
    const n = this.logged.get(reason) ?? 0;
    if (n < PER_REASON) {
      this.logged.set(reason, n + 1);
      this.log.warn({ ...fields, reason }, this.what);
    } else {
      this.suppressed.set(reason, (this.suppressed.get(reason) ?? 0) + 1);
    }
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), INTERVAL_MS);
      this.timer.unref();
    }
  }

  /** Ends the interval: logs what was only counted, if anything. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.suppressed.size > 0) {
      this.log.warn(
        { counts: Object.fromEntries(this.suppressed), seconds: INTERVAL_MS / 1000 },
        `${this.what}: more not logged one by one`,
      );
    }
    this.logged.clear();
    this.suppressed.clear();
  }
}
