import type { MessageChannel } from '../transport/channel';

type Handler = (data: Buffer, binary: boolean) => void;

/** Two connected in-memory channels (for unit tests of the session without sockets). */
export function memoryChannels(): [MessageChannel & { sendText(s: string): void }, MessageChannel] {
  const ends = [0, 1].map((i) => {
    let handler: Handler | undefined;
    let onClose: ((reason: string) => void) | undefined;
    let closed: string | undefined;
    const queue: [Buffer, boolean][] = [];
    return {
      peer: `memory:${i}`,
      deliver(data: Buffer, binary: boolean): void {
        if (closed !== undefined) return;
        if (handler) handler(data, binary);
        else queue.push([data, binary]);
      },
      end(reason: string): void {
        if (closed !== undefined) return;
        closed = reason;
        onClose?.(reason);
      },
      setMessageHandler(h: Handler | undefined): void {
        handler = h;
        while (handler && queue.length > 0) handler(...queue.shift()!);
      },
      setCloseHandler(h: (reason: string) => void): void {
        onClose = h;
        if (closed !== undefined) h(closed);
      },
    };
  });
  const make = (self: (typeof ends)[number], other: (typeof ends)[number]) => ({
    peer: self.peer,
    send: (data: Buffer | readonly Buffer[], sent?: (bytes: number) => void) =>
      setImmediate(() => {
        const message = Buffer.concat(Buffer.isBuffer(data) ? [data] : data);
        other.deliver(message, true);
        sent?.(message.length);
      }),
    sendText: (text: string) => setImmediate(() => other.deliver(Buffer.from(text), false)),
    close: () => setImmediate(() => (self.end('connection lost'), other.end('connection lost'))),
    terminate: () => (self.end('connection lost'), other.end('connection lost')),
    setMessageHandler: self.setMessageHandler,
    setCloseHandler: self.setCloseHandler,
  });
  return [make(ends[0], ends[1]), make(ends[1], ends[0])];
}
