import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { silentLogger } from '../../../config/src';
import type { JobRecord } from '../job-record';
import { JobRecordsRepository, loadScripts, LUA_DIR, LUA_SCRIPTS } from './job-records.repository';
import { connect } from './redis-connection';
import { jobRecord } from '../testing/records';

// The scripts themselves run against a real Redis in test/integration/jobs.int-spec.ts ("job
// records (Lua) against a real Redis"); here, what the TypeScript side makes of Redis's answers.
jest.mock('./redis-connection', () => ({ connect: jest.fn() }));

/** What the repository asks of its three connections; each answer set per test. */
class FakeRedis extends EventEmitter {
  eval = jest.fn();
  get = jest.fn();
  hgetall = jest.fn();
  zrevrange = jest.fn();
  mget = jest.fn();
  subscribe = jest.fn(async () => 2);
  quit = jest.fn(async () => 'OK');
}

const record = jobRecord;

describe('JobRecordsRepository', () => {
  let cmd: FakeRedis;
  let patient: FakeRedis;
  let sub: FakeRedis;
  let repo: JobRecordsRepository;

  beforeEach(() => {
    [cmd, patient, sub] = [new FakeRedis(), new FakeRedis(), new FakeRedis()];
    const made = [cmd, patient, sub];
    jest.mocked(connect).mockImplementation(() => made.shift() as never);
    repo = new JobRecordsRepository(
      { options: {}, describe: 'fake', stop: async () => {} },
      silentLogger(),
    );
  });

  describe('transition', () => {
    it('sends the Lua script with the record, events and counts keys, from and patch as JSON', async () => {
      cmd.eval.mockResolvedValue([1, JSON.stringify(record({ state: 'running' })), 'queued']);
      await repo.transition('id-1', ['queued'], { state: 'running' });
      expect(cmd.eval).toHaveBeenCalledWith(
        loadScripts().transition,
        3,
        'gsc:job:id-1',
        'gsc:events',
        'gsc:counts',
        '["queued"]',
        '{"state":"running"}',
      );
      expect(patient.eval).not.toHaveBeenCalled();
    });

    it('goes through the patient connection when asked (the executor waits out a Redis restart)', async () => {
      patient.eval.mockResolvedValue([1, JSON.stringify(record()), 'queued']);
      await repo.transition('id-1', [], { progress: 5 }, { patient: true });
      expect(patient.eval).toHaveBeenCalled();
      expect(cmd.eval).not.toHaveBeenCalled();
    });

    it('reports a change, and a change of state to this process (for metrics)', async () => {
      const states: unknown[] = [];
      repo.bus.on('state', (c) => states.push(c));
      const after = record({ state: 'running' });
      cmd.eval.mockResolvedValue([1, JSON.stringify(after), 'queued']);
      expect(await repo.transition(after.id, ['queued'], { state: 'running' })).toEqual({
        changed: true,
        record: after,
      });
      expect(states).toEqual([{ record: after, previous: 'queued' }]);
      // A change within the same state (progress) is no change of state.
      cmd.eval.mockResolvedValue([1, JSON.stringify({ ...after, progress: 7 }), 'running']);
      expect(await repo.transition(after.id, [], { progress: 7 })).toMatchObject({ changed: true });
      expect(states).toHaveLength(1);
    });

    it('returns the record as it is when it was in none of the states, undefined when it is gone', async () => {
      const states: unknown[] = [];
      repo.bus.on('state', (c) => states.push(c));
      cmd.eval.mockResolvedValue([0, JSON.stringify(record({ state: 'cancelled' }))]);
      expect(await repo.transition('x', ['queued'], { state: 'running' })).toEqual({
        changed: false,
        record: record({ state: 'cancelled' }),
      });
      cmd.eval.mockResolvedValue(null);
      expect(await repo.transition('x', ['queued'], { state: 'running' })).toBeUndefined();
      expect(states).toEqual([]);
    });
  });

  it('reads a record with the documented fields first, in order, missing ones null, null extras dropped', async () => {
    // As Lua's cjson writes it: keys in any order, a field it never had absent.
    cmd.get.mockResolvedValue(
      '{"error":null,"pid":12,"key":null,"state":"running","id":"a","experiment":"e","progress":3}',
    );
    const rec = await repo.get('a');
    expect(Object.keys(rec!)).toEqual([
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
      'pid',
    ]);
    expect(rec).toMatchObject({ state: 'running', worker: null, pid: 12 });
    cmd.get.mockResolvedValue('not json');
    expect(await repo.get('a')).toBeUndefined();
  });

  it('reads the counts hash into experiment → state → number, skipping a field without a tab', async () => {
    cmd.hgetall.mockResolvedValue({
      'a\tqueued': '2',
      'a\trunning': '1',
      'b\tfailed': '0',
      junk: '9',
    });
    const counts = await repo.counts();
    expect([...counts.keys()]).toEqual(['a', 'b']);
    expect(Object.fromEntries(counts.get('a')!)).toEqual({ queued: 2, running: 1 });
    expect(Object.fromEntries(counts.get('b')!)).toEqual({ failed: 0 });
  });

  it('lists newest first, filtered, in pages until the limit is met', async () => {
    const recs = Array.from({ length: 150 }, (_, i) =>
      record({ id: `id-${i}`, state: i % 3 === 0 ? 'failed' : 'succeeded' }),
    );
    cmd.zrevrange.mockImplementation(async (_k: string, start: number, stop: number) =>
      recs.slice(start, stop + 1).map((r) => r.id),
    );
    cmd.mget.mockImplementation(async (keys: string[]) =>
      keys.map((k) => JSON.stringify(recs.find((r) => `gsc:job:${r.id}` === k))),
    );
    const failed = await repo.list({ state: 'failed', limit: 45 });
    expect(failed.map((r) => r.id)).toEqual(
      recs
        .filter((_, i) => i % 3 === 0)
        .slice(0, 45)
        .map((r) => r.id),
    );
    expect(cmd.zrevrange).toHaveBeenCalledTimes(2); // 100 per page: the second page finished it
  });

  it("hands on a cancel and another process's record events from pub/sub", async () => {
    await repo.init();
    expect(sub.subscribe).toHaveBeenCalledWith('gsc:events', 'gsc:cancel');
    const cancels: string[] = [];
    const events: JobRecord[] = [];
    repo.bus.on('cancel', (id: string) => cancels.push(id));
    repo.bus.on('event:a', (r: JobRecord) => events.push(r));
    sub.emit('message', 'gsc:cancel', 'a');
    sub.emit('message', 'gsc:events', JSON.stringify(record({ id: 'a', state: 'running' })));
    sub.emit('message', 'gsc:events', JSON.stringify(record({ id: 'b' })));
    sub.emit('message', 'gsc:events', 'not json');
    expect(cancels).toEqual(['a']);
    expect(events.map((r) => r.state)).toEqual(['running']);
  });
});

describe('the Lua scripts (lua/*.lua)', () => {
  it('are read at start, each with the count field function before it', () => {
    const prelude = readFileSync(path.join(LUA_DIR, 'count-field.lua'), 'utf8');
    expect(prelude).toContain(
      "local function countField(rec, state) return rec.experiment .. '\\t' .. state end",
    );
    const scripts = loadScripts();
    for (const [name, file] of Object.entries(LUA_SCRIPTS)) {
      const text = scripts[name as keyof typeof LUA_SCRIPTS];
      expect(text).toBe(`${prelude}\n${readFileSync(path.join(LUA_DIR, file), 'utf8')}`);
    }
    expect(scripts.transition).toContain("redis.call('PUBLISH', KEYS[2], out)");
  });

  it('a missing one stops the repository at start, naming the file and how it gets there', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'gsc-lua-'));
    writeFileSync(path.join(dir, 'count-field.lua'), '-- prelude\n');
    writeFileSync(path.join(dir, 'transition.lua'), 'return 1\n');
    expect(() => loadScripts(dir)).toThrow(
      `cannot read the Lua script ${path.join(dir, 'delete.lua')} (ENOENT); \`npm run build\` copies`,
    );
  });
});
