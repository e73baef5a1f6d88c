import { execFileSync, spawnSync } from 'node:child_process';
import { InstallError } from './files';

/** How long a started daemon may take to be ready (embedded Redis, Nest, the tunnel). */
const READY_TIMEOUT_MS = 90_000;

/**
 * `systemctl daemon-reload`, `enable` and `restart` the unit `name`, then waits until `url`
 * answers 2xx (its status is returned): the unit is Type=simple, so systemd says "started" before the daemon listens,
 * and the next command (doctor, curl) would meet nothing. Throws, with the unit's journal, when
 * the service stops or the daemon is not ready within 90 s.
 */
export async function restartAndWait(name: string, url: string): Promise<number> {
  execFileSync('systemctl', ['daemon-reload']);
  execFileSync('systemctl', ['enable', name], { stdio: 'ignore' });
  execFileSync('systemctl', ['restart', name]);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return res.status;
      last = `${res.status} ${(await res.text()).slice(0, 300)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (spawnSync('systemctl', ['is-active', '--quiet', name]).status !== 0) {
      last = `the service stopped (${last})`;
      break;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  const journal = spawnSync('journalctl', ['-u', name, '-n', '30', '--no-pager'], {
    encoding: 'utf8',
  });
  throw new InstallError(
    `${name} is not ready (${url}: ${last}); its last log lines:\n${journal.stdout ?? ''}` +
      `fix what they say, then: systemctl restart ${name}`,
  );
}
