import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../../config/src';
import type { JobRecord, JobState } from '../job-record';
import { connect, type Redis, type RedisBackend } from './redis-connection';

/** A job's state changed (or it was created: no `previous`), by this process. */
export interface StateChange {
  record: JobRecord;
  previous?: JobState;
}

const PREFIX = 'gsc';
const recordKey = (id: string) => `${PREFIX}:job:${id}`;
const INDEX = `${PREFIX}:jobs`;
const keyKey = (key: string) => `${PREFIX}:key:${key}`;
const EVENTS = `${PREFIX}:events`;
const CANCEL = `${PREFIX}:cancel`;
/**
 * Jobs per experiment and state, field `<experiment>\t<state>` (names never hold a tab), kept
 * in the same atomic step as every record change, so /metrics reads one small hash instead of
 * every record. `COUNTS_READY` says the hash was built; without it (data from before the
 * counts, or a `DEL gsc:counts:ready` to force it) `init` recounts all records once, atomically.
 */
const COUNTS = `${PREFIX}:counts`;
const COUNTS_READY = `${PREFIX}:counts:ready`;
const countField = (experiment: string, state: string) => `${experiment}\t${state}`;

/** The Lua scripts, one file each under lua/ (copied beside the compiled code by `npm run build`). */
export const LUA_SCRIPTS = {
  /**
   * A state change, compare-and-set in Redis, so a cancel and a start racing on two worker
   * processes cannot both win; published on `gsc:events` for SSE watchers on any process.
   */
  transition: 'transition.lua',
  /** A removal, out of the counts under the state the record has then. */
  delete: 'delete.lua',
  /** The counts built from every record, once. */
  buildCounts: 'build-counts.lua',
} as const;
type Scripts = Record<keyof typeof LUA_SCRIPTS, string>;

/** Where the .lua files are: beside this module, from the sources (jest) and from dist/. */
export const LUA_DIR = path.join(__dirname, 'lua');

/**
 * Reads the scripts (each repository once, at start), each with `count-field.lua` (the counts'
 * field, as countField makes it) before it. A missing file stops the worker at start, saying
 * which, rather than failing its first job.
 */
export function loadScripts(dir = LUA_DIR): Scripts {
  const read = (file: string) => {
    try {
      return readFileSync(path.join(dir, file), 'utf8');
    } catch (err) {
      throw new Error(
        `job records: cannot read the Lua script ${path.join(dir, file)} ` +
          `(${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); ` +
          '`npm run build` copies libs/jobs/src/queue/lua/ into dist/',
      );
    }
  };
  const prelude = read('count-field.lua');
  return Object.fromEntries(
    Object.entries(LUA_SCRIPTS).map(([name, file]) => [name, `${prelude}\n${read(file)}`]),
  ) as Scripts;
}

/**
 * Job records in Redis: the live, shared view of every job (`gsc:job:<id>` JSON, an index sorted
 * by creation time, idempotency keys), plus the pub/sub channels for events and cancellation.
 * job.json on disk mirrors each record for the results folder.
 */
export class JobRecordsRepository {
  private readonly cmd: Redis;
  /** For the executor: waits out a Redis restart instead of failing, so no ending is lost. */
  private readonly patient: Redis;
  private readonly sub: Redis;
  /**
   * `event:<id>` with the record on each change (from any process); `cancel` with a job id;
   * `state` (StateChange) for each change of state made by this process (for metrics).
   */
  readonly bus = new EventEmitter();
  private readonly lua = loadScripts();

  constructor(backend: RedisBackend, log: Logger) {
    this.cmd = connect(backend.options, { maxRetriesPerRequest: 3 });
    this.patient = connect(backend.options, { maxRetriesPerRequest: null });
    this.sub = connect(backend.options, { maxRetriesPerRequest: null });
    this.bus.setMaxListeners(0);
    for (const c of [this.cmd, this.patient, this.sub])
      c.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
    this.sub.on('message', (channel: string, message: string) => {
      if (channel === CANCEL) this.bus.emit('cancel', message);
      else if (channel === EVENTS) {
        const rec = parse(message);
        if (rec) this.bus.emit(`event:${rec.id}`, rec);
      }
    });
  }

  /** The command connection, for the health probe (PING, INFO, CONFIG GET: reads only). */
  get client(): Redis {
    return this.cmd;
  }

  async init(): Promise<void> {
    await this.sub.subscribe(EVENTS, CANCEL);
    await this.buildCounts();
  }

  /** Builds the per experiment and state counts from the records if they are not built yet. */
  async buildCounts(): Promise<number> {
    return (await this.cmd.eval(
      this.lua.buildCounts,
      3,
      COUNTS,
      COUNTS_READY,
      INDEX,
      recordKey(''),
    )) as number;
  }

  /** Jobs per experiment and state, from the counts kept with every change (one HGETALL). */
  async counts(): Promise<Map<string, Map<string, number>>> {
    const out = new Map<string, Map<string, number>>();
    for (const [field, n] of Object.entries(await this.cmd.hgetall(COUNTS))) {
      const tab = field.indexOf('\t');
      if (tab < 0) continue;
      const experiment = field.slice(0, tab);
      const byState = out.get(experiment) ?? new Map<string, number>();
      byState.set(field.slice(tab + 1), Number(n));
      out.set(experiment, byState);
    }
    return out;
  }

