import { Backoff } from './backoff';

describe('reconnect backoff', () => {
  it('doubles up to the cap, with half of each delay jittered', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000 }, () => 1);
    expect([b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 800, 1000]);
    const low = new Backoff({ initialMs: 100, maxMs: 1000 }, () => 0);
    expect([low.next(), low.next()]).toEqual([50, 100]);
  });

  it('resets only after a session that stayed up long enough', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 10_000, stableMs: 1000 }, () => 1);
    b.next();
    b.next();
    b.sessionEnded(999);
    expect(b.next()).toBe(400);
    b.sessionEnded(1000);
    expect(b.next()).toBe(100);
  });
});
