import { Liveness } from './liveness';

describe('liveness', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  function start(interval: number) {
    const events: string[] = [];
    const l = new Liveness(interval, {
      sendPing: () => events.push('ping'),
      dead: () => events.push('dead'),
      rtt: (ms) => events.push(`rtt:${ms}`),
    });
    return { l, events };
  }

  it('declares a silent peer dead within 3 intervals of its last frame', () => {
    const { l, events } = start(1000);
    jest.advanceTimersByTime(500);
    l.received(); // last frame at 0.5 s
    jest.advanceTimersByTime(3 * 1000 - 1);
    // The PING at start, the 1 s and 2 s ticks; dead at the 3 s tick, 2.5 s after the last frame.
    expect(events).toEqual(['ping', 'ping', 'ping', 'dead']);
    l.stop();
  });

  it('keeps a peer alive that answers every ping', () => {
    const { l, events } = start(1000);
    for (let i = 0; i < 10; i++) {
      jest.advanceTimersByTime(1000);
      l.received();
    }
    expect(events).not.toContain('dead');
    l.stop();
  });

  it('sends a PING as it starts, not one interval later, and keeps the shortest round trip', () => {
    const bodies: Buffer[] = [];
    const l = new Liveness(50, {
      sendPing: (b) => bodies.push(b),
      dead: () => undefined,
      rtt: () => undefined,
    });
    expect(bodies).toHaveLength(0); // not inside the constructor: the session is not set up yet
    jest.advanceTimersByTime(0);
    expect(bodies).toHaveLength(1);
    expect(l.baseRttMs).toBeUndefined();
    jest.advanceTimersByTime(30);
    l.pong(bodies[0]); // 30 ms
    jest.advanceTimersByTime(100); // the PING of the 50 ms tick, answered at 130 ms
    l.pong(bodies[1]); // 80 ms: queued behind a download, say
    expect(l.rttMs).toBeGreaterThanOrEqual(80);
    expect(l.baseRttMs).toBeGreaterThanOrEqual(30);
    expect(l.baseRttMs).toBeLessThan(80);
    l.stop();
  });

  it('counts only the answer to a PING of its own, once: a made-up PONG sets no round trip', () => {
    const bodies: Buffer[] = [];
    const l = new Liveness(10_000, {
      sendPing: (b) => bodies.push(b),
      dead: () => undefined,
      rtt: () => undefined,
    });
    jest.advanceTimersByTime(20);
    const forged = Buffer.alloc(8);
    forged.writeDoubleBE(performance.now() - 0.001, 0); // "1 µs": windows would grow at once
    l.pong(forged);
    expect(l.baseRttMs).toBeUndefined();
    l.pong(bodies[0]);
    expect(l.baseRttMs).toBeGreaterThanOrEqual(20);
    jest.advanceTimersByTime(20);
    l.pong(bodies[0]); // the same answer again
    expect(l.rttMs).toBeLessThan(40);
    l.stop();
  });

  it('measures the round trip from the time carried in the ping', () => {
    const bodies: Buffer[] = [];
    const events: string[] = [];
    const l = new Liveness(1000, {
      sendPing: (b) => bodies.push(b),
      dead: () => events.push('dead'),
      rtt: (ms) => events.push(`rtt:${ms}`),
    });
    jest.advanceTimersByTime(0);
    const body = bodies[0];
    jest.advanceTimersByTime(40);
    l.pong(body);
    expect(l.rttMs).toBeGreaterThanOrEqual(40);
    expect(events.some((e) => e.startsWith('rtt:'))).toBe(true);
    l.stop();
  });
});
