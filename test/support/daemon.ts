import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import path from 'node:path';

export const ROOT = path.join(__dirname, '..', '..');
export const BIN = path.join(ROOT, 'bin', 'gpu-sidecar');

/** A built `gpu-sidecar` running as a child process, with what it printed so far. */
export interface DaemonProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when a log line containing `text` appears (or rejects when the process exits first). */
  waitForLog(text: string, timeoutMs?: number): Promise<void>;
  /** SIGTERM (or `signal`), then waits for the exit; returns the exit code or signal. */
  stop(signal?: NodeJS.Signals): Promise<number | string | null>;
}

function assertBuilt(): void {
  if (!existsSync(path.join(ROOT, 'dist', 'apps', 'cli', 'src', 'main.js'))) {
    throw new Error(
      'end-to-end tests run the built daemons: run `npm run build` first (npm test does)',
    );
  }
}

/** Runs `gpu-sidecar ...args` with exactly `env` (plus PATH/HOME) in `cwd`. */
export function runCli(args: string[], env: Record<string, string>, cwd = ROOT): DaemonProcess {
  assertBuilt();
  const child = spawn(BIN, args, {
    cwd,
    env: {
      PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
      HOME: process.env.HOME ?? '/tmp',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = once(child, 'exit');

  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitForLog: (text, timeoutMs = 20_000) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          cleanup();
          reject(
            new Error(
              `no log line with '${text}' after ${timeoutMs} ms; stderr:\n${err.slice(-4000)}`,
            ),
          );
        }, timeoutMs);
        const check = () => {
          if (err.includes(text) || out.includes(text)) {
            cleanup();
            resolve();
          }
        };
        const onExit = () => {
          cleanup();
          if (err.includes(text) || out.includes(text)) resolve();
          else reject(new Error(`exited before logging '${text}'; stderr:\n${err.slice(-4000)}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          child.stderr.off('data', check);
          child.stdout.off('data', check);
          child.off('exit', onExit);
        };
        child.stderr.on('data', check);
        child.stdout.on('data', check);
        child.once('exit', onExit);
        check();
      }),
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const [code, sig] = (await exited) as [number | null, NodeJS.Signals | null];
      return code ?? sig;
    },
  };
}

/** Waits for the process to exit on its own; returns its exit code. */
export async function exitCode(p: DaemonProcess, timeoutMs = 20_000): Promise<number | null> {
  if (p.child.exitCode !== null) return p.child.exitCode;
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const [code] = (await once(p.child, 'exit')) as [number | null];
  clearTimeout(timer);
  return code;
}
