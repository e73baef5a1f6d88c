import { BdpGrowth } from './bdp-growth';
import { BDP_STREAM_WINDOW, MAX_STREAM_WINDOW } from './protocol';

const MiB = 1024 * 1024;

/**
 * A receiver at its cap over a link of `rateBps` (bytes/ms here) and round trip `rtt` ms: credit
 * is granted every `step` ms, and what arrives per step is the window per round trip or the
 * link's rate, whichever is lower (the window, or the link, is the limit).
 */
function drive(g: BdpGrowth, o: { rtt: number; rate: number; window: number; ms: number }) {
  let t = 0;
  let credited = 0;
  let window = o.window;
  const events: string[] = [];
  const times: number[] = [];
  const step = o.rtt / 4;
  for (; t <= o.ms; t += step) {
    credited += Math.min(window / o.rtt, o.rate) * step;
    const undo = g.observe(t, credited, o.rtt);
    if (undo !== undefined) {
      events.push(`undo ${window / MiB}->${undo / MiB}`);
      times.push(t);
      window = undo;
    }
    if (g.mayGrow(window, t)) {
      g.grew(t, window);
      events.push(`grow ${window / MiB}->${(2 * window) / MiB}`);
      times.push(t);
      window *= 2;
    }
  }
  return { window, events, times };
}

