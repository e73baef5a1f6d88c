import { apiUrl, call, colors, errorText, type ApiOptions, type TimeoutOptions } from './http';
import { writeOut } from './stdout';

/** The fields of a job record `jobs list` shows (GET /jobs, libs/jobs/README.md). */
interface JobRow {
  id: string;
  experiment: string;
  state: string;
  progress?: number;
  createdAt?: string;
  error?: string | null;
}

export interface ListOptions extends ApiOptions, TimeoutOptions {
  state?: string;
  experiment?: string;
  limit: string;
  json?: boolean;
}

/**
 * `jobs list`: the newest jobs (GET /jobs, its `state`, `experiment` and `limit` filters), one
 * line each in aligned columns (id first, so `awk '{print $1}'` gives the ids), or the API's
 * JSON with --json. The API checks the filters and says what is wrong with one.
 */
export async function list(opts: ListOptions): Promise<number> {
  const q = new URLSearchParams({ limit: opts.limit });
  if (opts.state) q.set('state', opts.state);
  if (opts.experiment) q.set('experiment', opts.experiment);
  const res = await call(`${apiUrl(opts)}/jobs?${q}`, opts);
  if (res.status !== 200) {
    process.stderr.write(`gpu-sidecar jobs: ${await errorText(res)}\n`);
    return 1;
  }
  const jobs = (await res.json()) as JobRow[];
  if (opts.json) {
    await writeOut(`${JSON.stringify(jobs, null, 2)}\n`);
    return 0;
  }
  if (jobs.length === 0) {
    process.stderr.write('no jobs\n');
    return 0;
  }
  const c = colors();
  const rows = jobs.map((j) => [
    j.id,
    j.experiment,
    j.state,
    `${j.progress ?? 0}%`,
    String(j.createdAt ?? '').slice(0, 19),
    j.error ? String(j.error).replace(/\s+/g, ' ').slice(0, 60) : '',
  ]);
  const head = ['ID', 'EXPERIMENT', 'STATE', 'PROGRESS', 'CREATED', 'ERROR'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[], paint = (_i: number, s: string) => s) =>
    cells
      .map((cell, i) => paint(i, i === cells.length - 1 ? cell : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  const stateColor = (state: string, s: string) =>
    state === 'succeeded'
      ? c.green(s)
      : state === 'failed' || state === 'cancelled'
        ? c.red(s)
        : c.yellow(s);
  let text = `${c.bold(line(head))}\n`;
  for (const r of rows) text += `${line(r, (i, s) => (i === 2 ? stateColor(r[2], s) : s))}\n`;
  await writeOut(text);
  return 0;
}
