/**
 * What to send for a download's `Range` header (RFC 9110, section 14), one range at most:
 * - `whole`: 200 with the whole file: no Range, a unit other than bytes, a malformed or
 *   invalid range (`5-2`), several ranges (a server may always ignore Range; one range is what
 *   resuming needs), or an `If-Range` that does not match the file as it is now;
 * - `partial`: 206 with bytes `start`..`end` (inclusive), `end` clamped to the file;
 * - `unsatisfiable`: 416: the range starts at or past the end (`curl -C -` on a complete file),
 *   a suffix of 0 bytes, or any range of an empty file.
 *
 * Not express's `req.range()` (range-parser): it answers 416 to a suffix longer than the file,
 * where RFC 9110 serves the whole file, and to an invalid `5-2`, where it asks to ignore it.
 */
export type RangePlan =
  { kind: 'whole' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/** The file's validators, compared with `If-Range`. */
export interface Validators {
  /** A strong ETag, quotes included. */
  etag: string;
  /** The Last-Modified date as sent (HTTP date). */
  lastModified: string;
}

const SPEC = /^(\d*)-(\d*)$/;

/** Plans the answer to `range` (the Range header) for a file of `size` bytes. */
export function planRange(
  size: number,
  range: string | undefined,
  ifRange?: string,
  validators?: Validators,
): RangePlan {
  if (range === undefined) return { kind: 'whole' };
  if (ifRange !== undefined && !ifRangeMatches(ifRange.trim(), validators))
    return { kind: 'whole' };
  const eq = range.indexOf('=');
  if (eq < 0 || range.slice(0, eq).trim().toLowerCase() !== 'bytes') return { kind: 'whole' };
  const specs = range.slice(eq + 1).split(',');
  if (specs.length !== 1) return { kind: 'whole' };
  const m = SPEC.exec(specs[0].trim());
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'whole' };
  // Digits only: Number() is exact up to 2^53 and only grows past it (never NaN, never < 0).
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const last = m[2] === '' ? Infinity : Number(m[2]);
  if (last < start) return { kind: 'whole' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: Math.min(last, size - 1) };
}

/**
 * If-Range holds an ETag or a date. A strong ETag must match exactly (a weak one never does,
 * RFC 9110 13.1.5); a date must be exactly the Last-Modified sent.
 */
function ifRangeMatches(ifRange: string, v: Validators | undefined): boolean {
  if (!v) return false;
  if (ifRange.startsWith('"') || ifRange.startsWith('W/')) return ifRange === v.etag;
  return ifRange === v.lastModified;
}
