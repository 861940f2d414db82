import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test as base, expect, callFrom, openWithClient, waitForConnection, PROCEDURES, signToken, TOKEN_SECRET as SECRET } from './fixtures/test.js';

const API_KEY = 'test-api-key';
const PROXY_SECRET = 'test-proxy-secret';

interface BackendCall {
  headers: IncomingMessage['headers'];
  body: { method: string; args: unknown[]; user: string | null };
}

/** A stand-in for the app's existing backend (a Django view, a Rails controller): plain HTTP + JSON. */
async function startBackend(): Promise<{ server: Server; url: string; calls: BackendCall[] }> {
  const calls: BackendCall[] = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (chunk: Buffer) => (raw += chunk.toString()));
    req.on('end', () => {
      const body = JSON.parse(raw) as BackendCall['body'];
      calls.push({ headers: req.headers, body });
      const reply = (status: number, payload: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(payload));
      };
      if (req.headers.authorization !== `Bearer ${PROXY_SECRET}`) return reply(401, { error: { code: 'unauthorized', message: 'bad key' } });
      if (body.method === 'billing.total') return reply(200, { result: { total: 42, for: req.headers['x-tether-user'] } });
      if (body.method === 'billing.refund') return reply(403, { error: { code: 'forbidden', message: 'refunds need a manager' } });
      if (body.method === 'billing.crash') return reply(500, 'Internal Server Error');
      return reply(404, { error: { code: 'not_found', message: `no such procedure: ${body.method}` } });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/tether/rpc`, calls };
}

function token(sub: string, expiresIn = '1h', secret = SECRET): Promise<string> {
  return signToken(sub, { expiresIn, secret });
}

const test = base.extend<{ backend: Awaited<ReturnType<typeof startBackend>> }>({
  backend: async ({}, use) => {
    const backend = await startBackend();
    await use(backend);
    await new Promise((resolve) => backend.server.close(resolve));
  },
  serverEnv: async ({ backend }, use) => {
    await use({
      TETHER_PROCEDURES: PROCEDURES,
      TETHER_TOKEN_SECRET: SECRET,
      TETHER_ALLOWED_ORIGINS: '*', // sockets through the cuttable proxy: another origin than the page's
      TETHER_API_KEY: API_KEY,
      TETHER_RPC_PROXY_URL: backend.url,
      TETHER_RPC_PROXY_SECRET: PROXY_SECRET,
      TETHER_RPC_PROXY_METHODS: 'billing.*',
    });
  },
});

test('procedures proxied to the backend carry the caller identity; its answers and errors come back typed', async ({ browser, server, backend }) => {
  const context = await browser.newContext();
  const tab = await openWithClient(context, server.httpUrl, { url: server.wsUrl, token: await token('user-17') });
  await waitForConnection(tab, 'online');

  expect(await callFrom(tab, 'billing.total', [2026])).toEqual({ ok: true, value: { total: 42, for: 'user-17' } });
  expect(backend.calls[0]?.body).toEqual({ method: 'billing.total', args: [2026], user: 'user-17' });
  expect(backend.calls[0]?.headers['x-tether-user']).toBe('user-17');
  // The proxy has its own secret: the key to the HTTP API never leaves the server.
  expect(backend.calls[0]?.headers.authorization).toBe(`Bearer ${PROXY_SECRET}`);

  expect(await callFrom(tab, 'billing.refund', [])).toMatchObject({ ok: false, code: 'forbidden', message: 'refunds need a manager' });
  expect(await callFrom(tab, 'billing.nothing', [])).toMatchObject({ ok: false, code: 'not_found' });
  expect(await callFrom(tab, 'billing.crash', [])).toMatchObject({ ok: false, code: 'internal', message: 'the backend answered billing.crash with HTTP 500' });
  // Not covered by TETHER_RPC_PROXY_METHODS: never forwarded.
  const before = backend.calls.length;
  expect(await callFrom(tab, 'reports.secret', [])).toMatchObject({ ok: false, code: 'not_found' });
  expect(backend.calls.length).toBe(before);
  // Local procedures still answer, and see the same identity.
  expect(await callFrom(tab, 'whoami', [])).toEqual({ ok: true, value: { user: 'user-17' } });
  expect(JSON.stringify(server.logs)).not.toContain(API_KEY);
  expect(JSON.stringify(server.logs)).not.toContain(PROXY_SECRET);
  await context.close();
});

test('a token the server refuses: calls fail with unauthorized and say why', async ({ browser, server }) => {
  const cases = [
    { name: 'no token', token: undefined, message: 'a token is required' },
    { name: 'forged signature', token: await token('mallory', '1h', 'another-secret-of-at-least-32-characters!'), message: 'the token is invalid' },
    { name: 'expired', token: await token('late', '-1s'), message: 'the token has expired' },
  ];
  for (const { name, token, message } of cases) {
    const context = await browser.newContext();
    const tab = await openWithClient(context, server.httpUrl, token === undefined ? { url: server.wsUrl } : { url: server.wsUrl, token });
    const result = await callFrom(tab, 'hello', ['world']);
    expect(result, name).toEqual({ ok: false, name: 'TetherError', code: 'unauthorized', message: `the server refused the connection: ${message}` });
    await context.close();
  }
});

test('a token function is asked again on every reconnect', async ({ browser, server, network }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.httpUrl}/api/health`);
  await page.addScriptTag({ url: '/tether.js' });
  const first = await token('rotating-user');
  const second = await token('rotating-user');
  await page.evaluate(
    ({ url, tokens }) => {
      const w = window as unknown as { asked: number };
      w.asked = 0;
      window.tether = window.Tether.connect({ url, token: async () => tokens[Math.min(w.asked++, tokens.length - 1)]! });
    },
    { url: `ws://127.0.0.1:${network.port}/ws`, tokens: [first, second] },
  );
  await waitForConnection(page, 'online');
  expect(await page.evaluate(() => (window as unknown as { asked: number }).asked)).toBe(1);
  network.refuse();
  await waitForConnection(page, 'offline');
  await network.restore();
  await waitForConnection(page, 'online', 15_000);
  expect(await page.evaluate(() => (window as unknown as { asked: number }).asked)).toBeGreaterThanOrEqual(2);
  expect(await callFrom(page, 'whoami', [])).toEqual({ ok: true, value: { user: 'rotating-user' } });
  await context.close();
});
