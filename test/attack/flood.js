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
// against spiped, a handshake that never starts).
const { randomBytes } = require('node:crypto');
const net = require('node:net');

const [mode, host, portText, from, concurrencyText] = process.argv.slice(2);
const port = Number(portText);
const concurrency = Number(concurrencyText);
const counts = { opened: 0, closedByPeer: 0, upgraded: 0, refused: 0, errors: 0 };
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
    if (mode === 'pending') s.write(upgradeRequest());
  });
  s.on('data', (d) => {
    if (seen) return;
    seen = true;
    const line = d.toString('latin1', 0, 16);
    if (line.startsWith('HTTP/1.1 101')) counts.upgraded++;
    else if (line.startsWith('HTTP/1.1')) counts.refused++;
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
  for (const s of open) s.destroy();
  process.stdout.write(`${JSON.stringify(counts)}\n`);
  process.exit(0);
});
