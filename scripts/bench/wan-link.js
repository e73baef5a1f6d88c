'use strict';
// A network link emulator for the WAN benchmark (scripts/bench/wan.js), in user space: kernel
// netem is not available on these machines. It is a TCP proxy whose connections all cross one
// emulated link, as connections between two hosts cross one path:
//
// - each direction has a one-way delay D and a bottleneck of rate R shared by every connection
//   (one transmitter per direction, first come first served, as a router's FIFO queue);
// - the queue is bounded: while more than `queueBytes` wait to be sent in a direction, the
//   proxy stops reading from the senders of that direction (TCP's backpressure, without loss);
// - each connection has a receive window (`windowBytes`, Linux's tcp_rmem maximum by default):
//   bytes sent into the link and not yet taken by the receiver count against it;
// - a new connection costs what a TCP handshake costs: the client's first byte enters the link
//   one round trip after connect (SYN, SYN-ACK), the server's first byte a one-way delay later.
//
// Not modelled: loss, reordering, TCP slow start and congestion control (a bulk transfer starts
// at the link rate at once, which favours the paths that open new TCP connections: spiped and
// plain TCP). See wan.js for how its figures are read.
const net = require('node:net');

/**
 * One direction of the link. `send(bytes, deliver)` queues `bytes` for transmission; `deliver`
 * runs when they arrive at the far end. Departures are serialised at `rateBps` (bytes/s); each
 * arrival is `delayMs` after its departure. The clock and the timer are injectable for tests.
 */
class LinkDirection {
  constructor({
    delayMs,
    rateBps,
    queueBytes,
    clock = () => performance.now(),
    setTimer = preciseTimer,
  }) {
    this.delayMs = delayMs;
    this.rateBps = rateBps;
    this.queueBytes = queueBytes;
    this.clock = clock;
    this.setTimer = setTimer;
    /** When the transmitter finishes sending what is queued now (ms). */
    this.busyUntil = 0;
    /** Arrivals in order: departures are serialised and the delay is constant, so FIFO. */
    this.arrivals = [];
    this.timer = undefined;
    /** Called once when the queue falls back under its bound (senders resume reading). */
    this.waiters = [];
    this.drainTimer = undefined;
  }

  /** Bytes waiting for the transmitter at time `t`. */
  queued(t = this.clock()) {
    return Math.max(0, this.busyUntil - t) * (this.rateBps / 1000);
  }

  /**
   * Queues `bytes` (a length; 0 for a FIN, which still keeps its place in line) and returns its
   * arrival time. `deliver` runs at that time.
   */
  send(length, deliver) {
    const t = this.clock();
    const departs = Math.max(t, this.busyUntil) + (length / this.rateBps) * 1000;
    this.busyUntil = departs;
    const at = departs + this.delayMs;
    this.arrivals.push({ at, deliver });
    this.arm();
    return at;
  }

  /** Whether the queue is over its bound now (senders should pause). */
  full() {
    return this.queued() > this.queueBytes;
  }

  /** Runs `fn` once the queue is back under its bound. */
  whenNotFull(fn) {
    this.waiters.push(fn);
    if (this.drainTimer) return;
    const wake = () => {
      this.drainTimer = undefined;
      if (this.full()) {
        this.drainTimer = this.setTimer(wake, this.msUntilNotFull());
        return;
      }
      const ws = this.waiters.splice(0);
      for (const w of ws) w();
    };
    this.drainTimer = this.setTimer(wake, this.msUntilNotFull());
  }

  msUntilNotFull() {
    const at = this.busyUntil - (this.queueBytes / this.rateBps) * 1000;
    return Math.max(0, at - this.clock());
  }

  arm() {
    if (this.timer || this.arrivals.length === 0) return;
    const wait = Math.max(0, this.arrivals[0].at - this.clock());
    this.timer = this.setTimer(() => this.fire(), wait);
  }

  /** Arrivals are delivered when due, never before (`fire` re-arms for what is not yet due). */

  fire() {
    this.timer = undefined;
    const t = this.clock();
    while (this.arrivals.length > 0 && this.arrivals[0].at <= t) {
      this.arrivals.shift().deliver();
    }
    this.arm();
  }
}

/**
 * A link: two directions. `up` carries client → server bytes, `down` server → client.
 * `rateBps` is in bytes per second.
 */
function createLink({ delayMs, rateBps, queueBytes = 1 << 20, clock, setTimer }) {
  const opts = { delayMs, rateBps, queueBytes, clock, setTimer };
  return { up: new LinkDirection(opts), down: new LinkDirection(opts), delayMs, rateBps };
}

