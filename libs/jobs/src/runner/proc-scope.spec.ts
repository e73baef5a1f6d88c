import { spawn } from 'node:child_process';
import { readProc, ProcScope } from './proc-scope';

const alive = (pid: number) => {
  const p = readProc(pid);
  return p !== undefined && p.state !== 'Z';
};

const started = (env: Record<string, string>, detached = true) => {
  const c = spawn('sleep', ['300'], {
    env: { PATH: process.env.PATH!, ...env },
    detached,
    stdio: 'ignore',
  });
  c.unref();
  return c.pid!;
};

describe('the /proc fallback', () => {
  it("finds a job's processes by their environment when the first pid never came", async () => {
    const id = `marker-${process.pid}-${Date.now()}`;
    const mine = started({ JOB_ID: id });
    const other = started({ JOB_ID: `${id}-other` });
    try {
      await new ProcScope(id).kill();
      expect(alive(mine)).toBe(false);
      expect(alive(other)).toBe(true);
    } finally {
      for (const pid of [mine, other]) if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  it('follows the job from its first process: its children, its session, never older processes', async () => {
    const id = `tree-${process.pid}-${Date.now()}`;
    const before = started({});
    const leader = spawn('sh', ['-c', 'sleep 300 & setsid env -i sleep 300 & wait'], {
      detached: true,
      stdio: 'ignore',
      env: { PATH: process.env.PATH!, JOB_ID: id },
    });
    const scope = new ProcScope(id);
    scope.watch(leader.pid!);
    try {
      let found: number[] = [];
      for (let i = 0; i < 100 && found.length < 3; i++) {
        await new Promise((r) => setTimeout(r, 20));
        found = scope.live();
      }
      expect(found).toHaveLength(3);
      expect(found).not.toContain(before);
      await scope.kill();
      expect(found.filter(alive)).toEqual([]);
      expect(alive(before)).toBe(true);
    } finally {
      process.kill(before, 'SIGKILL');
    }
  });
});
