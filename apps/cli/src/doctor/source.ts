import { existsSync, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { parse as parseDotenv } from 'dotenv';
import { readEnvironment, type Env } from '../../../../libs/config/src';
import { lookupUser, type Account } from './accounts';
import {
  credentialsDirectory,
  readServiceUnit,
  UNIT_DIR,
  unitEnvironment,
  type ServiceUnit,
} from './systemd-unit';

export type Role = 'relay' | 'worker';
const ROLES: Role[] = ['worker', 'relay'];

/** The systemd side of a configuration: who the daemon runs as and what it may write. */
export interface ServiceView {
  unit: ServiceUnit;
  /** The service's user; undefined with DynamicUser= or when the user does not exist (yet). */
  account?: Account;
  /** User= named a user that /etc/passwd does not list. */
  missingUser?: string;
}

/** One daemon's configuration as doctor found it, and where from. */
export interface ConfigSource {
  role: Role;
  /** What was read, for the report's second line. */
  describe: string;
  env: Env;
  /** Why the configuration could not be read whole (an env file only root may read...). */
  error?: string;
  /** Set when the configuration is an installed systemd unit's. */
  service?: ServiceView;
}

/** Where doctor looks: the working folder, the package (npm start's files), the unit folder. */
export interface SourceContext {
  cwd: string;
  processEnv: Env;
  packageRoot: string;
  unitDir?: string;
}

/** npm start's configuration file for `role` (scripts/dev.js writes it). */
export const devEnvFile = (root: string, role: Role): string =>
  path.join(root, '.local', `${role}.env`);

const unitName = (role: Role) => `gpu-sidecar-${role}.service`;
const real = (p: string): string => {
  try {
    return realpathSync(p);
  } catch {
    return path.resolve(p);
  }
};

/** The installed unit whose EnvironmentFile= is `file`, if any. */
function unitReading(file: string, unitDir: string): ServiceUnit | undefined {
  for (const role of ROLES) {
    const unit = readServiceUnit(unitName(role), unitDir);
    if (unit?.environmentFiles.some((f) => real(f.path) === real(file))) return unit;
  }
  return undefined;
}

const roleOf = (unit: ServiceUnit): Role => (unit.name.includes('relay') ? 'relay' : 'worker');

/**
 * What a systemd service's daemon sees: the unit's Environment= under its EnvironmentFile=s, and
 * `%d/ID` (a credential, systemd's private copy made at start) read as the LoadCredential= file
 * it copies, so the key checks look at the file an admin manages. The caller's own environment
 * is left out: the daemon never sees it.
 */
function fromUnit(unit: ServiceUnit): ConfigSource {
  const dir = credentialsDirectory(unit);
  let env: Env = {};
  let error: string | undefined;
  try {
    env = unitEnvironment(unit, dir);
  } catch (err) {
    error = (err as Error).message;
  }
  for (const [k, v] of Object.entries(env)) {
    env[k] = v
      ?.split(',')
      .map((part) =>
        part.startsWith(`${dir}/`)
          ? (unit.credentials.get(part.slice(dir.length + 1)) ?? part)
          : part,
      )
      .join(',');
  }
  const files = unit.environmentFiles.map((f) => `EnvironmentFile=${f.path}`);
  const creds = [...unit.credentials].map(([id, p]) => `LoadCredential=${id}:${p}`);
  const service: ServiceView = { unit };
  if (unit.user && !unit.dynamicUser) {
    service.account = lookupUser(unit.user, '/', unit.supplementaryGroups);
    if (!service.account) service.missingUser = unit.user;
  }
  return {
    role: roleOf(unit),
    error,
    describe: `systemd unit ${unit.files.join(' + ')} (${['Environment=', ...files, ...creds].join(', ')})`,
    env,
    service,
  };
}

/**
 * Finds the configuration each daemon of this host runs with, in this order:
 * 1. `--env-file FILE`: a unit's view when an installed unit reads FILE (its EnvironmentFile=),
 *    else FILE under the environment;
 * 2. `.env` in the working folder, under the environment (what `gpu-sidecar worker` reads);
 * 3. npm start's files (.local/worker.env, .local/relay.env) when run in this package's folder;
 * 4. the installed systemd units (/etc/systemd/system/gpu-sidecar-{worker,relay}.service);
 * 5. the environment alone.
 * `role` keeps only that daemon; without it 3 and 4 give every daemon they find, and 1, 2 and 5
 * guess it from RELAY_LISTEN / ADMIN_LISTEN.
 */
export function findSources(
  role: Role | undefined,
  envFile: string | undefined,
  ctx: SourceContext,
): ConfigSource[] {
  const unitDir = ctx.unitDir ?? UNIT_DIR;
  const guess = (env: Env): Role =>
    role ?? (env.RELAY_LISTEN || env.ADMIN_LISTEN ? 'relay' : 'worker');
  if (envFile !== undefined) {
    const unit = existsSync(envFile) ? unitReading(envFile, unitDir) : undefined;
    if (unit && (role === undefined || roleOf(unit) === role)) return [fromUnit(unit)];
    const env = readEnvironment(ctx.processEnv, envFile);
    return [{ role: guess(env), describe: `--env-file ${envFile}, under the environment`, env }];
  }
  const dotEnv = path.join(ctx.cwd, '.env');
  if (existsSync(dotEnv)) {
    const env = readEnvironment(ctx.processEnv, dotEnv);
    return [{ role: guess(env), describe: `${dotEnv}, under the environment`, env }];
  }
  const roles = role ? [role] : ROLES;
  if (real(ctx.cwd) === real(ctx.packageRoot)) {
    const dev = roles.filter((r) => existsSync(devEnvFile(ctx.packageRoot, r)));
    if (dev.length)
      return dev.map((r) => {
        const file = devEnvFile(ctx.packageRoot, r);
        // npm start gives its daemons these values over whatever the shell has.
        const env = { ...ctx.processEnv, ...parseDotenv(readFileSync(file)) };
        return { role: r, describe: `npm start's ${file}`, env };
      });
  }
  const units = roles
    .map((r) => readServiceUnit(unitName(r), unitDir))
    .filter((u): u is ServiceUnit => u !== undefined);
  if (units.length) return units.map(fromUnit);
  return [
    {
      role: guess(ctx.processEnv),
      describe:
        'the environment alone (no --env-file, no .env here, no npm start configuration, no ' +
        `installed unit in ${unitDir})`,
      env: { ...ctx.processEnv },
    },
  ];
}
