import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { parse as parseDotenv } from 'dotenv';
import {
  parseGpuDevices,
  parseHostPort,
  parseTunnelUrl,
  parseUidGid,
} from '../../../../libs/config/src';
import { groupId, lookupUser } from '../doctor/accounts';
import type { Role } from '../doctor/source';
import { packageRoot } from '../version';
import {
  ensureDir,
  ensureFile,
  ensureLink,
  InstallError,
  keyFingerprint,
  MAX_KEY_BYTES,
  readExistingKey,
  readGivenKeyFile,
  readKeyFromStdin,
  writeNewKey,
  type Outcome,
} from './files';
import { listenUrl } from '../http';
import { restartAndWait } from './systemctl';

/** `gpu-sidecar install relay|worker` options (see main.ts for their help). */
export interface InstallOptions {
  /** Write under this folder instead of /, create the user there; never start anything. */
  root?: string;
  /** false: write everything, start nothing. */
  start?: boolean;
  /** worker: GPU_DEVICES (default all when nvidia-smi lists a GPU, else none). */
  gpus?: string;
  /** worker: JOB_UID. */
  jobUid?: string;
  /** worker: TUNNEL_LISTEN (default 0.0.0.0:8080). */
  listen?: string;
  /** worker: the name the front host reaches this host by (default: the host name). */
  host?: string;
  /** relay: TUNNEL_CONNECT. */
  connect?: string;
  /** relay: the key file to install, or `-` for standard input. */
  key?: string;
}

const USER = 'gpu-sidecar';
const ETC = '/etc/gpu-sidecar';
const KEY = `${ETC}/tunnel.key`;
const STATE = '/var/lib/gpu-sidecar';
const LINK = '/usr/local/bin/gpu-sidecar';
const ROOT_ONLY = { uid: 0, gid: 0 };
const unitOf = (role: Role) => `gpu-sidecar-${role}.service`;
/** The variables the worker unit sets itself: a value in worker.env would override it. */
const UNIT_SETS = ['TUNNEL_KEY_FILE', 'DATA_FOLDER', 'EXPERIMENTS_DIR'];

/** Prints one line per step: what it did, the path, and a note. */
const report = (outcome: Outcome | 'warning' | 'started', what: string, note = '') =>
  process.stdout.write(`${outcome.padEnd(8)}${what}${note ? ` (${note})` : ''}\n`);

/** Sets `vars` in an env file's text: each line replaced in place, or appended. */
export function setVars(text: string, vars: Record<string, string>): string {
  let out = text.endsWith('\n') || text === '' ? text : `${text}\n`;
  for (const [k, v] of Object.entries(vars)) {
    const line = new RegExp(`^${k}=.*$`, 'm');
    out = line.test(out) ? out.replace(line, `${k}=${v}`) : `${out}${k}=${v}\n`;
  }
  return out;
}

/**
 * Reads the key to install: a file (readGivenKeyFile), or standard input for `-`
 * (readKeyFromStdin); either way a regular file's size is checked before it is read, a FIFO
 * never hangs install, and at most 4 KiB + 1 byte is read.
 */
async function keyFrom(source: string): Promise<Buffer> {
  const bytes = source === '-' ? await readKeyFromStdin() : await readGivenKeyFile(source);
  const given = source === '-' ? 'standard input' : source;
  if (bytes.length < 32 || bytes.length > MAX_KEY_BYTES)
    throw new InstallError(
      `the key given (${given}) holds ${bytes.length > MAX_KEY_BYTES ? `more than ${MAX_KEY_BYTES}` : bytes.length} bytes: a key file has 32 ` +
        '(gpu-sidecar keygen); was the ssh command refused?',
    );
  // Why: what a remote shell prints instead of the key (an error, a banner) is text, and 32
  // random bytes are all printable with odds of about 1 in 10^13. Installed, such a "key" would
  // only fail every handshake later, far from its cause.
  if (/^[\x20-\x7e\t\r\n]*$/.test(bytes.toString('latin1'))) {
    bytes.fill(0);
    throw new InstallError(
      `the key given (${given}) is text, not a key (an error or a login banner from ssh?): ` +
        'pipe the key file itself, as `install worker` printed',
    );
  }
  return bytes;
}

/** `value` when `parse` accepts it; else an InstallError naming the option. */
function checked(parse: (s: string) => unknown, option: string, value: string): string {
  try {
    parse(value);
    return value;
  } catch (err) {
    throw new InstallError(`${option}: ${(err as Error).message}`);
  }
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error || r.status !== 0)
    throw new InstallError(
      `${cmd} ${args.join(' ')} failed: ${r.error?.message ?? r.stderr.trim()}`,
    );
}

/** The step list of one install, under `root`. */
class Installer {
  constructor(
    private readonly role: Role,
    private readonly o: InstallOptions,
    private readonly root: string,
  ) {}

  private at = (p: string) => path.join(this.root, p);
  /** useradd/groupadd edit `root`/etc/passwd... with --prefix (no chroot): see their man pages. */
  private prefix = () => (this.root === '/' ? [] : ['--prefix', this.root]);

