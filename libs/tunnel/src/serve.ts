import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../../config/src';
import { FailureLog } from './failure-log';
import { noopTunnelMetrics, type TunnelMetrics } from './metrics';
import type { TunnelSession } from './session';
import type { TunnelStream } from './stream';

/** A target a worker exposes by name (the relay only ever sends the name). */
export interface TargetAddress {
  host: string;
  port: number;
}

/**
 * A target served inside this process: each stream is handed to `accept` as the connection
 * itself, with no TCP connection to make (the worker's own API: `http.Server` takes any Duplex
 * as a connection, Node's documented 'connection' event).
 */
export interface LocalTarget {
  accept(stream: Duplex): void;
}

export type Target = TargetAddress | LocalTarget;

/**
 * Serves the peer's streams: each stream to a known target name becomes a TCP connection to
 * it, piped both ways with half-close kept (FIN ↔ TCP FIN), or, for a LocalTarget, is handed
 * to it as the connection. Unknown names are RESET with
 * 'unknown target', refused connections with 'target refused'; both are logged and counted.
 * Only authenticated sessions exist, so no unauthenticated peer ever reaches a target.
 */
export function serveTargets(
  session: TunnelSession,
  targets: ReadonlyMap<string, Target>,
  logger: Logger,
  metrics: TunnelMetrics = noopTunnelMetrics,
): void {
  // A peer may open streams to a name we do not serve as fast as it likes: logged a few at a
  // time (the target name it chose is only ever a log field, never a metric label).
  const refusals = new FailureLog(logger, 'tunnel stream refused');
  session.once('close', () => refusals.flush());
  session.on('stream', (target: string, stream: TunnelStream) => {
    const address = targets.get(target);
    const refuse = (reason: string): void => {
      refusals.note(reason, { peer: session.peer, target });
      metrics.streamRefused(reason);
      stream.reset(reason);
    };
    stream.on('error', () => undefined);
    if (!address) return refuse('unknown target');
    if ('accept' in address) return address.accept(stream);
    const socket = connect({ host: address.host, port: address.port, allowHalfOpen: true });
    socket.setNoDelay(true);
    let connected = false;
    socket.once('connect', () => {
      connected = true;
      splice(stream, socket);
    });
    // The stream can end before the target answers (the session was cut, or the peer reset it):
    // the connection then has no one to serve, so it is not left open to the target.
    stream.once('close', () => {
      if (!connected) socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected) return refuse('target refused');
      logger.debug({ target, code: err.code }, 'tunnel target connection error');
      stream.reset('target error');
    });
  });
}

/** How splice() ends one side when the other ends abruptly. */
export interface SpliceOptions {
  /** The RESET reason when the socket closes without its end (default 'target closed'). */
  socketClosed?: string;
  /**
   * Asked when the stream ends abruptly: true keeps the socket open, for a caller that is
   * writing its own answer on it (the relay's 502/503 to an HTTP client).
   */
  keepSocket?: () => boolean;
}

/**
 * Joins a stream and a socket both ways (the stream's data straight to the socket:
 * TunnelStream.deliverTo; the socket's piped to the stream); either side's end becomes the
 * other's half-close.
 * Only an abrupt end (error, reset, or a close without end) cuts the other side: an orderly
 * close lets each pipe flush what it still holds.
 */
export function splice(stream: TunnelStream, socket: Socket, opts: SpliceOptions = {}): void {
  stream.deliverTo(socket);
  socket.pipe(stream);
  stream.once('close', () => {
    if ((stream.errored || !stream.readableEnded) && !opts.keepSocket?.()) socket.destroy();
  });
  socket.once('close', () => {
    if (!socket.readableEnded) stream.reset(opts.socketClosed ?? 'target closed');
  });
}