  /** Claims an idempotency key for `id`; returns the id that already holds it, if any. */
  async claimKey(key: string, id: string, ttlMs: number): Promise<string | undefined> {
    const ok = await this.cmd.set(keyKey(key), id, 'PX', ttlMs, 'NX');
    if (ok === 'OK') return undefined;
    return (await this.cmd.get(keyKey(key))) ?? undefined;
  }

  async releaseKey(key: string): Promise<void> {
    await this.cmd.del(keyKey(key));
  }

  async create(rec: JobRecord): Promise<void> {
    await this.cmd
      .multi()
      .set(recordKey(rec.id), JSON.stringify(rec))
      .zadd(INDEX, Date.parse(rec.createdAt), rec.id)
      .hincrby(COUNTS, countField(rec.experiment, rec.state), 1)
      .publish(EVENTS, JSON.stringify(rec))
      .exec();
    this.bus.emit('state', { record: rec } satisfies StateChange);
  }

  async get(id: string, opts: { patient?: boolean } = {}): Promise<JobRecord | undefined> {
    const raw = await (opts.patient ? this.patient : this.cmd).get(recordKey(id));
    return raw ? parse(raw) : undefined;
  }

  /**
   * Applies `patch` when the job is in one of `from` (any state when empty). Returns the record
   * after the change, or `{ changed: false, record }` as it was; undefined when no such job.
   */
  async transition(
    id: string,
    from: JobState[],
    patch: Partial<JobRecord>,
    opts: { patient?: boolean } = {},
  ): Promise<{ changed: boolean; record: JobRecord } | undefined> {
    const res = (await (opts.patient ? this.patient : this.cmd).eval(
      this.lua.transition,
      3,
      recordKey(id),
      EVENTS,
      COUNTS,
      JSON.stringify(from),
      JSON.stringify(patch),
    )) as [number, string, string?] | null;
    if (!res) return undefined;
    const record = parse(res[1])!;
    if (res[0] === 1 && res[2] !== record.state) {
      this.bus.emit('state', { record, previous: res[2] as JobState } satisfies StateChange);
    }
    return { changed: res[0] === 1, record };
  }

  /** Newest first, optionally filtered; scans the index in pages until `limit` match. */
  async list(filter: {
    experiment?: string;
    state?: JobState;
    limit: number;
  }): Promise<JobRecord[]> {
    const out: JobRecord[] = [];
    const page = Math.max(filter.limit, 100);
    for (let start = 0; out.length < filter.limit; start += page) {
      const ids = await this.cmd.zrevrange(INDEX, start, start + page - 1);
      if (ids.length === 0) break;
      const raws = await this.cmd.mget(ids.map(recordKey));
      for (const raw of raws) {
        const rec = raw ? parse(raw) : undefined;
        if (!rec) continue;
        if (filter.experiment && rec.experiment !== filter.experiment) continue;
        if (filter.state && rec.state !== filter.state) continue;
        out.push(rec);
        if (out.length >= filter.limit) break;
      }
    }
    return out;
  }

  /** Ids created before `beforeMs`, oldest first. */
  async createdBefore(beforeMs: number, max = 1000): Promise<string[]> {
    return this.cmd.zrangebyscore(INDEX, '-inf', `(${beforeMs}`, 'LIMIT', 0, max);
  }

  async listByState(state: JobState): Promise<JobRecord[]> {
    return this.list({ state, limit: Number.MAX_SAFE_INTEGER });
  }

  async delete(rec: JobRecord): Promise<void> {
    const keys = [recordKey(rec.id), COUNTS, INDEX, ...(rec.key ? [keyKey(rec.key)] : [])];
    await this.cmd.eval(this.lua.delete, keys.length, ...keys, rec.id);
  }

  /** Asks every worker process to stop job `id` if it runs it. */
  async publishCancel(id: string): Promise<void> {
    await this.cmd.publish(CANCEL, id);
  }

  async close(): Promise<void> {
    this.bus.removeAllListeners();
    await Promise.allSettled([this.sub.quit(), this.cmd.quit(), this.patient.quit()]);
  }
}

const ORDER = [
  'id',
  'experiment',
  'state',
  'progress',
  'worker',
  'gpu',
  'attempts',
  'createdAt',
  'startedAt',
  'finishedAt',
  'exitCode',
  'error',
];

function parse(raw: string): JobRecord | undefined {
  try {
    const rec = JSON.parse(raw) as Record<string, unknown>;
    // Lua's cjson does not keep key order: put the documented fields first, in the order docs/ARCHITECTURE.md lists them.
    const out: Record<string, unknown> = {};
    for (const k of ORDER) out[k] = rec[k] ?? null;
    for (const [k, v] of Object.entries(rec)) if (!(k in out) && v !== null) out[k] = v;
    return out as unknown as JobRecord;
  } catch {
    return undefined;
  }
}
