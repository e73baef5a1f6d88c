import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './daemon';

/**
 * Emulated hosts for the deployment procedures (docs/DEPLOY.md): each one its own network
 * namespace (a veth pair joins them, on private addresses only they see), mount namespace and
 * host name. /etc, /opt, /usr/local, /var/lib, /run and /root are copy-on-write overlays of this
 * machine's, thrown away with the host, so `useradd`, /etc/gpu-sidecar and the units land there
 * and never here. /opt/gpu-sidecar is this checkout (built, with node_modules): step 1 of each
 * procedure (clone, npm ci, build) is what the quick-start test runs. sudo, ssh, systemctl and
 * journalctl are the stand-ins of test/fixtures/fake-host. Needs root and `ip netns`.
 */
export interface Host {
  name: string;
  /** Its address on the link between the hosts. */
  address: string;
  /** The process that holds its namespaces. */
  pid: number;
  /** Runs one shell command line in the host as root, from the folder the last one ended in. */
  run(command: string, opts?: { timeoutMs?: number; input?: string }): Promise<CommandResult>;
  /** A file's text as the host sees it. */
  read(file: string): string;
}

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const FAKES = path.join(ROOT, 'test', 'fixtures', 'fake-host');
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error || r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
}

/** Fails, with the fix, where network namespaces cannot be made (not root, no iproute2). */
export function assertNetnsWorks(): void {
  if (process.getuid?.() !== 0)
    throw new Error('emulated hosts need root (network and mount namespaces): CI runs as root');
  const probe = `gsc-probe-${process.pid}`;
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (r.error || r.status !== 0)
    throw new Error(
      `ip netns add failed (${r.error?.message ?? r.stderr.trim()}): apt-get install iproute2, run as root`,
    );
  sh('ip', ['netns', 'del', probe]);
}

// What the holder runs in its new mount and UTS namespaces before it waits: the overlays, the
// checkout at /opt/gpu-sidecar, the host name, the stand-ins, the peers' names.
const SETUP = `set -eu
mount -t tmpfs -o mode=0755 tmpfs "$GSC_BASE"
for d in etc opt usr/local var/lib run root; do
  mkdir -p "$GSC_BASE/up/$d" "$GSC_BASE/work/$d"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$GSC_BASE/up/$d,workdir=$GSC_BASE/work/$d" "/$d"
done
mkdir -p /opt/gpu-sidecar
mount --bind "$GSC_CHECKOUT" /opt/gpu-sidecar
hostname "$GSC_NAME"
for f in sudo ssh systemctl journalctl; do ln -sf "$GSC_FAKES/$f" "/usr/local/bin/$f"; done
rm -rf /run/systemd /run/credentials /run/fake-systemd && mkdir -p /run/systemd/system
printf '%s\\n' "$GSC_HOSTS" >> /etc/hosts
echo ready
exec sleep 100000
`;

/** The hosts, up and joined; `stop()` ends every process in them and removes them. */
export interface Hosts {
  hosts: Host[];
  stop(): Promise<void>;
}

/**
 * Starts one emulated host per name, the first one linked to each other one by a veth pair
 * (10.77.N.1 for the first, 10.77.N.2 for host N), each name in every host's /etc/hosts.
 */
