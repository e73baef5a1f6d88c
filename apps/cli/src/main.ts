import { Command, InvalidArgumentError } from 'commander';
import type { submit as SubmitFn } from './jobs';
import type { GetOptions } from './jobs-get';
import type { ListOptions } from './jobs-list';
import type { InstallOptions } from './install/install';
import type { ApiOptions, TimeoutOptions } from './http';
import { loadRelayConfig, loadWorkerConfig } from '../../../libs/config/src';
import { runDaemon } from './daemon';
import { handleClosedPipes } from './stdout';
import { packageVersion } from './version';

/**
 * `gpu-sidecar`: the package's bin. This file is only the command line (flags and help text);
 * each command hands over to an app or a lib. It is the one composition root
 * that may start either daemon; each command's code is imported lazily, when it runs, so that a
 * command loads only what it uses (`keygen` the tunnel lib, not a daemon).
 */
export function buildProgram(): Command {
  handleClosedPipes();
  const program = new Command('gpu-sidecar')
    .description('Encrypted relay and GPU job worker for research labs')
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .showHelpAfterError()
    .configureHelp({ sortSubcommands: false });

  program
    .command('keygen')
    .description('write a new tunnel key: 32 random bytes, mode 0600; never overwrites')
    .argument('<file>', 'where to write the key')
    .action(async (file: string) => {
      const { keygen } = await import('./keygen');
      process.exitCode = await keygen(file);
    });

  // bin/gpu-sidecar moves --env-file into GPU_SIDECAR_ENV_FILE (Node 20 would take it itself).
  const envFile = (opts: { envFile?: string }) => opts.envFile ?? process.env.GPU_SIDECAR_ENV_FILE;

  program
    .command('relay')
    .description('run the relay on the front server (RELAY_LISTEN → tunnel → worker)')
    .option('--env-file <file>', 'read variables from this file (default: .env when present)')
    .action(async (opts: { envFile?: string }) => {
      const { startRelay } = await import('../../relay/src/main');
      await runDaemon('relay', envFile(opts), loadRelayConfig, startRelay);
    });

  program
    .command('worker')
    .description('run the worker on a GPU host (tunnel → job API, queue, runners)')
    .option('--env-file <file>', 'read variables from this file (default: .env when present)')
    .action(async (opts: { envFile?: string }) => {
      const { startWorker } = await import('../../worker/src/main');
      await runDaemon('worker', envFile(opts), loadWorkerConfig, startWorker);
    });

  program
    .command('doctor')
    .description(
      "check this host's setup: keys, tunnel reachability, Docker, NVIDIA runtime, Redis, DATA_FOLDER",
    )
    .argument('[role]', 'relay or worker (default: each daemon configured here)')
    .option('--env-file <file>', "the daemon's env file (an installed unit's: the unit's view)")
    .addHelpText(
      'after',
      '\nIt checks the configuration the daemon runs with, and says which it read: --env-file,\n' +
        "else .env here, else npm start's (in the package folder), else the installed systemd\n" +
        'units (their Environment=, EnvironmentFile= and LoadCredential=), else the environment.\n' +
        'In Docker: ./docker.sh doctor (inside the container, with its environment).',
    )
    .action(async (role: string | undefined, opts: { envFile?: string }) => {
      if (role !== undefined && role !== 'relay' && role !== 'worker') {
        program.error(`doctor: role must be relay or worker, got '${role}'`);
      }
      const { doctor } = await import('./doctor/doctor');
      process.exitCode = await doctor(role as 'relay' | 'worker' | undefined, envFile(opts));
    });

  program
    .command('install')
    .description(
      'set this host up for the daemon under systemd: user, folders, key, env file, unit; then start it',
    )
    .argument('<role>', 'worker (GPU host, first: it makes the key) or relay (front host)')
    .option(
      '--gpus <list>',
      'worker: GPU_DEVICES (default: all when nvidia-smi lists GPUs, else none)',
    )
    .option('--job-uid <uid:gid>', 'worker: JOB_UID, the user jobs run as')
    .option('--listen <host:port>', 'worker: TUNNEL_LISTEN (default 0.0.0.0:8080)')
    .option('--host <name>', 'worker: how the front host reaches this one (default: the host name)')
    .option('--connect <url>', 'relay: TUNNEL_CONNECT, e.g. ws://gpu-host:8080')
    .option('--key <file>', "relay: the worker's key file, or - to read it from standard input")
    .option(
      '--root <dir>',
      'write under this folder instead of / (an image, a chroot); starts nothing',
    )
    .option('--no-start', 'write everything, start nothing')
    .action(async (role: string, opts: InstallOptions) => {
      if (role !== 'relay' && role !== 'worker') {
        program.error(`install: role must be relay or worker, got '${role}'`);
      }
      const { install } = await import('./install/install');
      process.exitCode = await install(role as 'relay' | 'worker', opts);
    });

  const urlOption = '--url <url>';
  const urlHelp =
    "the job API (default: API_LISTEN from the environment or --env-file; with a relay's " +
    'configuration, RELAY_LISTEN; else http://127.0.0.1:8000)';
  const envOption = '--env-file <file>';
  const envHelp = 'read variables from this file (default: .env when present)';
  const api = <T extends ApiOptions>(o: T): T => ({ ...o, envFile: envFile(o) });
  /** `--url`, `--env-file` and `--timeout`: a daemon that accepts but never answers is an error. */
  const withApi = (c: Command, timeoutHelp: string, seconds: number): Command =>
    c
      .option(urlOption, urlHelp)
      .option(envOption, envHelp)
      .option(`--timeout <seconds>`, timeoutHelp, parseSeconds, seconds);

  withApi(
    program
      .command('status')
      .description('one screen for a person: tunnels, GPUs, queue, recent jobs')
      .option(
        '--relay-url <url>',
        "the relay's admin address (default: ADMIN_LISTEN, else http://127.0.0.1:9464)",
      ),
    'wait this long for each daemon to answer; 0: no limit',
    10,
  ).action(async (opts: ApiOptions & TimeoutOptions & { relayUrl?: string }) => {
    const { status } = await import('./status');
    process.exitCode = await status(api(opts));
  });

  const jobs = program
    .command('jobs')
    .description('submit, list, watch, read, download and cancel jobs');
  const withJobsApi = (c: Command): Command =>
    withApi(
      c,
      'wait this long for the worker to answer, then fail; a stream (watch, logs, get) only ' +
        'until it starts; 0: no limit',
      30,
    );
  withJobsApi(
    jobs
      .command('submit')
      .description('submit a job; prints its id')
      .argument('<experiment>', 'experiment name (GET /experiments lists them)')
      .option('--params <json>', 'parameters as JSON', '{}')
      .option('--priority <n>', '1 runs first')
      .option('--key <key>', 'idempotency key: the same key returns the first job')
      .option('--file <path...>', 'input files (sent as multipart)'),
  ).action(async (experiment: string, opts: Parameters<typeof SubmitFn>[1]) => {
    const { submit } = await import('./jobs');
    process.exitCode = await submit(experiment, api(opts));
  });
  withJobsApi(
    jobs
      .command('list')
      .description('the newest jobs, one line each: id, experiment, state, progress, created')
      .option('--state <state>', 'only jobs in this state (queued, running, succeeded, ...)')
      .option('--experiment <name>', 'only jobs of this experiment')
      .option('--limit <n>', 'at most this many (1-1000)', '20')
      .option('--json', "print the API's JSON instead"),
  ).action(async (opts: ListOptions) => {
    const { list } = await import('./jobs-list');
    process.exitCode = await list(api(opts));
  });
  withJobsApi(
    jobs
      .command('get')
      .description("download a file of a job's output, streamed to disk")
      .argument('<id>', 'job id')
      .argument('<file>', 'path in the output folder (GET /jobs/ID/files lists them)')
      .option('-o, --output <path>', "where to write it; '-' for stdout (default: its name, here)")
      .option('--force', 'overwrite an existing file'),
  ).action(async (id: string, file: string, opts: GetOptions) => {
    const { get } = await import('./jobs-get');
    process.exitCode = await get(id, file, api(opts));
  });
  /** `jobs NAME <id>`: the commands that act on one job, each its function in ./jobs. */
  const byId = (
    name: 'watch' | 'logs' | 'cancel',
    description: string,
    more: (c: Command) => Command = (c) => c,
  ) =>
    withJobsApi(
      more(jobs.command(name).description(description).argument('<id>', 'job id')),
    ).action(async (id: string, opts: ApiOptions & TimeoutOptions & { follow?: boolean }) => {
      const run = (await import('./jobs'))[name];
      process.exitCode = await run(id, api(opts));
    });
  byId(
    'watch',
    'follow a job with a progress bar; exit 0 when it succeeded, 1 when it failed or was cancelled',
  );
  byId('logs', "print a job's output", (c) =>
    c.option('-f, --follow', 'keep printing until the job ends'),
  );
  byId(
    'cancel',
    'cancel a job: a queued one never starts, a running one is stopped; exit 1 when it had ended',
  );

  return program;
}

/** `--timeout SECONDS`: a number, 0 or more. */
function parseSeconds(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new InvalidArgumentError('expected a number of seconds, 0 or more.');
  }
  return n;
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.stderr.write(`gpu-sidecar: ${(err as Error).message}\n`);
      process.exit(1);
    });
}
