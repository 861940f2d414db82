/**
 * Where WebSockets are blocked (the TCP proxy answers upgrades 403, or kills them at once, and
 * passes plain HTTP), the client falls back to long polling, keeps every guarantee, and moves
 * back to a WebSocket when one gets through again.
 */
import type { Browser, Page } from '@playwright/test';
import { test, expect, type Fixtures, apiHistory, callFrom, receivedIn, serverConnections, subscribeIn, waitForConnection } from './fixtures/test.js';

/** The transport a page's client reports. */
function transportOf(page: Page): Promise<string | null> {
  return page.evaluate(() => window.tether.status.getState().transport);
}

/** A browser on long polling (upgrades blocked at the proxy) and one on a WebSocket (direct). */
async function longPollingAndWebSocket(browser: Browser, openTab: Fixtures['openTab']) {
  const [cl, cw] = [await browser.newContext(), await browser.newContext()];
  const lp = await openTab(cl, { waitOnline: false });
  await waitForConnection(lp, 'online', 15_000);
  expect(await transportOf(lp)).toBe('long-polling');
  const watcher = await openTab(cw, { direct: true });
  return { cl, cw, lp, watcher };
}

for (const policy of ['refuse', 'kill'] as const) {
  test(`upgrades ${policy === 'refuse' ? 'refused (403)' : 'opened and killed at once'}: online over long polling within seconds; calls, pub/sub both ways with a WebSocket client`, async ({ browser, openTab, network }) => {
    network.upgradesWill(policy);
    const [cl, cw] = [await browser.newContext(), await browser.newContext()];
    const started = Date.now();
    const lp = await openTab(cl, { waitOnline: false });
    await waitForConnection(lp, 'online', 15_000);
    test.info().annotations.push({ type: 'online over long polling after', description: `${Date.now() - started} ms` });
    expect(await transportOf(lp)).toBe('long-polling');
    expect(network.upgradesBlocked).toBeGreaterThanOrEqual(2); // it did try WebSockets first
    await expect(lp.locator('#transport')).toHaveText('over long polling');
    const ws = await openTab(cw, { direct: true });
    expect(await transportOf(ws)).toBe('websocket');

    expect(await callFrom(lp, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });
    await subscribeIn(lp, 'test');
    await subscribeIn(ws, 'test');
    const fromWs = await ws.evaluate(() => window.tether.pubsub.publish('test', 'hey'));
    const fromLp = await lp.evaluate(() => window.tether.pubsub.publish('test', 'hey back'));
    const both = [{ data: 'hey', offset: fromWs.offset }, { data: 'hey back', offset: fromLp.offset }];
    await expect.poll(() => receivedIn(lp, 'test')).toEqual(both);
    await expect.poll(() => receivedIn(ws, 'test')).toEqual(both);
    await lp.waitForTimeout(300); // nothing more arrives
    expect(await receivedIn(lp, 'test')).toHaveLength(2);
    await Promise.all([cl.close(), cw.close()]);
  });
}

