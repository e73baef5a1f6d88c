import {
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_FIN,
  FRAME_HEADER_BYTES,
  FRAME_OPEN,
  FRAME_PING,
  FRAME_PONG,
  FRAME_RESET,
  FRAME_WINDOW,
  MAX_DATA,
  MAX_REASON_BYTES,
  MAX_WINDOW_INCREMENT,
  PING_BODY_BYTES,
  TARGET_NAME,
} from './constants';

/** A decoded frame plaintext (docs/PROTOCOL.md, "Frames"). */
export type Frame =
  | { type: 'open'; sid: number; target: string }
  | { type: 'data'; sid: number; data: Buffer }
  | { type: 'fin'; sid: number }
  | { type: 'reset'; sid: number; reason: string }
  | { type: 'window'; sid: number; increment: number }
  | { type: 'ping'; body: Buffer }
  | { type: 'pong'; body: Buffer }
  | { type: 'close'; reason: string };

/** A frame as header and optional body, ready for `FrameSealer.seal` without concatenation. */
export interface EncodedFrame {
  header: Buffer;
  body?: Buffer;
}

const CODES = {
  open: FRAME_OPEN,
  data: FRAME_DATA,
  fin: FRAME_FIN,
  reset: FRAME_RESET,
  window: FRAME_WINDOW,
  ping: FRAME_PING,
  pong: FRAME_PONG,
  close: FRAME_CLOSE,
} as const;

/**
 * Writes a frame header (type, then the stream id as uint32 BE) into `h`, FRAME_HEADER_BYTES
 * long, and returns it: the session's DATA path reuses one buffer for every frame.
 */
export function encodeHeaderInto(h: Buffer, type: number, sid: number): Buffer {
  h[0] = type;
  h.writeUInt32BE(sid, 1);
  return h;
}

function header(type: number, sid: number): Buffer {
  return encodeHeaderInto(Buffer.allocUnsafe(FRAME_HEADER_BYTES), type, sid);
}

/** Cuts a reason to MAX_REASON_BYTES of UTF-8 (a peer never needs more to log it). */
function reasonBytes(reason: string): Buffer {
  return Buffer.from(reason, 'utf8').subarray(0, MAX_REASON_BYTES);
}

/** Encodes a frame. Callers pass valid values (ids, sizes); decode is the side that distrusts. */
export function encodeFrame(f: Frame): EncodedFrame {
  const code = CODES[f.type];
  switch (f.type) {
    case 'open':
      return { header: header(code, f.sid), body: Buffer.from(f.target, 'ascii') };
    case 'data':
      return { header: header(code, f.sid), body: f.data };
    case 'fin':
      return { header: header(code, f.sid) };
    case 'reset':
      return { header: header(code, f.sid), body: reasonBytes(f.reason) };
    case 'window': {
      const body = Buffer.allocUnsafe(4);
      body.writeUInt32BE(f.increment, 0);
      return { header: header(code, f.sid), body };
    }
    case 'ping':
    case 'pong':
      return { header: header(code, 0), body: f.body };
    case 'close':
      return { header: header(code, 0), body: reasonBytes(f.reason) };
  }
}

/**
 * Parses an authenticated plaintext. Every length is checked against the contract before a
 * field is read; anything else returns undefined ('bad frame'). Never throws.
 */
export function decodeFrame(p: Buffer): Frame | undefined {
  if (p.length < FRAME_HEADER_BYTES) return undefined;
  const sid = p.readUInt32BE(1);
  const body = p.subarray(FRAME_HEADER_BYTES);
  switch (p[0]) {
    case FRAME_OPEN: {
      const target = body.toString('latin1');
      return sid !== 0 && TARGET_NAME.test(target) ? { type: 'open', sid, target } : undefined;
    }
    case FRAME_DATA:
      return sid !== 0 && body.length > 0 && body.length <= MAX_DATA
        ? { type: 'data', sid, data: body }
        : undefined;
    case FRAME_FIN:
      return sid !== 0 && body.length === 0 ? { type: 'fin', sid } : undefined;
    case FRAME_RESET:
      return sid !== 0 && body.length <= MAX_REASON_BYTES
        ? { type: 'reset', sid, reason: body.toString('utf8') }
        : undefined;
    case FRAME_WINDOW:
      return decodeWindow(sid, body);
    case FRAME_PING:
    case FRAME_PONG:
      if (sid !== 0 || body.length !== PING_BODY_BYTES) return undefined;
      return { type: p[0] === FRAME_PING ? 'ping' : 'pong', body: Buffer.from(body) };
    case FRAME_CLOSE:
      return sid === 0 && body.length <= MAX_REASON_BYTES
        ? { type: 'close', reason: body.toString('utf8') }
        : undefined;
    default:
      return undefined;
  }
}

function decodeWindow(sid: number, body: Buffer): Frame | undefined {
  if (body.length !== 4) return undefined;
  const increment = body.readUInt32BE(0);
  return increment >= 1 && increment <= MAX_WINDOW_INCREMENT
    ? { type: 'window', sid, increment }
    : undefined;
}
