import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { test as base, expect, apiHistory, callFrom, docView, openWithClient, receivedIn, subscribeIn, waitForConnection, TOKEN_SECRET } from './fixtures/test.js';

const SCRIPT = fileURLToPath(new URL('../examples/python/tether_backend.py', import.meta.url));
const API_KEY = 'e2e-api-key';
const PROXY_SECRET = 'e2e-proxy-secret';
const run = promisify(execFile);

/** The example's RPC endpoint, as a Python backend would run it. */
const test = base.extend<{ pythonRpc: { url: string; process: ChildProcess } }>({
  pythonRpc: async ({}, use) => {
    const child = spawn('python3', [SCRIPT, 'serve-rpc', '0'], { env: { ...process.env, TETHER_RPC_PROXY_SECRET: PROXY_SECRET }, stdio: ['ignore', 'pipe', 'inherit'] });
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('python RPC handler did not start')), 10_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const match = /^listening (\d+)$/.exec(line);
        if (match) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      });
    });
    await use({ url: `http://127.0.0.1:${port}/tether/rpc`, process: child });
    child.kill();
  },
  serverEnv: async ({ pythonRpc }, use) => {
    await use({
      TETHER_TOKEN_SECRET: TOKEN_SECRET,
      TETHER_API_KEY: API_KEY,
      TETHER_RPC_PROXY_URL: pythonRpc.url,
      TETHER_RPC_PROXY_SECRET: PROXY_SECRET,
      TETHER_RPC_PROXY_METHODS: 'orders.*',
    });
  },
});

test('the Python example: its token signs a browser in, its publish, history and document commit reach the browser, its RPC handler answers through the proxy', async ({ browser, server }) => {
  const env = { ...process.env, TETHER_URL: server.httpUrl, TETHER_API_KEY: API_KEY, TETHER_TOKEN_SECRET: TOKEN_SECRET };
  const { stdout: token } = await run('python3', [SCRIPT, 'token', 'alice', 'orders', 'board'], { env });

  const context = await browser.newContext();
  const tab = await openWithClient(context, server.httpUrl, { url: server.wsUrl, token: token.trim() });
  await waitForConnection(tab, 'online');
  expect(await subscribeIn(tab, 'orders')).toBeUndefined();
  await expect.poll(() => tab.evaluate(() => window.tether.state.doc('board').status.getState().synced)).toBe(true);

  const { stdout } = await run('python3', [SCRIPT, 'demo'], { env });
  const steps = stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
  expect(steps.map((s) => s.step)).toEqual(['token', 'publish', 'history', 'transact']);
  const published = steps[1]!.offset as number;
  expect(steps[2]!.events).toEqual([expect.objectContaining({ offset: published, data: { order: 42, status: 'paid' } })]);

  // The browser got the event once, and sees the document commit live.
  await expect.poll(() => receivedIn(tab, 'orders')).toEqual([{ data: { order: 42, status: 'paid' }, offset: published }]);
  await expect.poll(() => docView(tab, 'board')).toEqual({ orders_paid: 1 });

  // Run again: the Idempotency-Key keeps the publish single; the counter transaction builds on the last version.
  const again = (await run('python3', [SCRIPT, 'demo'], { env })).stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(again[1]!.offset).toBe(published);
  expect(await apiHistory(server.httpUrl, 'orders', API_KEY)).toHaveLength(1);
  await expect.poll(() => docView(tab, 'board')).toEqual({ orders_paid: 2 });

  // The procedures the server forwards to the Python handler, with the caller's identity.
  expect(await callFrom(tab, 'orders.total', [5, 7])).toEqual({ ok: true, value: { user: 'alice', total: 12 } });
  expect(await callFrom(tab, 'orders.refund', [42])).toMatchObject({ ok: false, code: 'forbidden', message: 'alice may not refund orders' });
  expect(await callFrom(tab, 'orders.total', ['x'])).toMatchObject({ ok: false, code: 'invalid_argument' });
  await context.close();
});

test('the Python example fails clearly without its settings or with a wrong key', async ({ server }) => {
  const missing = await run('python3', [SCRIPT, 'demo'], { env: { PATH: process.env.PATH ?? '' } }).catch((e: { code: number; stderr: string }) => e);
  expect(missing).toMatchObject({ code: 2, stderr: expect.stringContaining('set TETHER_API_KEY in the environment') });
  const wrong = await run('python3', [SCRIPT, 'demo'], {
    env: { ...process.env, TETHER_URL: server.httpUrl, TETHER_API_KEY: 'wrong', TETHER_TOKEN_SECRET: TOKEN_SECRET },
  }).catch((e: { code: number; stderr: string }) => e);
  expect(wrong).toMatchObject({ code: 1, stderr: expect.stringContaining('401 unauthorized') });
});
