export * from './constants';
export { deriveAuthKey, fingerprintOf } from './kdf';
export { InitiatorHandshake, ResponderHandshake } from './handshake';
export type { HandshakeFailure, HandshakeStep, SessionKeys } from './handshake';
export { FrameOpener, FrameSealer } from './cipher';
export { decodeFrame, encodeFrame, encodeHeaderInto } from './frames';
export type { EncodedFrame, Frame } from './frames';
export { Multiplexer } from './mux';
export type { MuxEvent } from './mux';