  link(): void {
    const target = path.join(packageRoot(), 'bin', 'gpu-sidecar');
    report(ensureLink(this.at(LINK), target), LINK, `→ ${target}`);
  }

  /** The worker's system user, and the docker group its unit joins (SupplementaryGroups=). */
  user(): { uid: number; gid: number } {
    if (groupId('docker', this.root) === undefined) {
      run('groupadd', [...this.prefix(), '--system', 'docker']);
      report('created', 'group docker', 'the unit joins it; Docker, once installed, uses it');
    }
    let account = lookupUser(USER, this.root);
    if (!account) {
      run('useradd', [
        ...this.prefix(),
        '--system',
        '--user-group',
        '--home-dir',
        STATE,
        '--no-create-home',
        '--shell',
        '/usr/sbin/nologin',
        USER,
      ]);
      account = lookupUser(USER, this.root);
      if (!account) throw new InstallError(`useradd ${USER} left no user in /etc/passwd`);
      report('created', `user ${USER}`, `uid ${account.uid}`);
    } else report('kept', `user ${USER}`, `uid ${account.uid}`);
    return account;
  }

  folders(owner?: { uid: number; gid: number }): void {
    report(ensureDir(this.at(ETC), { ...ROOT_ONLY, mode: 0o755 }), ETC, 'root:root 755');
    if (this.role === 'worker' && owner) {
      const exp = `${ETC}/experiments`;
      report(
        ensureDir(this.at(exp), { ...ROOT_ONLY, mode: 0o755 }),
        exp,
        'one YAML file per experiment',
      );
      report(
        ensureDir(this.at(STATE), { ...owner, mode: 0o750 }),
        STATE,
        `${USER} 750, DATA_FOLDER in it`,
      );
    }
  }

  /** The key, root:root 0600 (the unit hands the daemon a copy): made, given, or kept. */
  async key(): Promise<string> {
    const want = { ...ROOT_ONLY, mode: 0o600 };
    const file = this.at(KEY);
    const have = await readExistingKey(file, want);
    let key: Buffer;
    if (this.givenKey !== undefined) {
      key = this.givenKey;
      if (have && !have.equals(key))
        throw new InstallError(
          `${KEY} holds another key (fingerprint ${keyFingerprint(have)}, given ${keyFingerprint(key)}): ` +
            'to change keys follow docs/DEPLOY.md "Rotating keys", or remove the file first',
        );
    } else if (have) key = have;
    else if (this.role === 'worker') key = randomBytes(32);
    else
      throw new InstallError(
        `no key: pipe the worker's key in with --key - (the line \`install worker\` printed), or --key FILE`,
      );
    if (!have) writeNewKey(file, key, want);
    const fingerprint = keyFingerprint(key);
    key.fill(0);
    report(have ? 'kept' : 'created', KEY, `root:root 600, fingerprint ${fingerprint}`);
    return fingerprint;
  }

  private givenKey?: Buffer;
  private vars: Record<string, string> = {};
  private envPath = () => `${ETC}/${this.role}.env`;
  private existingEnv = () =>
    existsSync(this.at(this.envPath())) ? readFileSync(this.at(this.envPath()), 'utf8') : undefined;

  /**
   * Everything that can be refused is checked before anything is written: the options' values,
   * the key given (read now, from its file or stdin), and that a relay has a key and a URL.
   */
  async prepare(): Promise<void> {
    const existing = this.existingEnv();
    this.vars = this.role === 'worker' ? this.workerVars(existing) : this.relayVars(existing);
    if (this.o.key !== undefined) this.givenKey = await keyFrom(this.o.key);
    else if (this.role === 'relay' && !existsSync(this.at(KEY)))
      throw new InstallError(
        `no key: pipe the worker's key in with --key - (the line \`install worker\` printed), or --key FILE`,
      );
  }

  /** The env file the unit reads: written once, then only the variables given are changed. */
  envFile(): Record<string, string> {
    const file = this.envPath();
    const existing = this.existingEnv();
    const vars = this.vars;
    const head =
      `# gpu-sidecar ${this.role}, read by ${unitOf(this.role)} (EnvironmentFile=). Every variable: ` +
      `.env.template.\n` +
      (this.role === 'worker'
        ? `# ${UNIT_SETS.join(', ')} are set by the unit: a value here would override it.\n`
        : '# TUNNEL_KEY_FILE is set by the unit: a value here would override it.\n');
    const text = setVars(existing ?? head, vars);
    // 0600: it may hold REDIS_URL's password; systemd reads it as root.
    report(
      ensureFile(this.at(file), text, { ...ROOT_ONLY, mode: 0o600 }, true),
      file,
      'root:root 600',
    );
    const env = parseDotenv(text);
    const unitSets = this.role === 'worker' ? UNIT_SETS : ['TUNNEL_KEY_FILE'];
    for (const k of unitSets.filter((k) => k in env))
      report('warning', file, `sets ${k}, which overrides the unit's: remove that line`);
    return env;
  }

