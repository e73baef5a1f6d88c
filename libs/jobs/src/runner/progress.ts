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

/**
 * The longest progress message kept, in UTF-8 bytes (1 KiB), after cleaning: a longer one is cut
 * at a character boundary and ends with `…`. The message is in the job's record, which every
 * `GET /jobs` (up to 1,000 records), every event of `/events` and every log follower's poll
 * (5 a second) reads again: a 64 KiB line of \x01 used to become a 390 KB record (`\u0001`).
 */
export const MAX_PROGRESS_MESSAGE = 1024;

/** ANSI escape sequences (colours, cursor moves): removed whole, not only their ESC. */
// eslint-disable-next-line no-control-regex -- ESC is what an ANSI sequence starts with
const ANSI = /\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])/g;
/**
 * What is never kept of a message: control characters (C0, DEL, C1; a tab becomes a space
 * first), unpaired surrogates, and the bidirectional overrides and isolates that reorder what a
 * terminal or a page shows after them.
 */
const UNPRINTABLE = /[\p{Cc}\p{Cs}\u202a-\u202e\u2066-\u2069]/gu;

/**
 * A progress message as it is kept: printable characters only (ANSI sequences and other control
 * characters dropped, tabs made spaces), trimmed, at most MAX_PROGRESS_MESSAGE bytes of UTF-8.
 * Empty: no message.
 */
export function cleanProgressMessage(raw: string): string {
  const clean = raw.replace(ANSI, '').replace(/\t/g, ' ').replace(UNPRINTABLE, '').trim();
  if (Buffer.byteLength(clean) <= MAX_PROGRESS_MESSAGE) return clean;
  // Whole characters only, with room for the 3 bytes of the ellipsis.
  const room = new Uint8Array(MAX_PROGRESS_MESSAGE - 3);
  const { read } = new TextEncoder().encodeInto(clean, room);
  return `${clean.slice(0, read).trimEnd()}…`;
}

/** Parses one output line; anything else (or a value outside 0-100) is not progress. */
export function parseProgressLine(line: string): ProgressUpdate | undefined {
  const m = PROGRESS.exec(line.trimEnd());
  if (!m) return undefined;
  const percent = Number(m[1]);
  if (!(percent >= 0 && percent <= 100)) return undefined;
  const message = m[2] === undefined ? '' : cleanProgressMessage(m[2]);
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
