import { Admission, addressGroup } from './admission';

const turn = () => new Promise((r) => setImmediate(r));

describe('Admission of unauthenticated connections', () => {
  it('never refuses a newcomer: past the cap it evicts the oldest of the busiest address', async () => {
    const a = new Admission(4);
    const evicted: string[] = [];
    const add = (address: string, name: string) => a.admit(address, () => evicted.push(name));
    add('10.0.0.1', 'flood-1');
    add('10.0.0.9', 'legit');
    add('10.0.0.1', 'flood-2');
    add('10.0.0.1', 'flood-3');
    add('10.0.0.1', 'flood-4');
    add('10.0.0.1', 'flood-5');
    expect(evicted).toEqual([]); // not before the end of the turn
    await turn();
    // The legitimate connection is the oldest but one; the flood's address holds the most.
    expect(evicted).toEqual(['flood-1', 'flood-2']);
    expect(a.size).toBe(4);
  });

  it('from one address alone, evicts oldest first', async () => {
    const a = new Admission(2);
    const evicted: number[] = [];
    for (let i = 0; i < 5; i++) a.admit('127.0.0.1', () => evicted.push(i));
    await turn();
    expect(evicted).toEqual([0, 1, 2]);
  });

  it('between addresses holding as many, evicts the older connection', async () => {
    const a = new Admission(2);
    const evicted: string[] = [];
    a.admit('b', () => evicted.push('b1'));
    a.admit('a', () => evicted.push('a1'));
    a.admit('c', () => evicted.push('c1'));
    await turn();
    expect(evicted).toEqual(['b1']);
  });

  it('a connection that left (authenticated, closed) is never evicted, and frees its place', async () => {
    const a = new Admission(2);
    const evicted: string[] = [];
    const first = a.admit('x', () => evicted.push('first'));
    a.admit('x', () => evicted.push('second'));
    first.leave();
    first.leave(); // idempotent
    a.admit('x', () => evicted.push('third'));
    await turn();
    expect(evicted).toEqual([]);
    expect(a.size).toBe(2);
  });

  it('lets a connection served in the same turn finish before the cap is enforced', async () => {
    const a = new Admission(1);
    const evicted: string[] = [];
    const legit = a.admit('x', () => evicted.push('legit'));
    a.admit('x', () => evicted.push('newcomer'));
    legit.leave(); // its message arrived in the same turn as the newcomer
    await turn();
    expect(evicted).toEqual([]);
  });

  it('past twice the cap evicts at once, so memory is bounded within one turn', () => {
    const a = new Admission(2);
    let evicted = 0;
    for (let i = 0; i < 10; i++) a.admit('x', () => evicted++);
    expect(a.size).toBe(4);
    expect(evicted).toBe(6);
  });

  it('with an address share, refuses the busiest address past its share and no other', async () => {
    const a = new Admission(6, { addressShare: 0.5 });
    expect(a.perAddress).toBe(3);
    const evicted: string[] = [];
    const flood = [];
    for (let i = 0; i < 3; i++) {
      expect(a.refuses('10.0.0.1')).toBe(false);
      flood.push(a.admit('10.0.0.1', () => evicted.push(`flood-${i}`)));
    }
    expect(a.refuses('10.0.0.1')).toBe(true);
    // Another address finds room while the flood holds its share.
    expect(a.refuses('10.0.0.9')).toBe(false);
    a.admit('10.0.0.9', () => evicted.push('legit'));
    // One of the flood's connections leaves (its deadline): the address may add one again.
    flood[0].leave();
    expect(a.refuses('10.0.0.1')).toBe(false);
    await turn();
    expect(evicted).toEqual([]);
  });

  it('without an address share never refuses, and a tiny cap still leaves one place per address', () => {
    const a = new Admission(2);
    for (let i = 0; i < 10; i++) a.admit('x', () => undefined);
    expect(a.refuses('x')).toBe(false);
    const tiny = new Admission(1, { addressShare: 0.5 });
    expect(tiny.perAddress).toBe(1);
    expect(tiny.refuses('x')).toBe(false);
  });

  it('counts IPv6 peers by their /64 and IPv4-mapped peers as IPv4', async () => {
    expect(addressGroup('10.1.2.3')).toBe('10.1.2.3');
    expect(addressGroup('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(addressGroup('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(addressGroup('2001:DB8:1:2:bbbb:cccc:dddd:eeee')).toBe('2001:db8:1:2::/64');
    expect(addressGroup('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressGroup('::1')).toBe('0:0:0:0::/64');
    expect(addressGroup('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressGroup('2001:0db8:0001:0002::')).toBe('2001:db8:1:2::/64');
    // One attacker using many addresses of its /64 is one address to the eviction.
    const a = new Admission(4);
    const evicted: string[] = [];
    a.admit('2001:db8:9:9::1', () => evicted.push('legit'));
    for (let i = 1; i <= 5; i++) a.admit(`2001:db8:1:2::${i}`, () => evicted.push(`flood-${i}`));
    await turn();
    expect(evicted).toEqual(['flood-1', 'flood-2']);
    expect(a.heldBy('2001:db8:1:2::ffff')).toBe(3);
  });

  it('admitUntil drops at the deadline or on eviction, once, and leave() stops both', async () => {
    const a = new Admission(1);
    const dropped: string[] = [];
    const late = a.admitUntil('x', 30, (why) => dropped.push(`late ${why}`));
    const quiet = a.admitUntil('y', 30, (why) => dropped.push(`quiet ${why}`));
    const spoke = a.admitUntil('z', 30, (why) => dropped.push(`spoke ${why}`));
    spoke.leave();
    await turn(); // one over the cap: the oldest of the busiest (ties: the older) goes
    expect(dropped).toEqual(['late evicted']);
    await new Promise((r) => setTimeout(r, 60));
    expect(dropped).toEqual(['late evicted', 'quiet timeout']);
    expect(a.size).toBe(0);
    late.leave();
    quiet.leave(); // idempotent after a drop
    expect(a.size).toBe(0);
  });
});