  private workerVars(existing: string | undefined): Record<string, string> {
    const vars: Record<string, string> = {};
    if (this.o.listen) vars.TUNNEL_LISTEN = checked(parseHostPort, '--listen', this.o.listen);
    if (this.o.gpus) vars.GPU_DEVICES = checked(parseGpuDevices, '--gpus', this.o.gpus);
    if (this.o.jobUid) vars.JOB_UID = checked(parseUidGid, '--job-uid', this.o.jobUid);
    if (existing !== undefined) return vars;
    const gpus = spawnSync('nvidia-smi', ['-L']).status === 0 ? 'all' : 'none';
    return {
      TUNNEL_LISTEN: '0.0.0.0:8080',
      API_LISTEN: '127.0.0.1:8000',
      GPU_DEVICES: gpus,
      ...vars,
    };
  }

  private relayVars(existing: string | undefined): Record<string, string> {
    const vars: Record<string, string> = {};
    if (this.o.connect) vars.TUNNEL_CONNECT = checked(parseTunnelUrl, '--connect', this.o.connect);
    if (existing !== undefined) return vars;
    if (!vars.TUNNEL_CONNECT)
      throw new InstallError('--connect ws://GPU-HOST:8080 is needed: where the worker listens');
    return { ...vars, RELAY_LISTEN: '127.0.0.1:8001', ADMIN_LISTEN: '127.0.0.1:9464' };
  }

  unit(): void {
    const name = unitOf(this.role);
    const text = readFileSync(path.join(packageRoot(), 'systemd', name), 'utf8');
    const dest = `/etc/systemd/system/${name}`;
    report(ensureFile(this.at(dest), text, { ...ROOT_ONLY, mode: 0o644 }, true), dest);
  }

  /**
   * daemon-reload, enable and (re)start, when systemd runs here and nothing said not to; then
   * waits until the daemon is ready (`url` answers 2xx), so the next command (doctor, curl)
   * meets a running daemon, and fails with its journal when it does not get there.
   */
  async start(url: string): Promise<boolean> {
    const name = unitOf(this.role);
    if (this.root !== '/' || this.o.start === false || !existsSync('/run/systemd/system')) {
      const why =
        this.root !== '/'
          ? '--root'
          : this.o.start === false
            ? '--no-start'
            : 'systemd is not running here';
      report(
        'warning',
        `${name} not started`,
        `${why}: systemctl daemon-reload && systemctl enable --now ${name}`,
      );
      return false;
    }
    const status = await restartAndWait(name, url);
    report('started', name, `ready: ${url} answered ${status}`);
    return true;
  }
}

/**
 * `gpu-sidecar install worker|relay`: everything a host needs to run that daemon under systemd,
 * each step idempotent and reported on one line: the `gpu-sidecar` link on PATH, (worker) the
 * `gpu-sidecar` system user and the docker group, /etc/gpu-sidecar with the key (root:root
 * 0600: made on the worker, piped in on the relay) and the env file, the unit, then systemctl.
 * The worker's last lines are the one command to run on the front host. Returns the exit code.
 */
export async function install(role: Role, o: InstallOptions): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write(
      'gpu-sidecar install: run it as root (sudo): it writes /etc and creates a user\n',
    );
    return 2;
  }
  const root = path.resolve(o.root ?? '/');
  const steps = new Installer(role, o, root);
  try {
    process.stdout.write(`gpu-sidecar install ${role}${root === '/' ? '' : ` into ${root}`}\n`);
    await steps.prepare();
    steps.link();
    const owner = role === 'worker' ? steps.user() : undefined;
    steps.folders(owner);
    const fingerprint = await steps.key();
    const env = steps.envFile();
    steps.unit();
    const ready = (listen: string, route: string) => `${listenUrl(listen)}${route}`;
    const started = await steps.start(
      role === 'worker'
        ? ready(env.API_LISTEN ?? '127.0.0.1:8000', '/health/ready')
        : ready(env.ADMIN_LISTEN ?? '127.0.0.1:9464', '/healthz'),
    );
    if (role === 'worker') {
      const host = o.host ?? hostname();
      const port = parseHostPort(env.TUNNEL_LISTEN ?? '0.0.0.0:8080').port;
      const bin = path.join(packageRoot(), 'bin', 'gpu-sidecar');
      process.stdout.write(
        `\nKey fingerprint ${fingerprint}: the front host must show the same.\n` +
          `Open TCP ${port} to the front host (firewall and cloud security list), then run there:\n` +
          `  ssh ${host} sudo cat ${KEY} | sudo ${bin} install relay --connect ws://${host}:${port} --key -\n`,
      );
    } else {
      process.stdout.write(
        `\nKey fingerprint ${fingerprint}: the GPU host showed the same.\n` +
          `${started ? 'Check' : 'Once started, check'}: curl -s http://${env.RELAY_LISTEN ?? '127.0.0.1:8001'}/test\n`,
      );
    }
    return 0;
  } catch (err) {
    const known = err instanceof InstallError;
    process.stderr.write(`gpu-sidecar install: ${(err as Error).message}\n`);
    return known ? 2 : 1;
  }
}