test('the demo with ?transports=long-polling runs over long polling and says so', async ({ browser, server }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.httpUrl}/?transports=long-polling`);
  await waitForConnection(page, 'online');
  expect(await transportOf(page)).toBe('long-polling');
  await expect(page.locator('#transport')).toHaveText('over long polling');
  await page.getByRole('button', { name: 'Call' }).click();
  await expect(page.locator('#rpc-result')).toHaveText('"Hello, world!"');
  await context.close();
});

test('cut while on long polling: writes made offline are delivered once, in order; a subscriber misses nothing', async ({ browser, openTab, network, server }) => {
  network.upgradesWill('refuse');
  const { cl, cw, lp, watcher } = await longPollingAndWebSocket(browser, openTab);
  await subscribeIn(watcher, 'orders');
  await subscribeIn(lp, 'orders');
  await lp.evaluate(() => window.tether.pubsub.publish('orders', { n: 0 }));

  network.refuse();
  await waitForConnection(lp, 'offline', 10_000);
  // Offline: 30 publishes (odd sizes and characters among them) and 5 transactions.
  await lp.evaluate(() => {
    for (let n = 1; n <= 30; n++) void window.tether.pubsub.publish('orders', { n, text: n % 7 === 0 ? '\n"é😀\u2028'.repeat(n) : 'x' });
    for (let n = 1; n <= 5; n++) void window.tether.state.doc('lp-doc').transact((tx) => tx.set('count', ((tx.get('count') as number | undefined) ?? 0) + 1));
  });
  await expect.poll(() => lp.evaluate(() => window.tether.status.getState().pending)).toBe(35);
  // Backend events meanwhile: the long-polling subscriber must catch up on them too.
  await watcher.evaluate(() => window.tether.pubsub.publish('orders', { n: 'while cut' }));

  await network.restore();
  await waitForConnection(lp, 'online', 20_000);
  expect(await transportOf(lp)).toBe('long-polling');
  await expect.poll(() => lp.evaluate(() => window.tether.status.getState().pending), { timeout: 15_000 }).toBe(0);

  const stored = (await apiHistory(server.httpUrl, 'orders')).map((e) => (e.data as { n: unknown }).n);
  expect(stored.filter((n) => typeof n === 'number')).toEqual([0, ...Array.from({ length: 30 }, (_, i) => i + 1)]);
  expect(stored).toHaveLength(32);
  await expect.poll(async () => (await receivedIn(watcher, 'orders')).length).toBe(32);
  await expect.poll(async () => (await receivedIn(lp, 'orders')).length).toBe(32);
  for (const page of [watcher, lp]) {
    const offsets = (await receivedIn(page, 'orders')).map((e) => e.offset);
    expect(new Set(offsets).size).toBe(offsets.length); // none twice
    expect([...offsets].sort((x, y) => x - y)).toEqual(offsets); // in order
  }
  await expect.poll(() => lp.evaluate(() => window.tether.state.doc('lp-doc').getState())).toEqual({ count: 5 });
  // One session again once the server gave up the one the cut left behind.
  await expect.poll(() => serverConnections(server.httpUrl), { timeout: 20_000 }).toBe(2);
  await Promise.all([cl.close(), cw.close()]);
});

test('upgrades unblocked while on long polling: back to a WebSocket, with a stream of writes and calls in flight, nothing lost or repeated', async ({ browser, openTab, network, server }) => {
  network.upgradesWill('refuse');
  const { cl, cw, lp, watcher } = await longPollingAndWebSocket(browser, openTab);
  await subscribeIn(watcher, 'stream');
  await subscribeIn(lp, 'stream');

  // A publish every 20 ms and a slow call every 300 ms, from before the switch until after it.
  await lp.evaluate(() => {
    const w = window as unknown as { stop: boolean; sent: number; calls: Promise<unknown>[]; transports: (string | null)[] };
    w.stop = false;
    w.sent = 0;
    w.calls = [];
    w.transports = [];
    window.tether.status.subscribe((s, prev) => {
      if (s.transport !== prev.transport) w.transports.push(s.transport);
    });
    const tick = () => {
      if (w.stop) return;
      void window.tether.pubsub.publish('stream', { n: w.sent++ });
      if (w.sent % 15 === 0) w.calls.push(window.tether.rpc.call('sleep', [100]).then(() => 'ok', (e: { code: string }) => e.code));
      setTimeout(tick, 20);
    };
    tick();
  });
  await lp.waitForTimeout(1000);
  const blockedBefore = network.upgradesBlocked;
  network.upgradesWill('pass');
  await expect.poll(() => transportOf(lp), { timeout: 40_000 }).toBe('websocket');
  expect(network.upgradesBlocked).toBe(blockedBefore);
  await lp.waitForTimeout(1000);
  const sent = await lp.evaluate(() => {
    const w = window as unknown as { stop: boolean; sent: number };
    w.stop = true;
    return w.sent;
  });
  expect(sent).toBeGreaterThan(50);
  // Every call made across the switch answered (a planned switch waits for calls to be answered).
  expect(await lp.evaluate(() => Promise.all((window as unknown as { calls: Promise<unknown>[] }).calls))).toEqual(
    Array.from({ length: Math.floor(sent / 15) }, () => 'ok'),
  );
  await expect.poll(() => lp.evaluate(() => window.tether.status.getState().pending), { timeout: 15_000 }).toBe(0);
  const stored = (await apiHistory(server.httpUrl, 'stream')).map((e) => (e.data as { n: number }).n);
  expect(stored).toEqual(Array.from({ length: sent }, (_, i) => i));
  for (const page of [watcher, lp]) {
    await expect.poll(async () => (await receivedIn(page, 'stream')).map((e) => (e.data as { n: number }).n)).toEqual(stored);
  }
  expect(await lp.evaluate(() => (window as unknown as { transports: unknown[] }).transports)).toContain('websocket');
  await expect(lp.locator('#transport')).toHaveCount(0);
  await expect.poll(() => serverConnections(server.httpUrl), { timeout: 20_000 }).toBe(2);
  await Promise.all([cl.close(), cw.close()]);
});
