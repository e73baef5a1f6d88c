'use strict';
// A keyless attacker as its own process (test/attack/*.attack-spec.ts start it), so that its
// CPU is not the test runner's: it keeps CONCURRENCY connections open to HOST:PORT from
// FROM (a local address: the whole of 127/8 is this host) and opens a new one the moment one
// is closed, at full speed, until it gets SIGTERM. Then it prints one JSON line of counts.
//
//   node flood.js MODE HOST PORT FROM CONCURRENCY
//
// MODE: `pending` (a WebSocket upgrade offering gpu-sidecar.v1, then never a byte more: a
// handshake left half-open after HELLO), `silent` (a TCP connection that never sends a byte:
// against spiped, a handshake that never starts), `badkey` (the upgrade, then an AUTH_I of the
// right size whose MAC no key makes, then binary messages of 60 KiB as fast as the socket
// takes them, at most BADKEY_BYTES (env, default 4 MiB) per connection; it never answers the
// close frame). In `badkey` mode the counts have `heldMs`: how long each connection stayed
// open after its AUTH_I (p50, p99, max).
const { randomBytes } = require('node:crypto');
const net = require('node:net');

const [mode, host, portText, from, concurrencyText] = process.argv.slice(2);
const port = Number(portText);
const concurrency = Number(concurrencyText);
const counts = { opened: 0, closedByPeer: 0, upgraded: 0, refused: 0, errors: 0 };
const BADKEY_BYTES = Number(process.env.BADKEY_BYTES ?? 4 * 1024 * 1024);
/** AUTH_I: 0x02, nonce, public key, MAC (1 + 32 + 32 + 32 bytes; docs/PROTOCOL.md §2). */
const AUTH_I_BYTES = 97;
const held = [];

/** One client-to-server binary WebSocket frame (masked, with a mask key of zeros). */
function clientFrame(payload) {
  const n = payload.length;
  const head =
    n < 126 ? Buffer.from([0x82, 0x80 | n]) : Buffer.from([0x82, 0x80 | 126, n >> 8, n & 0xff]);
  return Buffer.concat([head, Buffer.alloc(4), payload]);
}
const JUNK = clientFrame(randomBytes(60 * 1024));

/** Sends a wrong AUTH_I, then junk until BADKEY_BYTES, whatever the server says. */
function badKey(s) {
  const m2 = randomBytes(AUTH_I_BYTES);
  m2[0] = 0x02;
  s.write(clientFrame(m2));
  s.m2At = performance.now();
  s.once('close', () => {
    if (!stopping) held.push(performance.now() - s.m2At);
  });
  let sent = 0;
  const pump = () => {
    while (sent < BADKEY_BYTES && !s.destroyed) {
      sent += JUNK.length;
      if (!s.write(JUNK)) return void s.once('drain', pump);
    }
  };
  pump();
}
let stopping = false;
const open = new Set();

function upgradeRequest() {
  return [
    'GET / HTTP/1.1',
    `Host: ${host}:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Protocol: gpu-sidecar.v1',
    '',
    '',
  ].join('\r\n');
}

function one() {
  if (stopping) return;
  const s = net.connect({ host, port, localAddress: from });
  open.add(s);
  let seen = false;
  s.on('connect', () => {
    counts.opened++;
    if (mode === 'pending' || mode === 'badkey') s.write(upgradeRequest());
  });
  s.on('data', (d) => {
    if (seen) return;
    seen = true;
    const line = d.toString('latin1', 0, 16);
    if (line.startsWith('HTTP/1.1 101')) {
      counts.upgraded++;
      if (mode === 'badkey') badKey(s);
    } else if (line.startsWith('HTTP/1.1')) counts.refused++;
  });
  s.on('error', () => counts.errors++);
  s.on('close', () => {
    open.delete(s);
    if (stopping) return;
    counts.closedByPeer++;
    // At once, without waiting: a fast attacker. setImmediate only so that a listener that
    // refuses every connect (ECONNREFUSED) does not turn this into a synchronous loop.
    setImmediate(one);
  });
}

for (let i = 0; i < concurrency; i++) one();
process.on('SIGTERM', () => {
  stopping = true;
  // Those still open count with how long they have been so far.
  for (const s of open) if (s.m2At !== undefined) held.push(performance.now() - s.m2At);
  for (const s of open) s.destroy();
  if (mode === 'badkey') {
    const sorted = held.sort((a, b) => a - b);
    const at = (q) =>
      Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? -1);
    const over3s = sorted.filter((ms) => ms > 3000).length;
    counts.heldMs = { n: sorted.length, p50: at(0.5), p99: at(0.99), max: at(1), over3s };
  }
  process.stdout.write(`${JSON.stringify(counts)}\n`);
  process.exit(0);
});
