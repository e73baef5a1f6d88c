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
    expect(events).toEqual(['ping', 'ping', 'dead']); // dead at the 3 s tick, 2.5 s after it
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

  it('measures the round trip from the time carried in the ping', () => {
    const { l, events } = start(1000);
    const body = Buffer.alloc(8);
    body.writeDoubleBE(performance.now(), 0);
    jest.advanceTimersByTime(40);
    l.pong(body);
    expect(l.rttMs).toBeGreaterThanOrEqual(40);
    expect(events.some((e) => e.startsWith('rtt:'))).toBe(true);
    l.stop();
  });
});
