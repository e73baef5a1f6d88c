import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { apiTarget, isRelayConfig, localUrl, relayAdminUrl } from './http';

const dir = mkdtempSync(path.join(tmpdir(), 'gsc-cli-http-'));
const envFile = (name: string, text: string) => {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
};

describe('where the CLI calls', () => {
  const saved = { ...process.env };
  beforeEach(() => {
    for (const k of ['API_LISTEN', 'RELAY_LISTEN', 'ADMIN_LISTEN']) delete process.env[k];
  });
  afterAll(() => {
    process.env = saved;
  });

  it('takes --url first, then API_LISTEN (a wildcard reached on loopback)', () => {
    const worker = envFile('worker.env', 'API_LISTEN=0.0.0.0:8100\nADMIN_LISTEN=127.0.0.1:9500\n');
    expect(apiTarget({ url: 'http://gpu1:8000/', envFile: worker })).toEqual({
      url: 'http://gpu1:8000',
      from: '--url',
    });
    expect(apiTarget({ envFile: worker })).toEqual({
      url: 'http://127.0.0.1:8100',
      from: 'API_LISTEN',
    });
    expect(relayAdminUrl({ envFile: worker })).toBe('http://127.0.0.1:9500');
  });

  it("takes RELAY_LISTEN with a relay's configuration (the front host), never 127.0.0.1:8000", () => {
    const relay = envFile(
      'relay.env',
      'TUNNEL_CONNECT=ws://gpu1:8080\nRELAY_LISTEN=127.0.0.1:8101\n',
    );
    expect(apiTarget({ envFile: relay })).toEqual({
      url: 'http://127.0.0.1:8101',
      from: 'RELAY_LISTEN',
    });
    // Only ADMIN_LISTEN set: still a relay, on RELAY_LISTEN's default.
    const admin = envFile('admin.env', 'ADMIN_LISTEN=[::1]:9464\n');
    expect(apiTarget({ envFile: admin }).url).toBe('http://127.0.0.1:8001');
    expect(relayAdminUrl({ envFile: admin })).toBe('http://[::1]:9464');
    expect(isRelayConfig({ RELAY_LISTEN: 'x', API_LISTEN: 'y' })).toBe(false);
  });

  it('falls back to the worker API on 127.0.0.1:8000 and the admin port 9464', () => {
    const none = envFile('none.env', 'LOG_LEVEL=info\n');
    expect(apiTarget({ envFile: none })).toEqual({ url: 'http://127.0.0.1:8000', from: 'default' });
    expect(relayAdminUrl({ envFile: none })).toBe('http://127.0.0.1:9464');
  });
});

describe('localUrl', () => {
  it('calls a wildcard listener on 127.0.0.1 and brackets an IPv6 address', () => {
    expect(localUrl('127.0.0.1', 9464)).toBe('http://127.0.0.1:9464');
    expect(localUrl('0.0.0.0', 8000)).toBe('http://127.0.0.1:8000');
    expect(localUrl('::', 8000)).toBe('http://127.0.0.1:8000');
    expect(localUrl('::1', 9464)).toBe('http://[::1]:9464');
    expect(localUrl('fd00::5', '8001')).toBe('http://[fd00::5]:8001');
    expect(new URL(`${localUrl('::1', 9464)}/healthz`).hostname).toBe('[::1]');
  });
});
