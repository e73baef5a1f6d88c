import {
  CLOSE_BAD_KEY,
  HANDSHAKE_TIMEOUT_MS,
  InitiatorHandshake,
  ResponderHandshake,
} from './protocol';
import type { HandshakeStep, SessionKeys } from './protocol';
import type { MessageChannel } from './transport/channel';

/** Why a handshake failed: a reason of docs/PROTOCOL.md section 5. */
export class HandshakeError extends Error {
  override readonly name = 'HandshakeError';
  constructor(readonly reason: string) {
    super(`tunnel handshake failed: ${reason}`);
  }
}

type Step = (msg: Buffer) => HandshakeStep;

/** When a handshake must give up: its own timer, or a signal the caller aborts (with a reason). */
export interface HandshakeLimit {
  /** Ms from now; none when `signal` carries the deadline (the listener's, from the accept). */
  timeoutMs?: number;
  /** Aborted with a reason of docs/PROTOCOL.md section 5 (`timeout`, `evicted`). */
  signal?: AbortSignal;
}

const discard = (): void => undefined;

/**
 * Runs a handshake state machine over a channel: feeds it each message, sends its replies,
 * and settles on keys or on the first failure, the channel closing, the timeout or the signal.
 * On failure the channel is dropped, except that a responder that found no key for M2 closes
 * it with the WebSocket close code CLOSE_BAD_KEY, so the initiator can say `bad key` instead
 * of `connection closed` (PROTOCOL.md, "Bad key"), and what arrives after a failure is dropped.
 * On success its message handler is cleared (messages queue up until the session takes over).
 */
function drive(
  channel: MessageChannel,
  step: Step,
  limit: HandshakeLimit,
  responder: boolean,
  first?: Buffer,
): Promise<SessionKeys> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err: HandshakeError | undefined, keys?: SessionKeys): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      limit.signal?.removeEventListener('abort', onAbort);
      if (!err) {
        channel.setMessageHandler(undefined);
        return resolve(keys!);
      }
      // Failed: what the peer still sends is dropped as it arrives. Without a handler the
      // channel would queue it (for a session that never comes) while the close frame waits
      // for the peer's answer: a keyless peer made a listener queue gigabytes that way.
      channel.setMessageHandler(discard);
      if (responder && err.reason === 'bad key') channel.close(CLOSE_BAD_KEY, 'bad key');
      else channel.terminate();
      reject(err);
    };
    const onAbort = (): void => finish(new HandshakeError(String(limit.signal?.reason)));
    const timer =
      limit.timeoutMs === undefined
        ? undefined
        : setTimeout(() => finish(new HandshakeError('timeout')), limit.timeoutMs);
    if (limit.signal?.aborted) return onAbort();
    limit.signal?.addEventListener('abort', onAbort);
    // The responder says `bad key` with a close code; any other close is just a close.
    channel.setCloseHandler((reason) =>
      finish(
        new HandshakeError(reason === 'bad key' && !responder ? 'bad key' : 'connection closed'),
      ),
    );
    channel.setMessageHandler((data, binary) => {
      if (settled) return;
      const result = binary ? step(data) : ({ ok: false, reason: 'bad message' } as const);
      if (!result.ok) return finish(new HandshakeError(result.reason));
      if (result.reply) channel.send(result.reply);
      if (result.keys) finish(undefined, result.keys);
    });
    if (first) channel.send(first);
  });
}

/**
 * The listener's handshake: sends HELLO at once, then expects AUTH_I proved by a ring key.
 * The listener passes its deadline as `limit.signal` (one deadline from the accept).
 */
export function respond(
  channel: MessageChannel,
  authKeys: readonly Buffer[],
  limit: HandshakeLimit = { timeoutMs: HANDSHAKE_TIMEOUT_MS },
): Promise<SessionKeys> {
  const hs = new ResponderHandshake(authKeys);
  return drive(channel, (m) => hs.receive(m), limit, true, hs.hello);
}

/** The dialer's handshake with the ring's first key. */
export function initiate(
  channel: MessageChannel,
  authKey: Buffer,
  timeoutMs = HANDSHAKE_TIMEOUT_MS,
): Promise<SessionKeys> {
  const hs = new InitiatorHandshake(authKey);
  return drive(channel, (m) => hs.receive(m), { timeoutMs }, false);
}