export async function startHosts(names: string[]): Promise<Hosts> {
  assertNetnsWorks();
  const tag = `gsc${process.pid}`;
  const netns = names.map((n) => `${tag}-${n}`);
  const addresses = names.map((_, i) => (i === 0 ? '10.77.1.1' : `10.77.${i}.2`));
  const holders: ChildProcess[] = [];
  const bases: string[] = [];
  const stop = async () => {
    for (const ns of netns) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout;
      for (const pid of pids.split('\n').filter(Boolean).map(Number)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }
    }
    await new Promise((r) => setTimeout(r, 200));
    for (const ns of netns) spawnSync('ip', ['netns', 'del', ns]);
    for (const b of bases) rmSync(b, { recursive: true, force: true });
  };
  try {
    for (const ns of netns) {
      sh('ip', ['netns', 'add', ns]);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    for (let i = 1; i < names.length; i++) {
      const a = `${tag}a${i}`.slice(-15);
      const b = `${tag}b${i}`.slice(-15);
      sh('ip', [
        'link',
        'add',
        a,
        'netns',
        netns[0],
        'type',
        'veth',
        'peer',
        'name',
        b,
        'netns',
        netns[i],
      ]);
      const first = i === 1 ? addresses[0] : `10.77.${i}.1`;
      sh('ip', ['-n', netns[0], 'addr', 'add', `${first}/24`, 'dev', a]);
      sh('ip', ['-n', netns[i], 'addr', 'add', `${addresses[i]}/24`, 'dev', b]);
      sh('ip', ['-n', netns[0], 'link', 'set', a, 'up']);
      sh('ip', ['-n', netns[i], 'link', 'set', b, 'up']);
    }
    const hostsLines = names
      .map((n, i) => `${i === 0 ? addresses[0] : addresses[i]} ${n}`)
      .join('\n');
    const hosts: Host[] = [];
    for (const [i, name] of names.entries()) {
      const base = mkdtempSync(`/tmp/gsc-host-${name}-`);
      bases.push(base);
      const holder = spawn(
        'ip',
        [
          'netns',
          'exec',
          netns[i],
          'unshare',
          '--mount',
          '--uts',
          '--propagation',
          'private',
          'sh',
          '-c',
          SETUP,
        ],
        {
          env: {
            PATH,
            GSC_BASE: base,
            GSC_CHECKOUT: ROOT,
            GSC_FAKES: FAKES,
            GSC_NAME: name,
            GSC_HOSTS: hostsLines,
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      holders.push(holder);
      await new Promise<void>((resolve, reject) => {
        let err = '';
        holder.stderr.on('data', (d: Buffer) => (err += d.toString()));
        holder.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        holder.once('exit', (code) =>
          reject(new Error(`host ${name} did not start (${code}): ${err}`)),
        );
      });
      hosts.push(makeHost(name, addresses[i], holder.pid!));
    }
    const peers = hosts.map((h) => `${h.name} ${h.pid}`).join('\n');
    for (const h of hosts) await h.run(`printf '%s\\n' '${peers}' > /run/gsc-peers`);
    return { hosts, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

function makeHost(name: string, address: string, pid: number): Host {
  let cwd = '/root';
  return {
    name,
    address,
    pid,
    read: (file) => readFileSync(path.join(`/proc/${pid}/root`, file), 'utf8'),
    run: (command, opts = {}) =>
      new Promise((resolve) => {
        // The folder the command ends in is where the next one starts, as in one terminal.
        const script = `cd "$GSC_CWD" || exit 1\n${command}\nrc=$?\npwd > /run/gsc-cwd\nexit $rc\n`;
        const child = spawn(
          'nsenter',
          ['--target', String(pid), '--mount', '--net', '--uts', '--', 'bash', '-c', script],
          {
            env: { PATH, HOME: '/root', LANG: 'C.UTF-8', GSC_CWD: cwd },
            stdio: ['pipe', 'pipe', 'pipe'],
          },
        );
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.stdin.end(opts.input ?? '');
        const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
        child.once('close', (code) => {
          clearTimeout(timer);
          try {
            cwd = readFileSync(`/proc/${pid}/root/run/gsc-cwd`, 'utf8').trim() || cwd;
          } catch {
            /* the command never got there */
          }
          resolve({ code, stdout, stderr });
        });
      }),
  };
}

/** A network namespace with only loopback, for daemons that listen on fixed ports. */
export interface Netns {
  name: string;
  /** `ip netns exec NAME`: put it before a command to run that command inside. */
  prefix: string[];
  /** Kills every process still inside, then removes it. */
  stop(): Promise<void>;
}

/** Makes a network namespace of this process's own (loopback up); needs root and iproute2. */
export function isolatedNetwork(label: string): Netns {
  assertNetnsWorks();
  const name = `gsc${process.pid}-${label}`;
  sh('ip', ['netns', 'add', name]);
  sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    prefix: ['ip', 'netns', 'exec', name],
    stop: async () => {
      const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout;
      for (const pid of pids.split('\n').filter(Boolean).map(Number)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }
      await new Promise((r) => setTimeout(r, 200));
      spawnSync('ip', ['netns', 'del', name]);
    },
  };
}
