/**
 * The group an address counts in: an IPv4 address alone (an IPv4-mapped IPv6 address, as a
 * dual-stack listener reports IPv4 peers, as that IPv4 address), an IPv6 address by its /64.
 * Why: a host is normally given a whole /64 and can use any address in it, so counting IPv6
 * peers one address at a time would let one attacker look like as many peers as it likes, and
 * the busiest-address eviction (and a per-address share) would no longer single it out.
 */
export function addressGroup(address: string): string {
  if (!address.includes(':')) return address;
  const lower = address.toLowerCase().split('%')[0];
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (mapped) return mapped[1];
  const [head, tail] = lower.split('::');
  const left = head ? head.split(':') : [];
  const right = tail === undefined ? [] : tail ? tail.split(':') : [];
  const zeros = tail === undefined ? 0 : 8 - left.length - right.length;
  const groups = [...left, ...Array<string>(Math.max(0, zeros)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/** One connection in an Admission: leave() once it is authenticated or gone. */
export interface Ticket {
  /** Takes the connection out of the set (idempotent); it can no longer be evicted. */
  leave(): void;
}

interface Entry extends Ticket {
  readonly seq: number;
  readonly address: string;
  readonly evict: () => void;
}

/**
 * The connections a listener accepted that have not proved anything yet (docs/PROTOCOL.md,
 * "Unauthenticated connections"), at most `cap` of them. A newcomer is never refused (unless the
 * set has an address share, below): when the set is over its cap, the connection to drop is the
 * **oldest of the address that holds the most** (ties: the address whose oldest connection is
 * older).
 *
 * Why a flood cannot lock a legitimate peer out:
 * - from another address: its address holds one or two connections while the flooding one
 *   holds nearly all the others, so the flood only ever evicts itself, however fast it is;
 * - from the same address: eviction is oldest first, so a newcomer is dropped only after `cap`
 *   newer connections from that address arrived while it was still pending. A legitimate peer
 *   is pending for one round trip (its M2 follows our HELLO at once), while every connection
 *   costs the listener an accept, an HTTP parse and an upgrade; the cap is chosen so that a
 *   round trip on a loaded host fits many times over (measured: test/attack/).
 * - eviction waits for the end of the event-loop turn (setImmediate), so a connection whose
 *   message arrived in the same turn as a burst of newcomers is served before the cap is
 *   enforced; beyond twice the cap the oldest go at once, so memory stays bounded anyway.
 */
export class Admission {
  private readonly byAddress = new Map<string, Set<Entry>>();
  private count = 0;
  private seq = 0;
  private sweepScheduled = false;
  /** Connections one address may hold (Infinity: no share, eviction alone). */
  readonly perAddress: number;

  /**
   * @param cap connections held at once before the oldest of the busiest address is evicted
   * @param opts.addressShare the share of `cap` one address may hold; past it `refuses()` says
   *   a newcomer from that address must be closed at the accept. For sets whose connections
   *   cost something that eviction cannot take back (a tunnel stream and a connection to a
   *   target, opened at the accept): there a flood that reconnects at once would turn
   *   eviction into a stream of those costs, while a share leaves it its half, each held
   *   until its deadline, and a peer of another address always finds room.
   */
  constructor(
    readonly cap: number,
    opts: { addressShare?: number } = {},
  ) {
    this.perAddress =
      opts.addressShare === undefined ? Infinity : Math.max(1, Math.floor(cap * opts.addressShare));
  }

  /**
   * Whether a newcomer from `address` must be refused (closed before `admit`): only with an
   * `addressShare`, once `address` holds its share. Without one a newcomer is never refused.
   */
  refuses(address: string): boolean {
    return this.heldBy(address) >= this.perAddress;
  }

  /** Connections in the set now. */
  get size(): number {
    return this.count;
  }

  /** Connections from `address` (its addressGroup) in the set now. */
  heldBy(address: string): number {
    return this.byAddress.get(addressGroup(address))?.size ?? 0;
  }

  /** Adds a connection from `peer` (counted in its addressGroup); `evict` drops it if the set must shrink. */
  admit(peer: string, evict: () => void): Ticket {
    const address = addressGroup(peer);
    let set = this.byAddress.get(address);
    if (!set) this.byAddress.set(address, (set = new Set()));
    const entry: Entry = {
      seq: this.seq++,
      address,
      evict,
      leave: () => {
        if (!set.delete(entry)) return;
        this.count--;
        if (set.size === 0) this.byAddress.delete(address);
      },
    };
    set.add(entry);
    this.count++;
    if (this.count > 2 * this.cap) this.shrinkTo(2 * this.cap);
    if (this.count > this.cap && !this.sweepScheduled) {
      this.sweepScheduled = true;
      setImmediate(() => {
        this.sweepScheduled = false;
        this.shrinkTo(this.cap);
      });
    }
    return entry;
  }

  /**
   * admit() with a deadline: `drop` is called once, with `evicted` when the set must shrink or
   * `timeout` when `ms` pass first, the connection having left the set either way. leave()
   * (the connection proved itself, or closed) also stops the timer. The one shape of every
   * listener's "until it has said something" (the tunnel's handshake, the relay's first byte,
   * an HTTP listener's first request head).
   */
  admitUntil(peer: string, ms: number, drop: (why: 'evicted' | 'timeout') => void): Ticket {
    const ticket = this.admit(peer, () => {
      clearTimeout(timer);
      drop('evicted');
    });
    const timer = setTimeout(() => {
      ticket.leave();
      drop('timeout');
    }, ms);
    // A deadline, not work: it does not keep a stopping process alive (the HTTP listeners'
    // own timer was unref'd before they shared this one).
    timer.unref();
    return {
      leave: () => {
        clearTimeout(timer);
        ticket.leave();
      },
    };
  }

  private shrinkTo(limit: number): void {
    while (this.count > limit) {
      const victim = this.victim();
      victim.leave();
      victim.evict();
    }
  }

  /** The oldest connection of the address holding the most. */
  private victim(): Entry {
    let best: Entry | undefined;
    let bestSize = 0;
    for (const set of this.byAddress.values()) {
      const oldest = set.values().next().value as Entry;
      if (set.size > bestSize || (set.size === bestSize && oldest.seq < best!.seq)) {
        best = oldest;
        bestSize = set.size;
      }
    }
    return best!;
  }
}
