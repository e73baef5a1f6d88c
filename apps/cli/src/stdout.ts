/**
 * Output into a pipe that closes early (`gpu-sidecar status | head -1`): the reader is gone, which
 * is not an error of ours. Node reports it as an EPIPE 'error' event on process.stdout, and with
 * no listener that is an uncaught exception with a stack trace. Here it only marks stdout gone:
 * later writes go nowhere, a command finishes with its own exit code, and one that would write
 * on and on (`jobs logs -f`) stops.
 */
let gone = false;
const waiting = new Set<() => void>();

/** Installs the listeners on stdout and stderr (once, before any command runs). */
export function handleClosedPipes(): void {
  const onError = (stream: NodeJS.WriteStream) => (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
    if (stream !== process.stdout) return;
    gone = true;
    for (const wake of waiting) wake();
    waiting.clear();
  };
  process.stdout.on('error', onError(process.stdout));
  process.stderr.on('error', onError(process.stderr));
}

/** Whether stdout's reader went away. */
export function stdoutGone(): boolean {
  return gone;
}

/**
 * Writes `chunk` to stdout, waiting for 'drain' when its buffer is full; resolves false once the
 * reader is gone (then nothing more should be written), true otherwise.
 */
export async function writeOut(chunk: string | Uint8Array): Promise<boolean> {
  if (gone) return false;
  if (process.stdout.write(chunk)) return !gone;
  await new Promise<void>((resolve) => {
    const wake = () => {
      waiting.delete(wake);
      process.stdout.off('drain', wake);
      resolve();
    };
    waiting.add(wake);
    process.stdout.once('drain', wake);
  });
  return !gone;
}
