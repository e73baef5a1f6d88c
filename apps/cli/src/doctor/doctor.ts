import {
  ConfigError,
  loadRelayConfig,
  loadWorkerConfig,
  readEnvironment,
  type Env,
} from '../../../../libs/config/src';
import {
  keyChecks,
  relaySeesWorker,
  runChecks,
  tunnelChecks,
  workerChecks,
  type CheckResult,
} from './checks';

/** Which daemon's setup to check: asked for, or guessed from which variables are set. */
export function guessRole(env: Env): 'relay' | 'worker' {
  return env.RELAY_LISTEN || env.ADMIN_LISTEN ? 'relay' : 'worker';
}

/** Formats one result: a tick, or a cross with the fix on the same line. */
export function formatResult(r: CheckResult, colour: boolean): string {
  const mark = r.ok ? (colour ? '\x1b[32m✔\x1b[0m' : 'ok  ') : colour ? '\x1b[31m✘\x1b[0m' : 'FAIL';
  return `${mark} ${r.name}: ${r.detail}${r.fix ? ` — fix: ${r.fix}` : ''}`;
}

/**
 * `gpu-sidecar doctor [relay|worker]`: checks this host's setup and prints one line per check,
 * each failing one with its fix. Returns the exit code: 0 when every check passed.
 */
export async function doctor(
  role: 'relay' | 'worker' | undefined,
  envFile: string | undefined,
): Promise<number> {
  let env: Env;
  try {
    env = readEnvironment(process.env, envFile);
  } catch (err) {
    process.stderr.write(`gpu-sidecar doctor: ${(err as Error).message}\n`);
    return 2;
  }
  const as = role ?? guessRole(env);
  const results: CheckResult[] = [];
  try {
    if (as === 'relay') {
      const config = loadRelayConfig(env);
      results.push(
        ...(await runChecks([
          keyChecks(config.keyFiles),
          tunnelChecks(config),
          relaySeesWorker(config),
        ])),
      );
    } else {
      const config = loadWorkerConfig(env);
      results.push(
        ...(await runChecks([
          keyChecks(config.keyFiles),
          tunnelChecks(config),
          ...workerChecks(config),
        ])),
      );
    }
  } catch (err) {
    const issues = err instanceof ConfigError ? err.issues : [(err as Error).message];
    results.push(
      ...issues.map((i) => ({
        name: 'configuration',
        ok: false,
        detail: i,
        fix: 'see .env.template',
      })),
    );
  }
  const colour = Boolean(process.stdout.isTTY) && !process.env.NO_COLOR;
  process.stdout.write(`gpu-sidecar doctor (${as})\n`);
  for (const r of results) process.stdout.write(`${formatResult(r, colour)}\n`);
  const failed = results.filter((r) => !r.ok).length;
  process.stdout.write(failed ? `${failed} problem(s) found\n` : 'all checks passed\n');
  return failed ? 1 : 0;
}
