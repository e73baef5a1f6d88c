/** A `::progress:: <0-100> [message]` line, as a job prints it on stdout (DESIGN.md). */
export interface ProgressUpdate {
  percent: number;
  message?: string;
}

const PROGRESS = /^::progress::\s+(\d+(?:\.\d+)?)(?:\s+(.*))?$/;

/** Parses one output line; anything else (or a value outside 0-100) is not progress. */
export function parseProgressLine(line: string): ProgressUpdate | undefined {
  const m = PROGRESS.exec(line.trimEnd());
  if (!m) return undefined;
  const percent = Number(m[1]);
  if (!(percent >= 0 && percent <= 100)) return undefined;
  const message = m[2]?.trim();
  return message ? { percent, message } : { percent };
}
