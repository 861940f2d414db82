import { test, expect, apiHistory, receivedIn, subscribeIn, waitForConnection } from './fixtures/test.js';
import { startServerProcess } from './fixtures/server-process.js';
import { browserContextIdOf, sharedWorkerRuns } from './fixtures/shared-worker.js';

test('50 publishes offline, every tab closed, network back, a tab reopened: delivered once each, in order', async ({ browser, openTab, network }) => {
  const watcher = await browser.newContext();
  const subscriber = await openTab(watcher, { direct: true });
  expect(await subscribeIn(subscriber, 'orders')).toBeUndefined();

  const publisher = await browser.newContext();
  const [p1, p2] = [await openTab(publisher), await openTab(publisher)];
  network.refuse();
  await waitForConnection(p1, 'offline');

  // Not awaited: offline, a publish stays pending until the server stores it.
  await p1.evaluate(() => {
    for (let i = 0; i < 25; i++) void window.tether.pubsub.publish('orders', { n: i });
  });
  await p2.evaluate(() => {
    for (let i = 25; i < 50; i++) void window.tether.pubsub.publish('orders', { n: i });
  });
  await expect.poll(() => p2.evaluate(() => window.tether.status.getState().pending)).toBe(50);
  const listed = await p1.evaluate(() => window.tether.pubsub.pending());
  expect(listed.map((w) => (w.op === 'publish' ? (w.data as { n: number }).n : -1)).sort((a, b) => a - b)).toEqual([...Array(50).keys()]);
  expect(listed.every((w) => w.op === 'publish' && w.channel === 'orders')).toBe(true);
  await expect(p1.locator('#pending')).toHaveText('50 pending');

  const contextId = await browserContextIdOf(p1);
  expect(await sharedWorkerRuns(browser, contextId)).toBe(true);
  await p1.close();
  await p2.close(); // the SharedWorker dies with its last tab: check it really did
  await expect.poll(() => sharedWorkerRuns(browser, contextId)).toBe(false);
  await network.restore();
  const p3 = await openTab(publisher);

  await expect.poll(async () => (await receivedIn(subscriber, 'orders')).length, { timeout: 15_000 }).toBe(50);
  const events = await receivedIn(subscriber, 'orders');
  // Each tab's writes in the order it made them, all once; offsets consecutive.
  const ns = events.map((e) => (e.data as { n: number }).n);
  expect([...ns].sort((a, b) => a - b)).toEqual([...Array(50).keys()]);
  expect(ns.filter((n) => n < 25)).toEqual([...Array(25).keys()]);
  expect(ns.filter((n) => n >= 25)).toEqual([...Array(25).keys()].map((n) => n + 25));
  expect(events.map((e) => e.offset)).toEqual(events.map((_, i) => events[0]!.offset + i));
  await expect.poll(() => p3.evaluate(() => window.tether.status.getState().pending)).toBe(0);
  expect(await p3.evaluate(() => window.tether.pubsub.pending())).toEqual([]);
  await p3.waitForTimeout(500);
  expect(await receivedIn(subscriber, 'orders')).toHaveLength(50);
  await Promise.all([watcher.close(), publisher.close()]);
});

test('the server killed with SIGKILL mid-stream: nothing acknowledged is lost, nothing duplicated', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  const total = 3000;
  // Publish sequentially-fired writes, recording each acknowledgement.
  await tab.evaluate((total) => {
    const w = window as unknown as { acked: number[]; failed: string[] };
    w.acked = [];
    w.failed = [];
    for (let i = 0; i < total; i++) {
      window.tether.pubsub.publish('ledger', i).then(
        () => w.acked.push(i),
        (e: Error) => w.failed.push(String(e)),
      );
    }
  }, total);
  // Kill as soon as the first acknowledgements are in, while most writes are still on their way.
  await expect.poll(() => tab.evaluate(() => (window as unknown as { acked: number[] }).acked.length), { intervals: [5] }).toBeGreaterThan(0);
  await server.stop('SIGKILL');
  const ackedBeforeKill = await tab.evaluate(() => [...(window as unknown as { acked: number[] }).acked]);
  await waitForConnection(tab, 'offline');
  // The kill landed mid-stream: some writes were acknowledged, some not yet.
  expect(ackedBeforeKill.length).toBeGreaterThan(0);
  expect(ackedBeforeKill.length).toBeLessThan(total);

  const restarted = await startServerProcess({ TETHER_DB: server.db, PORT: String(server.port) });
  try {
    await waitForConnection(tab, 'online', 20_000);
    await expect.poll(() => tab.evaluate(() => (window as unknown as { acked: number[] }).acked.length), { timeout: 20_000 }).toBe(total);
    expect(await tab.evaluate(() => (window as unknown as { failed: string[] }).failed)).toEqual([]);

    const history = await apiHistory(restarted.httpUrl, 'ledger');
    const stored = history.map((e) => e.data);
    expect(stored).toEqual([...Array(total).keys()]); // every write once, in order
    expect(history.map((e) => e.offset)).toEqual([...Array(total).keys()].map((i) => i + 1));
    for (const i of ackedBeforeKill) expect(stored).toContain(i);
  } finally {
    await restarted.stop();
    await context.close();
  }
});
