/** Thrown by `withDeadline` when the work did not settle in time. */
export class DeadlineError extends Error {}

/**
 * `p`, or a DeadlineError `<what> got no answer within <ms> ms` (`no answer within <ms> ms`
 * without `what`) once `ms` have passed. The work itself goes on (a promise cannot be
 * cancelled); only the caller stops waiting. This is what keeps /health, /health/ready and
 * /metrics answering in bounded time whatever hangs behind them, and a Docker status question
 * from waiting on an engine that never answers.
 */
export function withDeadline<T>(p: Promise<T>, ms: number, what?: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const said = `${what ? `${what} got ` : ''}no answer within ${ms} ms`;
  const late = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new DeadlineError(said)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(t));
}
