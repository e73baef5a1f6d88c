import { dialFailure } from './dial';
import { HandshakeError } from './handshake-driver';

describe('dialFailure', () => {
  it('keeps the handshake reason as the metrics label', () => {
    expect(dialFailure(new HandshakeError('bad key'))).toEqual({
      reason: 'bad key',
      detail: 'bad key',
    });
  });

  it('labels socket, TLS, upgrade and proxy failures with fixed reasons, details kept for logs', () => {
    const err = (message: string, code?: string) => Object.assign(new Error(message), { code });
    expect(dialFailure(err('connect ECONNREFUSED 10.0.0.7:8080', 'ECONNREFUSED'))).toEqual({
      reason: 'connect failed',
      detail: 'connect ECONNREFUSED 10.0.0.7:8080',
    });
    expect(dialFailure(err('self-signed certificate', 'DEPTH_ZERO_SELF_SIGNED_CERT')).reason).toBe(
      'tls error',
    );
    expect(
      dialFailure(err('Hostname/IP does not match', 'ERR_TLS_CERT_ALTNAME_INVALID')).reason,
    ).toBe('tls error');
    expect(dialFailure(err('Unexpected server response: 503')).reason).toBe('upgrade refused');
    expect(dialFailure(err('proxy p:3128 refused CONNECT gpu:8080: HTTP 407')).reason).toBe(
      'proxy refused',
    );
  });
});
