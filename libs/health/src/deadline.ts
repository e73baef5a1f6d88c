/** Thrown by `withDeadline` when the work did not settle in time. */
export class DeadlineError extends Error {}

/**
 * `p`, or a DeadlineError `<what> got no answer within <ms> ms` once `ms` have passed. The work
 * itself goes on (a promise cannot be cancelled); only the caller stops waiting. This is what
 * keeps /health, /health/ready and /metrics answering in bounded time whatever hangs behind them.
 */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new DeadlineError(`${what} got no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(t));
}
