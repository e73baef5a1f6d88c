import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseDotenv } from 'dotenv';

/** Where `gpu-sidecar install` puts the units, and where systemd looks first. */
export const UNIT_DIR = '/etc/systemd/system';

/** The settings of an installed unit that decide what its daemon sees, as systemd reads them. */
export interface ServiceUnit {
  /** `gpu-sidecar-worker.service` */
  name: string;
  /** The unit file, then its drop-ins in the order systemd applies them. */
  files: string[];
  /** `Environment=` assignments, in order (an empty assignment resets the list). */
  environment: Array<[string, string]>;
  /** `EnvironmentFile=` paths; `optional` for a leading `-`. */
  environmentFiles: Array<{ path: string; optional: boolean }>;
  /** `LoadCredential=ID:PATH`: what `%d/ID` is a private copy of. */
  credentials: Map<string, string>;
  user?: string;
  group?: string;
  dynamicUser: boolean;
  supplementaryGroups: string[];
  readWritePaths: string[];
  /** `ProtectSystem=strict`: everything but /dev, /proc, /sys and the paths above is read-only. */
  protectSystemStrict: boolean;
  /** `StateDirectory=`, as absolute paths under /var/lib. */
  stateDirectories: string[];
  /** `ExecStart=`, `WorkingDirectory=` and `UMask=`, as written. */
  execStart?: string;
  workingDirectory?: string;
  umask?: string;
}

/**
 * The unit `name` as systemd would load it from `unitDir`: the file, then its drop-ins
 * (`name.d/*.conf`, sorted), or undefined when it is not installed there. Only the [Service]
 * settings that shape the daemon's environment and access are read.
 */
export function readServiceUnit(name: string, unitDir = UNIT_DIR): ServiceUnit | undefined {
  const main = path.join(unitDir, name);
  if (!existsSync(main)) return undefined;
  const dropDir = `${main}.d`;
  const dropIns = existsSync(dropDir)
    ? readdirSync(dropDir)
        .filter((f) => f.endsWith('.conf'))
        .sort()
        .map((f) => path.join(dropDir, f))
    : [];
  const unit: ServiceUnit = {
    name,
    files: [main, ...dropIns],
    environment: [],
    environmentFiles: [],
    credentials: new Map(),
    dynamicUser: false,
    supplementaryGroups: [],
    readWritePaths: [],
    protectSystemStrict: false,
    stateDirectories: [],
  };
  for (const file of unit.files) {
    for (const [key, value] of serviceSettings(readFileSync(file, 'utf8'))) apply(unit, key, value);
  }
  return unit;
}

/** The `Key=value` pairs of the [Service] section, continuation lines joined. */
function serviceSettings(text: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let section = '';
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = pending + raw.trim();
    pending = '';
    if (line.endsWith('\\')) {
      pending = `${line.slice(0, -1)} `;
      continue;
    }
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.startsWith('[')) {
      section = line;
      continue;
    }
    const eq = line.indexOf('=');
    if (section !== '[Service]' || eq < 0) continue;
    out.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return out;
}

const words = (value: string): string[] => splitQuoted(value);
const yes = (value: string): boolean => /^(1|yes|true|on)$/i.test(value);

function apply(unit: ServiceUnit, key: string, value: string): void {
  switch (key) {
    case 'Environment':
      if (value === '') unit.environment = [];
      for (const w of words(value)) {
        const eq = w.indexOf('=');
        if (eq > 0) unit.environment.push([w.slice(0, eq), w.slice(eq + 1)]);
      }
      break;
    case 'EnvironmentFile':
      if (value === '') unit.environmentFiles = [];
      else
        unit.environmentFiles.push({
          path: value.replace(/^-/, ''),
          optional: value.startsWith('-'),
        });
      break;
    case 'LoadCredential': {
      const colon = value.indexOf(':');
      if (colon > 0) unit.credentials.set(value.slice(0, colon), value.slice(colon + 1));
      break;
    }
    case 'User':
      unit.user = value || undefined;
      break;
    case 'Group':
      unit.group = value || undefined;
      break;
    case 'DynamicUser':
      unit.dynamicUser = yes(value);
      break;
    case 'SupplementaryGroups':
      unit.supplementaryGroups = value === '' ? [] : [...unit.supplementaryGroups, ...words(value)];
      break;
    case 'ReadWritePaths':
      unit.readWritePaths =
        value === ''
          ? []
          : [...unit.readWritePaths, ...words(value).map((p) => p.replace(/^[-+]+/, ''))];
      break;
    case 'ExecStart':
      unit.execStart = value || undefined;
      break;
    case 'WorkingDirectory':
      unit.workingDirectory = value || undefined;
      break;
    case 'UMask':
      unit.umask = value || undefined;
      break;
    case 'ProtectSystem':
      unit.protectSystemStrict = value === 'strict';
      break;
    case 'StateDirectory':
      unit.stateDirectories =
        value === ''
          ? []
          : [
              ...unit.stateDirectories,
              ...words(value).map((d) => path.join('/var/lib', d.split(':')[0])),
            ];
      break;
  }
}

/** Splits on blanks outside double or single quotes, and drops the quotes (systemd's rule). */
function splitQuoted(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | undefined;
  let any = false;
  for (const ch of value) {
    if (quote) {
      if (ch === quote) quote = undefined;
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      any = true;
    } else if (/\s/.test(ch)) {
      if (cur || any) out.push(cur);
      cur = '';
      any = false;
    } else {
      cur += ch;
    }
  }
  if (cur || any) out.push(cur);
  return out;
}

/** The credentials directory's name in `%d` (systemd: /run/credentials/UNIT). */
export function credentialsDirectory(unit: ServiceUnit): string {
  return `/run/credentials/${unit.name}`;
}

/**
 * The daemon's environment as systemd builds it from the unit: `Environment=` first, then each
 * `EnvironmentFile=` over it (systemd: "settings from these files override settings made with
 * Environment="). Specifiers are expanded: `%d` is `credentialsDir`, `%n` the unit, `%%` a `%`.
 * Throws when a required env file cannot be read (the daemon would not start either).
 */
export function unitEnvironment(
  unit: ServiceUnit,
  credentialsDir = credentialsDirectory(unit),
): Record<string, string> {
  const expand = (v: string) =>
    v.replace(/%([%dnN])/g, (_, c: string) =>
      c === '%'
        ? '%'
        : c === 'd'
          ? credentialsDir
          : c === 'n'
            ? unit.name
            : unit.name.replace(/\.service$/, ''),
    );
  const env: Record<string, string> = {};
  for (const [k, v] of unit.environment) env[k] = expand(v);
  for (const f of unit.environmentFiles) {
    let text: string;
    try {
      text = readFileSync(f.path, 'utf8');
    } catch (err) {
      if (f.optional && (err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new Error(`EnvironmentFile=${f.path} of ${unit.name}: ${(err as Error).message}`);
    }
    Object.assign(env, parseDotenv(text));
  }
  return env;
}
