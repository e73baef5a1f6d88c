/**
 * One line of `gpu-sidecar doctor`: what was checked, and when it failed, the fix. `warn`: worth
 * a look but nothing fails because of it (the exit code stays 0). Its own file: every check
 * (checks.ts, gpu-container.ts) returns it, and checks.ts runs gpu-container.ts's check.
 */
export interface CheckResult {
  name: string;
  ok: boolean;
  warn?: boolean;
  detail: string;
  fix?: string;
}
