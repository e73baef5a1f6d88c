import { HANDSHAKE_TIMEOUT_MS, InitiatorHandshake, ResponderHandshake } from './protocol';
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

/**
 * Runs a handshake state machine over a channel: feeds it each message, sends its replies,
 * and settles on keys or on the first failure, the channel closing, or the timeout. On failure
 * the channel is dropped; on success its message handler is cleared (messages queue up until
 * the session takes over).
 */
function drive(
  channel: MessageChannel,
  step: Step,
  timeoutMs: number,
  first?: Buffer,
): Promise<SessionKeys> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err: HandshakeError | undefined, keys?: SessionKeys): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      channel.setMessageHandler(undefined);
      if (err) {
        channel.terminate();
        reject(err);
      } else resolve(keys!);
    };
    const timer = setTimeout(() => finish(new HandshakeError('timeout')), timeoutMs);
    channel.setCloseHandler(() => finish(new HandshakeError('connection closed')));
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

/** The listener's handshake: sends HELLO at once, then expects AUTH_I proved by a ring key. */
export function respond(
  channel: MessageChannel,
  authKeys: readonly Buffer[],
  timeoutMs = HANDSHAKE_TIMEOUT_MS,
): Promise<SessionKeys> {
  const hs = new ResponderHandshake(authKeys);
  return drive(channel, (m) => hs.receive(m), timeoutMs, hs.hello);
}

/** The dialer's handshake with the ring's first key. */
export function initiate(
  channel: MessageChannel,
  authKey: Buffer,
  timeoutMs = HANDSHAKE_TIMEOUT_MS,
): Promise<SessionKeys> {
  const hs = new InitiatorHandshake(authKey);
  return drive(channel, (m) => hs.receive(m), timeoutMs);
}
