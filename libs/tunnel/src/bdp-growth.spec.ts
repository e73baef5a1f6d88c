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
  const step = o.rtt / 4;
  for (; t <= o.ms; t += step) {
    credited += Math.min(window / o.rtt, o.rate) * step;
    const undo = g.observe(t, credited, o.rtt);
    if (undo !== undefined) {
      events.push(`undo ${window / MiB}->${undo / MiB}`);
      window = undo;
    }
    if (g.mayGrow(window)) {
      g.grew(t, window);
      events.push(`grow ${window / MiB}->${(2 * window) / MiB}`);
      window *= 2;
    }
  }
  return { window, events };
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
    expect(r.events).toEqual(['grow 1->2', 'grow 2->4', 'grow 4->8', 'undo 8->4']);
    expect(r.window).toBe(4 * MiB);
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
    expect(r.events).toEqual(['grow 1->2', 'undo 2->1']);
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
      expect(g.mayGrow(MAX_STREAM_WINDOW)).toBe(false);
    }
  });

  it('judges a doubling only by a measurement that started a round trip after it', () => {
    const g = new BdpGrowth();
    g.observe(0, 0, 20);
    g.observe(20, MiB, 20); // 1 MiB per round trip at a 1 MiB window: the window is the limit
    expect(g.mayGrow(MiB)).toBe(true);
    g.grew(20, MiB);
    expect(g.mayGrow(2 * MiB)).toBe(false); // one trial at a time
    // The round trip right after the doubling still carries 1 MiB (the new credit is on its
    // way): not counted against it.
    expect(g.observe(40, 2 * MiB, 20)).toBeUndefined();
    // The next one, started at 40 ms (>= 20 + 20), carries 2 MiB: it paid.
    expect(g.observe(60, 4 * MiB, 20)).toBeUndefined();
    expect(g.mayGrow(2 * MiB)).toBe(true);
  });
});