describe('BdpGrowth: a window past its cap, sized to the bandwidth-delay product', () => {
  it('grows while the window is the limit, and undoes the one doubling that did not pay', () => {
    // 125 MB/s over 20 ms: a BDP of 2.5 MB. 1 MiB, 2 MiB and 4 MiB each carry more per round
    // trip than the window before; 8 MiB carries what 4 MiB did, so it goes back to 4 MiB.
    const r = drive(new BdpGrowth(), {
      rtt: 20,
      rate: 125_000,
      window: MAX_STREAM_WINDOW,
      ms: 2000,
    });
    expect(r.events.slice(0, 4)).toEqual(['grow 1->2', 'grow 2->4', 'grow 4->8', 'undo 8->4']);
    expect(r.window).toBe(4 * MiB);
    // Later trials of 8 MiB fail as well, each after a wait twice the one before: 16, 32 and
    // 64 round trips (320, 640, 1280 ms) after the failure.
    const retries = r.events.slice(4);
    expect(retries.filter((e) => e === 'grow 4->8').length).toBe(retries.length / 2);
    const waits = r.times
      .slice(4)
      .filter((_, i) => i % 2 === 0)
      .map((t, i) => t - r.times[3 + 2 * i]);
    expect(waits).toEqual([320, 640].slice(0, waits.length));
    expect(waits.length).toBeGreaterThanOrEqual(2);
  });

  it('does not grow a window that is already past the BDP by more than twice, and undoes one that is past it', () => {
    // 12.5 MB/s over 50 ms: a BDP of 625 KB. 1 MiB already carries the link's rate; a round
    // trip carries more than half of it, so one doubling is tried, and undone.
    const r = drive(new BdpGrowth(), {
      rtt: 50,
      rate: 12_500,
      window: MAX_STREAM_WINDOW,
      ms: 3000,
    });
    expect(r.events.slice(0, 2)).toEqual(['grow 1->2', 'undo 2->1']);
    expect(r.events.length).toBeLessThanOrEqual(4); // one retry at most in 3 s (after 0.8 s)
    expect(r.window).toBe(MAX_STREAM_WINDOW);
    // 4 MiB over that link: a round trip carries 15 % of it, no trial at all.
    const deep = drive(new BdpGrowth(), { rtt: 50, rate: 12_500, window: 4 * MiB, ms: 3000 });
    expect(deep.events).toEqual([]);
  });

  it('stops at BDP_STREAM_WINDOW however fast the link', () => {
    const r = drive(new BdpGrowth(), {
      rtt: 100,
      rate: 1e9,
      window: MAX_STREAM_WINDOW,
      ms: 10_000,
    });
    expect(r.window).toBe(BDP_STREAM_WINDOW);
    expect(r.events.at(-1)).toBe(`grow ${BDP_STREAM_WINDOW / 2 / MiB}->${BDP_STREAM_WINDOW / MiB}`);
  });

  it('grows nothing without a measured round trip', () => {
    const g = new BdpGrowth();
    for (let t = 0, c = 0; t < 1000; t += 5, c += MiB) {
      expect(g.observe(t, c, undefined)).toBeUndefined();
      expect(g.mayGrow(MAX_STREAM_WINDOW, t)).toBe(false);
    }
  });

  /** Grants every 5 ms from `from` to `to` ms, carrying `perRtt` bytes per 20 ms round trip. */
  function feed(g: BdpGrowth, c: { t: number; credited: number }, to: number, perRtt: number) {
    const results: (number | undefined)[] = [];
    for (; c.t < to;) {
      c.t += 5;
      c.credited += perRtt / 4;
      results.push(g.observe(c.t, c.credited, 20));
    }
    return results.filter((r) => r !== undefined);
  }

  it('judges a doubling only by a measurement that started a round trip after it', () => {
    const g = new BdpGrowth();
    const c = { t: 0, credited: 0 };
    g.observe(0, 0, 20);
    feed(g, c, 80, MiB); // 4 round trips of 1 MiB at a 1 MiB window: the window is the limit
    expect(g.mayGrow(MiB, c.t)).toBe(true);
    g.grew(80, MiB);
    expect(g.mayGrow(2 * MiB, c.t)).toBe(false); // one trial at a time
    // The measurement that started with the doubling (its credit still on the way) still sees
    // 1 MiB per round trip: not counted against it.
    expect(feed(g, c, 160, MiB)).toEqual([]);
    // The next one, started at 160 ms (>= 80 + 20), carries 2 MiB per round trip: it paid.
    expect(feed(g, c, 240, 2 * MiB)).toEqual([]);
    expect(g.mayGrow(2 * MiB, c.t)).toBe(true);
  });

  it('undoes a doubling that did not pay, and tries again only after 16 round trips', () => {
    const g = new BdpGrowth();
    const c = { t: 0, credited: 0 };
    g.observe(0, 0, 20);
    feed(g, c, 80, MiB);
    g.grew(80, MiB);
    feed(g, c, 160, MiB);
    expect(feed(g, c, 240, MiB)).toEqual([MiB]); // still 1 MiB per round trip: back to 1 MiB
    feed(g, c, 400, 4 * MiB);
    expect(g.mayGrow(MiB, c.t)).toBe(false);
    feed(g, c, 560, 4 * MiB); // 16 round trips after the failure, at 180 ms
    expect(g.mayGrow(MiB, c.t)).toBe(true);
  });

  it('drops a measurement across a stall (no grant for two round trips): a paused reader is not a full link', () => {
    const g = new BdpGrowth();
    const c = { t: 0, credited: 0 };
    g.observe(0, 0, 20);
    feed(g, c, 80, MiB);
    g.grew(80, MiB);
    feed(g, c, 160, MiB); // the measurement that started with the doubling: no verdict
    feed(g, c, 170, 2 * MiB); // the judging one starts...
    // ... and the reader pauses for 730 ms, then takes 1 MiB at once: the measurement starts
    // again instead of judging the doubling by 1.5 MiB in 740 ms.
    c.t = 900;
    c.credited += MiB;
    expect(g.observe(c.t, c.credited, 20)).toBeUndefined();
    expect(feed(g, c, 980, 2 * MiB)).toEqual([]); // 2 MiB per round trip: paid
    expect(g.mayGrow(2 * MiB, c.t)).toBe(true);
  });

  it('carried: what a flowing stream moves per round trip, 0 once it stalled or without a round trip', () => {
    const g = new BdpGrowth();
    // 125 MB/s over 20 ms through a 4 MiB window: the link is the limit, 2.5 MB per round trip.
    drive(g, { rtt: 20, rate: 125_000, window: 4 * MiB, ms: 400 });
    expect(g.carried(400, 20)).toBeCloseTo(2_500_000, -3);
    expect(g.carried(400, undefined)).toBe(0);
    // No grant for more than two round trips: the figure says nothing about now.
    expect(g.carried(400 + 2 * 20 + 1, 20)).toBe(0);
  });
});
