import { createWriteStream } from 'node:fs';
import { link, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { apiUrl, call, errorText, type ApiOptions, type TimeoutOptions } from './http';
import { writeOut } from './stdout';

export interface GetOptions extends ApiOptions, TimeoutOptions {
  /** Where to write; `-` is stdout; default: the file's own name in the current folder. */
  output?: string;
  /** Overwrite an existing file. */
  force?: boolean;
}

function fail(message: string): number {
  process.stderr.write(`gpu-sidecar jobs: ${message}\n`);
  return 1;
}

/**
 * The file's path in the job's output folder, each segment URL-encoded; undefined for a path
 * that is not inside it. `.` and `..` are refused here because encodeURIComponent leaves dots
 * alone and fetch resolves them: `jobs get ID ../../jobs` would ask GET /jobs, not a file.
 */
function filePath(file: string): string | undefined {
  const segments = file.split('/').filter((s) => s !== '');
  if (segments.length === 0 || segments.some((s) => s === '.' || s === '..')) return undefined;
  return segments.map(encodeURIComponent).join('/');
}

/**
 * `jobs get ID FILE`: downloads one file of a job's output (GET /jobs/:id/files/<FILE>) and
 * streams it to disk, never whole in memory. The local path comes only from the command line
 * (`-o PATH`, a folder to put it in, or `-` for stdout; else FILE's own last segment, here), never
 * from the worker's answer, so a worker cannot make the CLI write anywhere else; the worker checks
 * that FILE stays inside the job's output folder. The download goes to `<name>.part-<pid>` beside
 * the target and takes its name only once complete: a download cut half-way leaves neither a
 * partial file nor, with --force, a clobbered old one. Without --force the final step is a hard
 * link, which fails if the name exists by then, so an existing file is never replaced.
 */
export async function get(id: string, file: string, opts: GetOptions): Promise<number> {
  const inOutput = filePath(file);
  if (!inOutput) {
    return fail(
      `FILE must be a path in the job's output folder, like results/model.pt; got '${file}'`,
    );
  }
  let target = opts.output ?? basename(file);
  const toStdout = target === '-';
  if (!toStdout && !target) return fail(`cannot name a local file after '${file}': use -o PATH`);
  if (!toStdout) {
    const st = await stat(target).catch(() => undefined);
    if (st?.isDirectory()) target = join(target, basename(file));
    if (!opts.force && (await stat(target).catch(() => undefined))) return exists(target);
  }
  const url = `${apiUrl(opts)}/jobs/${encodeURIComponent(id)}/files/${inOutput}`;
  // The API never redirects: a redirect would only take the download somewhere else.
  const res = await call(url, opts, { redirect: 'error' }, true);
  if (res.status !== 200) return fail(await errorText(res));
  const body = Readable.fromWeb(res.body! as never);
  if (toStdout) {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (!(await writeOut(chunk))) {
        body.destroy(); // the reader went away (`| head`)
        break;
      }
    }
    return 0;
  }
  const part = `${target}.part-${process.pid}`;
  const out = createWriteStream(part, { flags: 'wx', mode: 0o644 });
  try {
    await pipeline(body, out);
  } catch (err) {
    body.destroy();
    await rm(part, { force: true });
    // fetch says only "terminated" when the body breaks off; its cause says why.
    const cause = (err as { cause?: { message?: string } }).cause?.message;
    const why = `${(err as Error).message}${cause ? ` (${cause})` : ''}`;
    return fail(`cannot download ${file} to ${target}: ${why}`);
  }
  try {
    if (opts.force) await rename(part, target);
    else await link(part, target);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return e.code === 'EEXIST' ? exists(target) : fail(`cannot write ${target}: ${e.message}`);
  } finally {
    await rm(part, { force: true });
  }
  process.stderr.write(`wrote ${target} (${out.bytesWritten} bytes)\n`);
  return 0;
}

function exists(target: string): number {
  return fail(`${target} exists: use --force to overwrite it, or -o PATH`);
}
