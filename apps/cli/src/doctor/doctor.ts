import { ConfigError, loadRelayConfig, loadWorkerConfig } from '../../../../libs/config/src';
import { keyChecks, relaySeesWorker, runChecks, tunnelChecks, workerChecks } from './checks';
import type { CheckResult } from './result';
import { packageRoot } from '../version';
import { findSources, type ConfigSource, type Role } from './source';

/** Formats one result: a tick, a warning sign, or a cross, with the fix on the same line. */
export function formatResult(r: CheckResult, colour: boolean): string {
  const mark = !r.ok
    ? colour
      ? '\x1b[31m✘\x1b[0m'
      : 'FAIL'
    : r.warn
      ? colour
        ? '\x1b[33m!\x1b[0m'
        : 'warn'
      : colour
        ? '\x1b[32m✔\x1b[0m'
        : 'ok  ';
  return `${mark} ${r.name}: ${r.detail}${r.fix ? ` — fix: ${r.fix}` : ''}`;
}

/** Every check of one daemon's configuration. */
async function check(source: ConfigSource): Promise<CheckResult[]> {
  if (source.error)
    return [
      {
        name: 'configuration',
        ok: false,
        detail: source.error,
        fix: /EACCES/.test(source.error)
          ? 'run doctor as root (sudo gpu-sidecar doctor): the env file is root-only'
          : 'see .env.template',
      },
    ];
  try {
    if (source.role === 'relay') {
      const config = loadRelayConfig(source.env);
      return await runChecks([
        keyChecks(config.keyFiles),
        tunnelChecks(config),
        relaySeesWorker(config),
      ]);
    }
    const config = loadWorkerConfig(source.env);
    return await runChecks([
      keyChecks(config.keyFiles),
      tunnelChecks(config),
      ...workerChecks(config, source.service),
    ]);
  } catch (err) {
    const issues = err instanceof ConfigError ? err.issues : [(err as Error).message];
    return issues.map((i) => ({
      name: 'configuration',
      ok: false,
      detail: i,
      fix: source.describe.startsWith('the environment alone')
        ? "pass the daemon's --env-file, or run doctor where its configuration is (see .env.template)"
        : 'see .env.template',
    }));
  }
}

/**
 * `gpu-sidecar doctor [relay|worker]`: finds the configuration each daemon of this host runs
 * with (findSources: --env-file, .env, npm start's, the installed systemd units), says which it
 * read, and prints one line per check, each failing one with its fix. Returns the exit code: 0
 * when every check passed (warnings do not count), 2 when no configuration could be read.
 */
export async function doctor(role: Role | undefined, envFile: string | undefined): Promise<number> {
  let sources: ConfigSource[];
  try {
    sources = findSources(role, envFile, {
      cwd: process.cwd(),
      processEnv: process.env,
      packageRoot: packageRoot(),
    });
  } catch (err) {
    process.stderr.write(`gpu-sidecar doctor: ${(err as Error).message}\n`);
    return 2;
  }
  const colour = Boolean(process.stdout.isTTY) && !process.env.NO_COLOR;
  let failed = 0;
  for (const source of sources) {
    const results = await check(source);
    process.stdout.write(
      `gpu-sidecar doctor (${source.role})\nconfiguration: ${source.describe}\n`,
    );
    for (const r of results) process.stdout.write(`${formatResult(r, colour)}\n`);
    const bad = results.filter((r) => !r.ok).length;
    const warned = results.filter((r) => r.warn).length;
    const warnings = warned ? ` (${warned} warning${warned > 1 ? 's' : ''})` : '';
    process.stdout.write(bad ? `${bad} problem(s) found\n` : `all checks passed${warnings}\n`);
    failed += bad;
  }
  return failed ? 1 : 0;
}
