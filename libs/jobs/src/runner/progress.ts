/** A `::progress:: <0-100> [message]` line, as a job prints it on stdout (README.md). */
export interface ProgressUpdate {
  percent: number;
  message?: string;
}

const PROGRESS = /^::progress::\s+(\d+(?:\.\d+)?)(?:\s+(.*))?$/;
const PREFIX = Buffer.from('::progress::');
const NEWLINE = 0x0a;

/**
 * The longest line read as progress (64 KiB). Longer lines still go to the log byte for byte;
 * they are only never parsed, so no line of a job's output is ever held whole in memory.
 */
export const MAX_PROGRESS_LINE = 64 * 1024;

/** Parses one output line; anything else (or a value outside 0-100) is not progress. */
export function parseProgressLine(line: string): ProgressUpdate | undefined {
  const m = PROGRESS.exec(line.trimEnd());
  if (!m) return undefined;
  const percent = Number(m[1]);
  if (!(percent >= 0 && percent <= 100)) return undefined;
  const message = m[2]?.trim();
  return message ? { percent, message } : { percent };
}

/**
 * Finds `::progress::` lines in a byte stream, chunk by chunk. Why it is safe against any output:
 * it keeps at most MAX_PROGRESS_LINE bytes, and only of a line that still starts with the prefix;
 * any other line (700 MB without a newline included) is skipped as its bytes go by, without
 * copying them. The bytes themselves go to the log elsewhere, untouched.
 */
export class ProgressScanner {
  private held: Buffer[] = [];
  private heldBytes = 0;
  /** The current line cannot be progress (wrong start, or too long): skipped to its newline. */
  private skipping = false;
  /** The held bytes start with the whole prefix: no need to compare again. */
  private prefixSeen = false;

  constructor(private readonly onLine: (line: string) => void) {}

  /** Feeds the next bytes of stdout. */
  push(chunk: Buffer): void {
    let from = 0;
    while (from < chunk.length) {
      const nl = chunk.indexOf(NEWLINE, from);
      const end = nl === -1 ? chunk.length : nl;
      if (!this.skipping) this.hold(chunk.subarray(from, end));
      if (nl === -1) return;
      this.lineEnded();
      from = nl + 1;
    }
  }

  /** stdout ended: a last line without a newline counts too. */
  end(): void {
    if (this.heldBytes > 0 || this.skipping) this.lineEnded();
  }

  private hold(piece: Buffer): void {
    if (piece.length === 0) return;
    if (this.heldBytes + piece.length > MAX_PROGRESS_LINE) return this.skip();
    // Copied: the piece is a view into the stream's chunk, which must not be kept alive.
    this.held.push(Buffer.from(piece));
    this.heldBytes += piece.length;
    if (this.prefixSeen) return;
    const head = this.held.length === 1 ? this.held[0] : Buffer.concat(this.held, this.heldBytes);
    const n = Math.min(head.length, PREFIX.length);
    if (head.compare(PREFIX, 0, n, 0, n) !== 0) return this.skip();
    this.prefixSeen = n === PREFIX.length;
  }

  private skip(): void {
    this.reset();
    this.skipping = true;
  }

  private reset(): void {
    this.skipping = false;
    this.prefixSeen = false;
    this.held = [];
    this.heldBytes = 0;
  }

  private lineEnded(): void {
    if (!this.skipping && this.heldBytes >= PREFIX.length) {
      this.onLine(Buffer.concat(this.held, this.heldBytes).toString('utf8'));
    }
    this.reset();
  }
}

/** At most one progress update per this many ms reaches the queue (the last one always does). */
export const PROGRESS_INTERVAL_MS = 100;

/**
 * Passes progress lines on at most once per PROGRESS_INTERVAL_MS: the first at once, then the
 * latest of each interval, and whatever is pending when the output ends (`flush`). A job that
 * prints a million progress lines makes a few updates a second, not a million Redis writes.
 */
export class ProgressThrottle {
  private pending?: string;
  private last = -Infinity;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly deliver: (line: string) => void,
    private readonly intervalMs = PROGRESS_INTERVAL_MS,
  ) {}

  push(line: string): void {
    this.pending = line;
    if (this.timer) return;
    const wait = this.last + this.intervalMs - performance.now();
    if (wait <= 0) return this.send();
    this.timer = setTimeout(() => this.send(), wait);
    this.timer.unref();
  }

  /** Delivers what is pending now; later pushes are throttled again. */
  flush(): void {
    if (this.pending !== undefined) this.send();
  }

  private send(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const line = this.pending;
    this.pending = undefined;
    this.last = performance.now();
    if (line !== undefined) this.deliver(line);
  }
}
