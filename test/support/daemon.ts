import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { finished } from 'node:stream/promises';

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
  /** The exit code and signal, once the process has exited and its output has been read. */
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

function assertBuilt(): void {
  if (!existsSync(path.join(ROOT, 'dist', 'apps', 'cli', 'src', 'main.js'))) {
    throw new Error(
      'end-to-end tests run the built daemons: run `npm run build` first (npm test does)',
    );
  }
}

/**
 * How long, after the exit, to wait for the last of the output. Node emits 'exit' possibly
 * before the pipes are read to their end; they end at once unless a child of the daemon (the
 * launcher's helper) still holds them, so the wait is bounded rather than 'close'.
 */
const OUTPUT_AFTER_EXIT_MS = 2_000;

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
  const outputEnded = Promise.all([finished(child.stdout), finished(child.stderr)]).catch(
    () => undefined,
  );
  /** The exit's code and signal, once the output has been read to its end (or the bound). */
  const exited = once(child, 'exit').then(async (codes) => {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      outputEnded,
      new Promise((r) => (timer = setTimeout(r, OUTPUT_AFTER_EXIT_MS))),
    ]);
    clearTimeout(timer);
    return codes as [number | null, NodeJS.Signals | null];
  });
  // A spawn that fails rejects it; whoever awaits it sees that, and nobody else has to.
  exited.catch(() => undefined);

  return {
    child,
    exited,
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
        let done = false;
        const onExit = () => {
          if (done) return;
          cleanup();
          if (err.includes(text) || out.includes(text)) resolve();
          else reject(new Error(`exited before logging '${text}'; stderr:\n${err.slice(-4000)}`));
        };
        const cleanup = () => {
          done = true;
          clearTimeout(timer);
          child.stderr.off('data', check);
          child.stdout.off('data', check);
        };
        child.stderr.on('data', check);
        child.stdout.on('data', check);
        void exited.then(onExit, onExit);
        check();
      }),
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const [code, sig] = await exited;
      return code ?? sig;
    },
  };
}

/** Waits for the process to exit on its own; returns its exit code. */
export async function exitCode(p: DaemonProcess, timeoutMs = 20_000): Promise<number | null> {
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const [code] = await p.exited;
  clearTimeout(timer);
  return code;
}
