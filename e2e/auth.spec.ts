import type { BrowserContext } from '@playwright/test';
import { test, expect, apiHistory, apiPublish, openWithClient, signToken, subscribeIn, waitForConnection, TOKEN_SECRET, PROCEDURES } from './fixtures/test.js';

// The sockets go through the cuttable proxy (another port, so another origin than the page's): allowed explicitly.
test.use({ serverEnv: { TETHER_TOKEN_SECRET: TOKEN_SECRET, TETHER_PROCEDURES: PROCEDURES, TETHER_ALLOWED_ORIGINS: '*' } });

async function tabAs(context: BrowserContext, httpUrl: string, wsUrl: string, token: string) {
  const page = await openWithClient(context, httpUrl, { url: wsUrl, token });
  await waitForConnection(page, 'online').catch(() => {});
  return page;
}

test('the channels claim is enforced on subscribe and publish; a refused write does not block the queue', async ({ browser, server, network }) => {
  const context = await browser.newContext();
  const token = await signToken('carol', { channels: ['room:*', 'lobby'] });
  const tab = await tabAs(context, server.httpUrl, `ws://127.0.0.1:${network.port}/ws`, token);

  expect(await subscribeIn(tab, 'room:42')).toBeUndefined();
  expect(await subscribeIn(tab, 'admin')).toBe('forbidden');

  // Offline: an allowed write, a forbidden one, another allowed one — queued in that order.
  network.refuse();
  await waitForConnection(tab, 'offline');
  const results = tab.evaluate(() =>
    Promise.allSettled([
      window.tether.pubsub.publish('lobby', 'first'),
      window.tether.pubsub.publish('admin', 'sneaky'),
      window.tether.pubsub.publish('room:42', 'third'),
    ]).then((all) => all.map((r) => (r.status === 'fulfilled' ? 'stored' : `${(r.reason as { code: string }).code}: ${(r.reason as Error).message}`))),
  );
  await expect.poll(() => tab.evaluate(() => window.tether.status.getState().pending)).toBe(3);
  await network.restore();
  expect(await results).toEqual(['stored', 'forbidden: you may not publish to admin', 'stored']);
  expect(await apiHistory(server.httpUrl, 'admin')).toEqual([]);
  expect((await apiHistory(server.httpUrl, 'room:42')).map((e) => e.data)).toEqual(['third']);
  await context.close();
});

test("queued writes wait for their own user's token: never sent under another user's", async ({ browser, server, network }) => {
  const context = await browser.newContext();
  const viaProxy = `ws://127.0.0.1:${network.port}/ws`;
  const alice = await tabAs(context, server.httpUrl, viaProxy, await signToken('alice'));
  network.refuse();
  await waitForConnection(alice, 'offline');
  await alice.evaluate(() => {
    for (let i = 0; i < 3; i++) void window.tether.pubsub.publish('notes', `alice ${i}`);
  });
  await expect.poll(() => alice.evaluate(() => window.tether.status.getState().pending)).toBe(3);
  await alice.close();

  // Bob signs in on the same browser while Alice's writes are still queued.
  await network.restore();
  const bob = await tabAs(context, server.httpUrl, viaProxy, await signToken('bob'));
  expect(await bob.evaluate(() => window.tether.pubsub.pending())).toEqual([]);
  expect(await bob.evaluate(() => window.tether.pubsub.publish('notes', 'bob 0'))).toEqual({ offset: 1 });
  await bob.waitForTimeout(1000);
  expect((await apiHistory(server.httpUrl, 'notes')).map((e) => e.data)).toEqual(['bob 0']);
  await bob.close();

  // Alice comes back: her writes go out under her own token.
  const back = await tabAs(context, server.httpUrl, viaProxy, await signToken('alice'));
  await expect.poll(async () => (await apiHistory(server.httpUrl, 'notes')).map((e) => e.data)).toEqual(['bob 0', 'alice 0', 'alice 1', 'alice 2']);
  await expect.poll(() => back.evaluate(() => window.tether.status.getState().pending)).toBe(0);
  await context.close();
});

test('an expiring token: the server disconnects at expiry, the token function is asked again, the client is back online', async ({ browser, server }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.httpUrl}/api/health`);
  await page.addScriptTag({ url: '/tether.js' });
  const tokens = [await signToken('dave', { expiresIn: Math.floor(Date.now() / 1000) + 3 }), await signToken('dave')];
  await page.evaluate(
    ({ url, tokens }) => {
      const w = window as unknown as { asked: number; states: string[] };
      w.asked = 0;
      w.states = [];
      window.tether = window.Tether.connect({ url, token: async () => tokens[Math.min(w.asked++, tokens.length - 1)]! });
      window.tether.status.subscribe((s, prev) => s.connection !== prev.connection && w.states.push(s.connection));
    },
    { url: server.wsUrl, tokens },
  );
  await waitForConnection(page, 'online');
  await expect.poll(() => page.evaluate(() => (window as unknown as { asked: number }).asked), { timeout: 15_000 }).toBe(2);
  await waitForConnection(page, 'online', 15_000);
  expect(await page.evaluate(() => (window as unknown as { states: string[] }).states)).toEqual(['online', 'offline', 'online']);
  expect(await page.evaluate(() => window.tether.rpc.call('whoami'))).toEqual({ user: 'dave' });
  await context.close();
});

test('every event says who published it: a user by its token, the backend by the HTTP API; a browser cannot pass as the backend', async ({ browser, server }) => {
  const context = await browser.newContext();
  const dave = await tabAs(context, server.httpUrl, server.wsUrl, await signToken('dave', { channels: ['news'] }));
  const erin = await tabAs(await browser.newContext(), server.httpUrl, server.wsUrl, await signToken('erin', { channels: ['news'] }));
  await erin.evaluate(
    () =>
      new Promise<void>((resolve) => {
        const w = window as unknown as { metas: unknown[] };
        w.metas = [];
        window.tether.pubsub.subscribe('news', (data, meta) => w.metas.push({ data, publisher: meta.publisher }), { onSubscribed: () => resolve() });
      }),
  );
  // A browser that puts "backend" into its data still publishes as itself.
  await dave.evaluate(() => window.tether.pubsub.publish('news', { publisher: { backend: true } }));
  await apiPublish(server.httpUrl, 'news', 'from the backend');
  await expect.poll(() => erin.evaluate(() => (window as unknown as { metas: unknown[] }).metas)).toEqual([
    { data: { publisher: { backend: true } }, publisher: { user: 'dave' } },
    { data: 'from the backend', publisher: { backend: true } },
  ]);
  const history = (await (await fetch(`${server.httpUrl}/api/history?channel=news`, { headers: { authorization: 'Bearer e2e-api-key' } })).json()) as { events: { publisher: unknown }[] };
  expect(history.events.map((e) => e.publisher)).toEqual([{ user: 'dave' }, { backend: true }]);
  await context.close();
});
