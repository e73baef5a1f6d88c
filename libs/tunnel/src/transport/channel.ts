/**
 * A message-oriented, ordered, reliable connection: what the handshake and the session need
 * from the transport. The ws adapter implements it; tests can implement it in memory.
 */
export interface MessageChannel {
  /** The remote address, for logs and metrics (`host:port`). */
  readonly peer: string;
  /**
   * Sends one binary message, given whole or as parts whose concatenation is the message (the
   * ws adapter writes parts with one gathered write instead of joining them). `sent`, if
   * given, runs with the message's length in bytes once the message has left the process's
   * own buffers (handed to the kernel) or the connection is gone: the session counts the bytes
   * between send and `sent` to keep its send queue short (docs/PROTOCOL.md, "Send
   * scheduling"), and passes one callback for every message instead of a closure each.
   */
  send(data: Buffer | readonly Buffer[], sent?: (bytes: number) => void): void;
  /** Orderly close (WebSocket close handshake); the close handler runs once it is done. */
  close(code?: number, reason?: string): void;
  /** Drops the connection at once. */
  terminate(): void;
  /**
   * Sets the handler for incoming messages. While none is set, messages are queued, so that
   * handing the channel from the handshake to the session can never lose one.
   */
  setMessageHandler(handler: ((data: Buffer, binary: boolean) => void) | undefined): void;
  /** Sets the handler called once when the connection is gone (now, if it is gone already). */
  setCloseHandler(handler: (reason: string) => void): void;
}
