import { MAX_WINDOW, SESSION_WINDOW, STREAM_WINDOW } from './constants';
import { Multiplexer } from './mux';

const data = (sid: number, n: number) => ({ type: 'data' as const, sid, data: Buffer.alloc(n) });

describe('multiplexer', () => {
  it('gives the initiator odd stream ids and the responder even ones', () => {
    expect([new Multiplexer(true).openLocal(), new Multiplexer(true).openLocal()]).toEqual([1, 1]);
    const r = new Multiplexer(false);
    expect([r.openLocal(), r.openLocal()]).toEqual([2, 4]);
  });

  it('refuses an OPEN with the wrong parity or a reused id', () => {
    const r = new Multiplexer(false);
    expect(r.receive({ type: 'open', sid: 2, target: 'api' }).kind).toBe('violation');
    const r2 = new Multiplexer(false);
    expect(r2.receive({ type: 'open', sid: 3, target: 'api' }).kind).toBe('open');
    expect(r2.receive({ type: 'open', sid: 1, target: 'api' }).kind).toBe('violation');
  });

  it('refuses streams above the cap without ending the session', () => {
    const r = new Multiplexer(false, 2);
    expect(r.receive({ type: 'open', sid: 1, target: 'a' }).kind).toBe('open');
    expect(r.receive({ type: 'open', sid: 3, target: 'a' }).kind).toBe('open');
    expect(r.receive({ type: 'open', sid: 5, target: 'a' })).toEqual({
      kind: 'refuse',
      sid: 5,
      reason: 'too many streams',
    });
    r.remove(1);
    expect(r.receive({ type: 'open', sid: 7, target: 'a' }).kind).toBe('open');
  });

  it('ends the session on DATA beyond the stream window', () => {
    const r = new Multiplexer(false);
    r.receive({ type: 'open', sid: 1, target: 'a' });
    for (let sent = 0; sent < STREAM_WINDOW; sent += 65536)
      expect(r.receive(data(1, 65536)).kind).toBe('data');
    expect(r.receive(data(1, 1))).toEqual({ kind: 'violation', reason: 'window exceeded' });
  });

  it('accepts more DATA once credit was granted', () => {
    const r = new Multiplexer(false);
    r.receive({ type: 'open', sid: 1, target: 'a' });
    for (let sent = 0; sent < STREAM_WINDOW; sent += 65536) r.receive(data(1, 65536));
    r.grant(1, 10);
    expect(r.receive(data(1, 10)).kind).toBe('data');
  });

  it('ends the session on DATA beyond the session window, across streams', () => {
    const r = new Multiplexer(false, 1000);
    let kind = '';
    for (let i = 0; kind !== 'violation' && i < 100; i++) {
      const sid = 2 * i + 1;
      r.receive({ type: 'open', sid, target: 'a' });
      for (let sent = 0; sent < STREAM_WINDOW && kind !== 'violation'; sent += 65536)
        kind = r.receive(data(sid, 65536)).kind;
    }
    expect(kind).toBe('violation');
  });

  it('returns session credit on receipt, so a stalled stream does not hold it', () => {
    const r = new Multiplexer(false);
    r.receive({ type: 'open', sid: 1, target: 'a' });
    for (let sent = 0; sent < STREAM_WINDOW; sent += 65536) r.receive(data(1, 65536));
    expect(r.takeSessionCredit()).toBe(STREAM_WINDOW >= SESSION_WINDOW / 4 ? STREAM_WINDOW : 0);
  });

  it('limits what may be sent to the smaller of stream and session credit', () => {
    const i = new Multiplexer(true);
    const sid = i.openLocal()!;
    expect(i.sendable(sid)).toBe(STREAM_WINDOW);
    i.consumeSend(sid, STREAM_WINDOW);
    expect(i.sendable(sid)).toBe(0);
    expect(i.receive({ type: 'window', sid, increment: 5 }).kind).toBe('window');
    expect(i.sendable(sid)).toBe(5);
  });

  it('ends the session when a WINDOW would overflow the largest window', () => {
    const i = new Multiplexer(true);
    const sid = i.openLocal()!;
    let kind = '';
    for (let n = 0; n < 4 && kind !== 'violation'; n++)
      kind = i.receive({ type: 'window', sid, increment: 2 ** 30 }).kind;
    expect(kind).toBe('violation');
    expect(MAX_WINDOW).toBe(2 ** 31 - 1);
  });

  it('ignores frames for a closed stream but refuses frames for one never opened', () => {
    const r = new Multiplexer(false);
    r.receive({ type: 'open', sid: 1, target: 'a' });
    r.remove(1);
    expect(r.receive(data(1, 5)).kind).toBe('ignore');
    expect(r.receive({ type: 'fin', sid: 1 }).kind).toBe('ignore');
    expect(r.receive(data(9, 5)).kind).toBe('violation');
    expect(r.receive({ type: 'window', sid: 4, increment: 1 }).kind).toBe('violation');
  });

  it('refuses DATA after FIN and a second FIN', () => {
    const r = new Multiplexer(false);
    r.receive({ type: 'open', sid: 1, target: 'a' });
    expect(r.receive({ type: 'fin', sid: 1 }).kind).toBe('fin');
    expect(r.receive(data(1, 1)).kind).toBe('violation');
    expect(r.receive({ type: 'fin', sid: 1 }).kind).toBe('violation');
  });
});