/** Linux's largest receive window (tcp_rmem's third field), else 6 MiB. */
function defaultWindow() {
  try {
    const f = require('node:fs').readFileSync('/proc/sys/net/ipv4/tcp_rmem', 'utf8');
    return Number(f.trim().split(/\s+/)[2]) || 6 << 20;
  } catch {
    return 6 << 20;
  }
}

/**
 * Carries one direction of a connection across `dir`: reads `from`, writes `to` at arrival,
 * gated until `openAt` (the handshake), bounded by the queue and by `windowBytes` in flight.
 */
function carry(from, to, dir, openAt, windowBytes, clock, setTimer) {
  let inFlight = 0;
  let paused = false;
  const held = [];
  let gateTimer;
  const pauseIfNeeded = () => {
    if (paused || (inFlight <= windowBytes && !dir.full())) return;
    paused = true;
    from.pause();
    const tryResume = () => {
      if (inFlight > windowBytes) return; // the window reopens on a write callback
      if (dir.full()) return dir.whenNotFull(tryResume);
      paused = false;
      from.resume();
    };
    if (dir.full()) dir.whenNotFull(tryResume);
  };
  const resumeOnWindow = () => {
    if (paused && inFlight <= windowBytes && !dir.full()) {
      paused = false;
      from.resume();
    }
  };
  const enter = (chunk) => {
    const n = chunk ? chunk.length : 0;
    inFlight += n;
    dir.send(n, () => {
      if (to.destroyed) return;
      if (!chunk) return to.end();
      to.write(chunk, () => {
        inFlight -= n;
        resumeOnWindow();
      });
    });
    pauseIfNeeded();
  };
  // Before the handshake is through, a sender can only fill its own socket buffer: the first
  // chunk is held here and reading stops until the gate opens.
  const flushHeld = () => {
    gateTimer = undefined;
    for (const c of held.splice(0)) enter(c);
    if (!paused) from.resume();
  };
  const push = (chunk) => {
    if (clock() >= openAt && held.length === 0) return enter(chunk);
    held.push(chunk);
    from.pause();
    if (!gateTimer) gateTimer = setTimer(flushHeld, Math.max(0, openAt - clock()));
  };
  let ended = false;
  from.on('data', (d) => push(d));
  from.on('end', () => {
    ended = true;
    push(null); // FIN keeps its place behind the data
  });
  // A side that closed without a FIN (reset, error) resets the other after the one-way delay,
  // as a RST travels (data still queued is lost, as with TCP). After a FIN, the far side
  // closes by itself once its own FIN is through.
  from.on('close', () => {
    if (!ended) setTimer(() => to.destroy(), dir.delayMs);
  });
}

/**
 * Starts a TCP proxy on 127.0.0.1 (port 0: any) to `target` whose connections cross `link`.
 * Resolves with `{ port, close() }`.
 */
/**
 * A timer that fires on time: setTimeout alone fires whole milliseconds late (its resolution is
 * 1 ms and it never fires early), which would add up to a millisecond to every delay. So it
 * sleeps until shortly before, then yields turn by turn (setImmediate) until the moment.
 */
function preciseTimer(fn, ms) {
  const at = performance.now() + ms;
  const spin = () => (performance.now() >= at ? fn() : setImmediate(spin));
  if (ms > 2) setTimeout(spin, ms - 1.5);
  else setImmediate(spin);
  return true;
}

function startLinkProxy({ link, target, port = 0, windowBytes = defaultWindow() }) {
  const clock = () => performance.now();
  const setTimer = preciseTimer;
  const sockets = new Set();
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const t0 = clock();
    const rtt = 2 * link.delayMs;
    const server = net.connect({ ...target, allowHalfOpen: true, noDelay: true });
    for (const s of [client, server]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined); // a reset: 'close' follows, and carry() passes it on
    }
    // SYN (D) + SYN-ACK (D): the client may send after one round trip; the server's first
    // byte can leave once the client's ACK reached it, a one-way delay later.
    carry(client, server, link.up, t0 + rtt, windowBytes, clock, setTimer);
    carry(server, client, link.down, t0 + rtt + link.delayMs, windowBytes, clock, setTimer);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () =>
      resolve({
        port: server.address().port,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      }),
    );
  });
}

module.exports = { LinkDirection, createLink, startLinkProxy, defaultWindow };
