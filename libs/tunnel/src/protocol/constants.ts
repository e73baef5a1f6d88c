/**
 * Every size, label and limit of the tunnel protocol (docs/PROTOCOL.md). Named here so that each
 * bounds check in the parsers reads as a reference to the contract, not a magic number.
 */

/** Carried in `Sec-WebSocket-Protocol` and mixed into every MAC and KDF label. */
export const PROTOCOL_VERSION = 'gpu-sidecar.v1';

export const MIN_KEY_FILE_BYTES = 32;
/**
 * A key file is 32 random bytes (`gpu-sidecar keygen`); anything past this is not a key file
 * named by mistake, and is refused before more than this is read.
 */
export const MAX_KEY_FILE_BYTES = 4096;
export const KEY_BYTES = 32;
export const NONCE_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const MAC_BYTES = 32;
export const TAG_BYTES = 16;
export const FINGERPRINT_BYTES = 8;

/** Handshake message types and exact lengths. */
export const MSG_HELLO = 0x01;
export const MSG_AUTH_I = 0x02;
export const MSG_AUTH_R = 0x03;
export const HELLO_BYTES = 1 + NONCE_BYTES;
export const AUTH_I_BYTES = 1 + NONCE_BYTES + PUBLIC_KEY_BYTES + MAC_BYTES;
export const AUTH_R_BYTES = 1 + PUBLIC_KEY_BYTES + MAC_BYTES;
export const HANDSHAKE_TIMEOUT_MS = 5000;
/**
 * The WebSocket close code (private-use range) a responder closes with when M2 matched no key
 * of its ring, so the initiator reports `bad key` rather than `connection closed`.
 */
export const CLOSE_BAD_KEY = 4001;
/**
 * How long either end waits for the peer's answer to its WebSocket close frame before it drops
 * the connection (ws's default is 30 s). A keyless peer whose M2 was refused with CLOSE_BAD_KEY
 * could otherwise keep that connection for 30 s, out of the pending set and its deadline, at
 * no cost but a wrong MAC: thousands of them held the listener at its connection cap, and what
 * they sent meanwhile was queued.
 */
export const CLOSE_GRACE_MS = 1000;

/** KDF and MAC labels (all prefixed by the version, so another version never authenticates). */
export const LABEL_AUTH_KEY = `${PROTOCOL_VERSION} auth key`;
export const LABEL_FINGERPRINT = `${PROTOCOL_VERSION} fingerprint`;
export const LABEL_MAC_I = `${PROTOCOL_VERSION} initiator`;
export const LABEL_MAC_R = `${PROTOCOL_VERSION} responder`;
export const LABEL_I2R = `${PROTOCOL_VERSION} i2r`;
export const LABEL_R2I = `${PROTOCOL_VERSION} r2i`;
export const LABEL_REKEY = `${PROTOCOL_VERSION} rekey`;

/** Frames. */
export const CIPHER = 'aes-256-gcm';
export const GCM_NONCE_BYTES = 12;
export const FRAME_HEADER_BYTES = 5;
export const MAX_DATA = 64 * 1024;
export const MAX_REASON_BYTES = 128;
export const MAX_TARGET_BYTES = 64;
export const MIN_SEALED_FRAME = FRAME_HEADER_BYTES + TAG_BYTES;
export const MAX_SEALED_FRAME = FRAME_HEADER_BYTES + MAX_DATA + TAG_BYTES;
/** WebSocket maxPayload: the largest frame plus slack; anything above is refused by ws itself. */
export const MAX_WS_MESSAGE = 65 * 1024;
/** Ratchet each direction's key after this many frames (docs/PROTOCOL.md, "Rekey"). */
export const REKEY_FRAMES = 2 ** 20;
/** The session ends before a counter reaches this (far below 2^64 and exact in a JS number). */
export const MAX_FRAMES = 2 ** 48;

export const FRAME_OPEN = 0x01;
export const FRAME_DATA = 0x02;
export const FRAME_FIN = 0x03;
export const FRAME_RESET = 0x04;
export const FRAME_WINDOW = 0x05;
export const FRAME_PING = 0x06;
export const FRAME_PONG = 0x07;
export const FRAME_CLOSE = 0x08;
export const PING_BODY_BYTES = 8;

/** Flow control and limits (docs/PROTOCOL.md, "Flow control and memory"). */
/** Every stream's initial window, in each direction. */
export const STREAM_WINDOW = 256 * 1024;
/**
 * A receiver doubles the window of a stream its reader keeps up with, up to this while other
 * streams share the session: a bulk stream's window is also how much of it can wait in the
 * kernel's socket buffers ahead of other streams' frames (bench (e): GET /test p50 during a
 * download 12-20 ms at 1 MiB, 35-38 ms at 4 MiB).
 */
export const MAX_STREAM_WINDOW = 1024 * 1024;
/**
 * ... and up to this for a stream alone in its session (no other stream open for
 * LONE_STREAM_QUIET_MS), whose bytes in flight delay nobody: bench (a) one-stream download
 * 279 -> 336 MB/s (4 alternating runs, each faster), and over a WAN 4x MAX_STREAM_WINDOW / RTT.
 * Once another stream opens, the window goes back to MAX_STREAM_WINDOW (docs/PROTOCOL.md,
 * "Window growth").
 */
export const LONE_STREAM_WINDOW = 4 * 1024 * 1024;
export const LONE_STREAM_QUIET_MS = 100;
/**
 * Past those caps, a window grows further only while it is what limits the stream across a
 * long link (BdpGrowth, docs/PROTOCOL.md "Window growth"): a round trip (the session's
 * shortest PING/PONG) carried at least BDP_GROWTH_SHARE of it, and each doubling is kept only
 * if the round trips after it carry at least BDP_TRIAL_GAIN times as much as before. Up to this
 * bound per stream, within WINDOW_GROWTH_BUDGET per session.
 */
export const BDP_STREAM_WINDOW = 16 * 1024 * 1024;
export const BDP_GROWTH_SHARE = 0.5;
export const BDP_TRIAL_GAIN = 1.125;
/** Window growth a receiver grants over all its streams at once (the rest of its budget). */
export const WINDOW_GROWTH_BUDGET = 64 * 1024 * 1024;
export const SESSION_WINDOW = 16 * 1024 * 1024;
/**
 * The send scheduler hands the channel more DATA only while less than this is unwritten in it
 * (docs/PROTOCOL.md, "Send scheduling"): how far a bulk stream can queue ahead of the others.
 */
export const SEND_WATERMARK = 128 * 1024;
/**
 * Bytes handed to the WebSocket and not yet written to the socket past which a session ends
 * (`send queue full`): control frames are not held back like DATA, and a peer that sends
 * PINGs or OPENs and never reads would otherwise grow that queue without bound.
 */
export const SEND_QUEUE_LIMIT = 4 * 1024 * 1024;
export const MAX_WINDOW_INCREMENT = 2 ** 30;
export const MAX_WINDOW = 2 ** 31 - 1;
export const MAX_STREAMS = 1024;
/**
 * Unauthenticated connections a listener holds at once (docs/PROTOCOL.md, "Unauthenticated
 * connections"). A newcomer past it evicts the oldest connection of the address that holds the
 * most, so this is not a door a flood can close: it is how many connections from one address
 * may arrive while a legitimate peer from that address is still one round trip from done.
 */
export const MAX_PENDING = 1024;
/** Connections a listener holds at most, sessions included (a quarter of it may be pending). */
export const MAX_CONNECTIONS = 4096;
export const TARGET_NAME = /^[a-z0-9._-]{1,64}$/;
