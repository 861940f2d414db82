/**
 * Fail-closed configuration: loadConfig refuses settings that would silently weaken the server
 * (each refusal names the setting), loads the secure ones, and a development-mode server (no
 * token key) listens on loopback only unless HOST says otherwise.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig, unknownSettings } from './config.js';
import { startServer, type TetherServer } from './server.js';

const SECRET = 'config-test-secret-of-at-least-32-characters';
const ORIGINS = 'https://app.example.com';
const silent = pino({ level: 'silent' });

/** The TypeError loadConfig throws for `env`, or fails the test when it loads. */
function refusal(env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(TypeError);
    return (error as Error).message;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('NODE_ENV=production fails closed', () => {
  it('refuses to start without a token key (anonymous clients)', () => {
    const message = refusal({ NODE_ENV: 'production', TETHER_ALLOWED_ORIGINS: ORIGINS });
    expect(message).toMatch(/TETHER_TOKEN_SECRET/);
    expect(message).toMatch(/NODE_ENV=production/);
  });

  it('refuses to start without TETHER_ALLOWED_ORIGINS', () => {
    for (const origins of [undefined, '', '   ', ' , ,']) {
      const env: NodeJS.ProcessEnv = { NODE_ENV: 'production', TETHER_TOKEN_SECRET: SECRET };
      if (origins !== undefined) env.TETHER_ALLOWED_ORIGINS = origins;
      expect(refusal(env)).toMatch(/TETHER_ALLOWED_ORIGINS/);
    }
  });

  it('does not take a blank secret for "no secret" (which would be development mode)', () => {
    expect(refusal({ NODE_ENV: 'production', TETHER_TOKEN_SECRET: '', TETHER_ALLOWED_ORIGINS: ORIGINS })).toMatch(/TETHER_TOKEN_SECRET/);
  });

  it('loads with a secret and an origin list, and with * for every site', () => {
    const config = loadConfig({ NODE_ENV: 'production', TETHER_TOKEN_SECRET: SECRET, TETHER_ALLOWED_ORIGINS: `${ORIGINS}, https://admin.example.com` });
    expect(config).toMatchObject({ production: true, tokenSecret: SECRET, allowedOrigins: [ORIGINS, 'https://admin.example.com'] });
    expect(loadConfig({ NODE_ENV: 'production', TETHER_TOKEN_SECRET: SECRET, TETHER_ALLOWED_ORIGINS: '*' }).allowedOrigins).toEqual(['*']);
  });

  it('loads with a public key file instead of a secret', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-config-'));
    try {
      const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      const file = join(dir, 'key.pem');
      writeFileSync(file, publicKey.export({ type: 'spki', format: 'pem' }));
      const config = loadConfig({ NODE_ENV: 'production', TETHER_TOKEN_PUBLIC_KEY_FILE: file, TETHER_ALLOWED_ORIGINS: ORIGINS });
      expect(config.tokenPublicKey).toContain('BEGIN PUBLIC KEY');
      expect(config.tokenSecret).toBeUndefined();
      // A key file that cannot be read is an error, not "no key".
      expect(refusal({ NODE_ENV: 'production', TETHER_TOKEN_PUBLIC_KEY_FILE: join(dir, 'missing.pem'), TETHER_ALLOWED_ORIGINS: ORIGINS })).toMatch(/TETHER_TOKEN_PUBLIC_KEY_FILE/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('development mode (no NODE_ENV) still loads without a key, and reports it', () => {
    expect(loadConfig({})).toMatchObject({ production: false, tokenSecret: undefined, allowedOrigins: [], host: undefined });
    expect(loadConfig({ NODE_ENV: 'development' }).production).toBe(false);
  });
});

describe('secrets: blank or whitespace-padded values are refused', () => {
  const secrets = ['TETHER_TOKEN_SECRET', 'TETHER_API_KEY', 'TETHER_RPC_PROXY_SECRET'] as const;
  const padded = (value: string) => [` ${value}`, `${value} `, `${value}\n`, `\t${value}`, `${value}\r\n`];

  for (const name of secrets) {
    it(`${name}: blank is refused`, () => {
      for (const blank of ['', ' ', '\n', '\t \r\n']) {
        const message = refusal({ [name]: blank });
        expect(message).toMatch(new RegExp(`^${name} `));
        expect(message).toMatch(/blank/);
      }
    });

    it(`${name}: leading or trailing whitespace is refused, without echoing the secret`, () => {
      for (const value of padded(SECRET)) {
        const message = refusal({ [name]: value });
        expect(message).toMatch(new RegExp(`^${name} `));
        expect(message).toMatch(/whitespace/);
        expect(message).not.toContain(SECRET);
      }
    });
  }

  it('the same values without padding load', () => {
    const config = loadConfig({ TETHER_TOKEN_SECRET: SECRET, TETHER_API_KEY: 'api key with inner spaces', TETHER_RPC_PROXY_SECRET: 'proxy-secret' });
    expect(config).toMatchObject({ tokenSecret: SECRET, apiKey: 'api key with inner spaces', rpcProxySecret: 'proxy-secret' });
  });

  it('a token secret under 32 characters is refused', () => {
    expect(refusal({ TETHER_TOKEN_SECRET: 'x'.repeat(31) })).toMatch(/TETHER_TOKEN_SECRET must be at least 32 characters/);
  });
});

describe('TETHER_RPC_PROXY_URL', () => {
  it('needs TETHER_RPC_PROXY_SECRET', () => {
    const message = refusal({ TETHER_RPC_PROXY_URL: 'https://backend.example.com/rpc' });
    expect(message).toMatch(/TETHER_RPC_PROXY_URL needs TETHER_RPC_PROXY_SECRET/);
  });

  it.each([
    'http://backend.example.com/rpc',
    'http://10.0.0.5:8000/rpc',
    'http://192.168.1.10/rpc',
    'http://127.0.0.1@evil.example/rpc', // userinfo: the host is evil.example
    'http://[::ffff:10.0.0.1]/rpc',
    'http://0.0.0.0:8000/rpc',
  ])('refuses http:// to a host that is not loopback: %s', (url) => {
    expect(refusal({ TETHER_RPC_PROXY_URL: url, TETHER_RPC_PROXY_SECRET: 's' })).toMatch(/TETHER_RPC_PROXY_URL: http:\/\/ is allowed only to/);
  });

  it.each([
    'http://127.0.0.1.evil.example/rpc', // a DNS name that only starts like a loopback address
    'http://127.0.0.1.nip.io/rpc',
    'http://localhost.evil.example/rpc',
  ])('refuses http:// to a DNS name that merely looks like loopback: %s', (url) => {
    expect(refusal({ TETHER_RPC_PROXY_URL: url, TETHER_RPC_PROXY_SECRET: 's' })).toMatch(/TETHER_RPC_PROXY_URL/);
  });

  it.each([
    'http://localhost:8000/rpc',
    'http://127.0.0.1:8000/rpc',
    'http://127.1.2.3/rpc',
    'http://[::1]:8000/rpc',
    'HTTP://LOCALHOST/rpc',
    'https://backend.example.com/rpc',
    'https://10.0.0.5/rpc',
  ])('accepts %s with a secret', (url) => {
    expect(loadConfig({ TETHER_RPC_PROXY_URL: url, TETHER_RPC_PROXY_SECRET: 's' }).rpcProxyUrl).toBe(url);
  });

  it.each(['ftp://localhost/rpc', 'file:///etc/passwd', 'not a url', 'javascript:alert(1)'])('refuses %s', (url) => {
    expect(refusal({ TETHER_RPC_PROXY_URL: url, TETHER_RPC_PROXY_SECRET: 's' })).toMatch(/TETHER_RPC_PROXY_URL/);
  });
});

describe('TETHER_DEFAULT_GRANTS', () => {
  it.each([
    ['not JSON', '{channels: [*]}', /TETHER_DEFAULT_GRANTS is not JSON/],
    ['an array', '["*"]', /TETHER_DEFAULT_GRANTS must be a JSON object/],
    ['a string', '"*"', /TETHER_DEFAULT_GRANTS must be a JSON object/],
    ['null', 'null', /TETHER_DEFAULT_GRANTS must be a JSON object/],
    ['an unknown grant', '{"channel":["*"]}', /TETHER_DEFAULT_GRANTS: unknown grant "channel"/],
    ['patterns that are not an array', '{"channels":"*"}', /TETHER_DEFAULT_GRANTS: channels must be an array/],
    ['an empty pattern', '{"docs":[""]}', /TETHER_DEFAULT_GRANTS: docs must be an array/],
    ['a pattern that is not a string', '{"rpc":[1]}', /TETHER_DEFAULT_GRANTS: rpc must be an array/],
    ['a pattern over 200 characters', `{"subscribe":["${'a'.repeat(201)}"]}`, /TETHER_DEFAULT_GRANTS: subscribe must be an array/],
  ])('refuses %s', (_name, value, message) => {
    expect(refusal({ TETHER_DEFAULT_GRANTS: value })).toMatch(message);
  });

  it('loads valid grants, and keeps the default (procedures only) when unset', () => {
    expect(loadConfig({ TETHER_DEFAULT_GRANTS: '{"channels":["room:*"],"rpc":["hello"]}' }).defaultGrants).toEqual({ channels: ['room:*'], rpc: ['hello'] });
    expect(loadConfig({}).defaultGrants).toEqual({ rpc: ['*'] });
  });
});

describe('numeric limits', () => {
  it.each([
    ['TETHER_HEADERS_TIMEOUT_MS', '500'],
    ['TETHER_HEADERS_TIMEOUT_MS', 'ten'],
    ['TETHER_MAX_CONNECTIONS', '0'],
    ['TETHER_MAX_CONNECTIONS_PER_IP', '-1'],
    ['TETHER_MAX_RPC_IN_FLIGHT', '1.5'],
    ['TETHER_MAX_DOC_BYTES', '10'],
    ['TETHER_MAX_BUFFERED_BYTES', '1e12'],
    ['TETHER_MAX_SUBSCRIPTIONS', '100001'],
    ['TETHER_LONG_POLL_MS', '30000'],
    ['TETHER_LONG_POLL_MS', '999'],
    ['TETHER_METRICS_PORT', '65536'],
    ['TETHER_METRICS_PORT', '-1'],
    ['TETHER_METRICS_PORT', '9100.5'],
    ['TETHER_METRICS_PORT', 'metrics'],
    ['TETHER_PRESENCE_LINGER_MS', '60001'],
    ['TETHER_PRESENCE_LINGER_MS', '-1'],
    ['TETHER_PRESENCE_LINGER_MS', '2.5'],
  ])('refuses %s=%s naming the setting', (name, value) => {
    expect(refusal({ [name]: value })).toMatch(new RegExp(`^${name} must be an integer between`));
  });

  it('loads them in range', () => {
    expect(loadConfig({ TETHER_HEADERS_TIMEOUT_MS: '1000', TETHER_MAX_CONNECTIONS: '5', TETHER_MAX_CONNECTIONS_PER_IP: '3', TETHER_MAX_RPC_IN_FLIGHT: '4', TETHER_MAX_DOC_BYTES: '10000', TETHER_LONG_POLL_MS: '25000' })).toMatchObject({
      headersTimeoutMs: 1000, maxConnections: 5, maxConnectionsPerIp: 3, maxRpcInFlight: 4, maxDocBytes: 10_000, longPollMs: 25_000,
    });
    expect(loadConfig({}).longPollMs).toBe(20_000);
  });

  it('TETHER_METRICS_PORT: unset means no admin listener; set, on 127.0.0.1 unless TETHER_METRICS_HOST says otherwise', () => {
    expect(loadConfig({})).toMatchObject({ metricsPort: undefined, metricsHost: '127.0.0.1' });
    expect(loadConfig({ TETHER_METRICS_PORT: '' })).toMatchObject({ metricsPort: undefined });
    expect(loadConfig({ TETHER_METRICS_PORT: '9100' })).toMatchObject({ metricsPort: 9100, metricsHost: '127.0.0.1' });
    expect(loadConfig({ TETHER_METRICS_PORT: '0', TETHER_METRICS_HOST: ' 10.0.0.5 ' })).toMatchObject({ metricsPort: 0, metricsHost: '10.0.0.5' });
    expect(unknownSettings({ TETHER_METRICS_PORT: '9100', TETHER_METRICS_HOST: '127.0.0.1' })).toEqual([]);
  });

  it('loads the presence linger from 0 (leave at once) to 60000, 5000 by default, and knows its name', () => {
    expect(loadConfig({ TETHER_PRESENCE_LINGER_MS: '0' }).presenceLingerMs).toBe(0);
    expect(loadConfig({ TETHER_PRESENCE_LINGER_MS: '60000' }).presenceLingerMs).toBe(60_000);
    expect(loadConfig({}).presenceLingerMs).toBe(5000);
    expect(unknownSettings({ TETHER_PRESENCE_LINGER_MS: '100' })).toEqual([]);
  });
});

describe('unknownSettings', () => {
  it('lists mistyped TETHER_* names, not known ones, other tools\' or other prefixes', () => {
    const env: NodeJS.ProcessEnv = {
      TETHER_TOKEN_SECERT: SECRET,
      TETHER_ALLOWED_ORIGIN: ORIGINS,
      TETHER_MAX_CONNECTION: '5',
      TETHER_TOKEN_SECRET: SECRET,
      TETHER_ALLOWED_ORIGINS: ORIGINS,
      TETHER_HEADERS_TIMEOUT_MS: '1000',
      TETHER_URL: 'ws://localhost:8080/ws',
      TETHER_BENCH_RUNS: '3',
      NODE_ENV: 'production',
      PATH: '/usr/bin',
    };
    expect(unknownSettings(env).sort()).toEqual(['TETHER_ALLOWED_ORIGIN', 'TETHER_MAX_CONNECTION', 'TETHER_TOKEN_SECERT']);
    expect(unknownSettings({})).toEqual([]);
  });
});

describe('listening address', () => {
  const servers: TetherServer[] = [];
  afterAll(async () => {
    for (const server of servers) await server.close();
  });

  /** Whether a TCP connection to address:port is accepted (a refusal or a 2 s silence is "no"). */
  function reachable(address: string, port: number): Promise<{ ok: boolean; why: string }> {
    return new Promise((resolve) => {
      const socket = connect({ host: address, port });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve({ ok: false, why: 'timeout' });
      }, 2000);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.destroy();
        resolve({ ok: true, why: 'connected' });
      });
      socket.once('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve({ ok: false, why: error.code ?? error.message });
      });
    });
  }

  const external = Object.values(networkInterfaces())
    .flat()
    .find((info) => info !== undefined && info.family === 'IPv4' && !info.internal)?.address;

  it('development mode without host listens on 127.0.0.1 only', async () => {
    expect(loadConfig({}).host).toBeUndefined();
    const dev = await startServer({ port: 0, logger: silent, clientDir: '/nonexistent', db: ':memory:' });
    servers.push(dev);
    const health = (await (await fetch(`http://127.0.0.1:${dev.port}/api/health`)).json()) as Record<string, unknown>;
    expect(health.mode).toBe('development');
    expect(await reachable('127.0.0.1', dev.port)).toEqual({ ok: true, why: 'connected' });
    if (external === undefined) {
      console.log('[listening address] no non-loopback IPv4 address on this machine: the "not reachable from the network" half is skipped');
      return;
    }
    const fromNetwork = await reachable(external, dev.port);
    console.log(`[listening address] development server on ${external}:${dev.port}: ${fromNetwork.why}`);
    expect(fromNetwork.ok).toBe(false);
  });

  it('control: a server with token checking and no host is reachable on that address (the probe works)', async () => {
    if (external === undefined) {
      console.log('[listening address] no non-loopback IPv4 address on this machine: control skipped');
      return;
    }
    const secure = await startServer({ port: 0, logger: silent, clientDir: '/nonexistent', db: ':memory:', tokenSecret: SECRET });
    servers.push(secure);
    const health = (await (await fetch(`http://127.0.0.1:${secure.port}/api/health`)).json()) as Record<string, unknown>;
    expect(health.mode).toBe('secure');
    const fromNetwork = await reachable(external, secure.port);
    console.log(`[listening address] secure server on ${external}:${secure.port}: ${fromNetwork.why}`);
    expect(fromNetwork.ok).toBe(true);
  });

  it('HOST still overrides in development mode', async () => {
    const dev = await startServer({ port: 0, host: '127.0.0.2', logger: silent, clientDir: '/nonexistent', db: ':memory:' });
    servers.push(dev);
    expect((await reachable('127.0.0.2', dev.port)).ok).toBe(true);
    expect((await reachable('127.0.0.1', dev.port)).ok).toBe(false);
  });
});
