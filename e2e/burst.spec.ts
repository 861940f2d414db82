import { test, expect, apiHistory, receivedIn, subscribeIn, waitForConnection } from './fixtures/test.js';
import { browserContextIdOf } from './fixtures/shared-worker.js';

/**
 * Batching on every hop (tab → worker messages, one IndexedDB transaction per burst, `writes`
 * frames, deliveries per burst) must keep the guarantees: a burst at full speed from three tabs
 * at once, under the server's default limits, is stored once each in per-tab order and
 * delivered once to every subscriber, in offset order.
 */
test('10,000 publishes from 3 tabs at full speed: each stored once, in per-tab order, each delivered once to every subscriber', async ({ browser, openTab, server }) => {
  test.setTimeout(120_000);
  const channel = `burst-${Date.now()}`;
  const context = await browser.newContext();
  const tabs = [await openTab(context), await openTab(context), await openTab(context)];
  const other = await browser.newContext(); // another browser: its own worker and socket
  const watcher = await openTab(other);
  const subscribers = [...tabs, watcher];
  for (const page of subscribers) expect(await subscribeIn(page, channel)).toBeUndefined();

  const counts = [3334, 3333, 3333];
  const total = counts.reduce((a, b) => a + b, 0);
  const results = await Promise.all(
    tabs.map((tab, k) =>
      tab.evaluate(
        async ({ channel, k, count }) => {
          const publishes: Promise<{ offset: number | null }>[] = [];
          // One loop, no awaits: as fast as the page can call publish.
          for (let i = 0; i < count; i++) publishes.push(window.tether.pubsub.publish(channel, { k, i }));
          const settled = await Promise.allSettled(publishes);
          const failed = settled.filter((s) => s.status === 'rejected').map((s) => String((s as PromiseRejectedResult).reason));
          const offsets = settled.map((s) => (s.status === 'fulfilled' ? s.value.offset : null));
          return { failed, offsets };
        },
        { channel, k, count: counts[k]! },
      ),
    ),
  );
  for (const [k, result] of results.entries()) {
    expect(result.failed).toEqual([]);
    // Each tab's publishes got increasing offsets: stored in the order they were made.
    const offsets = result.offsets as number[];
    expect(offsets).toHaveLength(counts[k]!);
    expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
  }

  // Stored once each: offsets 1..total, every (tab, i) exactly once, per tab in order.
  const history = await apiHistory(server.httpUrl, channel);
  expect(history.map((e) => e.offset)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  const perTab = counts.map((_, k) => history.map((e) => e.data as { k: number; i: number }).filter((d) => d.k === k).map((d) => d.i));
  for (const [k, got] of perTab.entries()) expect(got).toEqual(Array.from({ length: counts[k]! }, (_, i) => i));
  // The offsets each tab was told are the ones its events were stored at.
  for (const [k, result] of results.entries()) {
    const stored = history.filter((e) => (e.data as { k: number }).k === k).map((e) => e.offset);
    expect(result.offsets).toEqual(stored);
  }

  // Delivered once to every subscriber (three tabs of the publishing browser, one of another), in offset order.
  for (const page of subscribers) {
    await expect.poll(async () => (await receivedIn(page, channel)).length, { timeout: 60_000 }).toBeGreaterThanOrEqual(total);
    const received = await receivedIn(page, channel);
    expect(received.map((e) => e.offset)).toEqual(history.map((e) => e.offset));
    expect(received.map((e) => e.data)).toEqual(history.map((e) => e.data));
  }
  await Promise.all([context.close(), other.close()]);
});

test('batched publishes settle one by one: a publish refused at once (too big) rejects at once, offline, while the one made with it waits', async ({ browser, openTab, network }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  network.refuse();
  await expect.poll(() => tab.evaluate(() => window.tether.status.getState().connection)).toBe('offline');
  const outcome = await tab.evaluate(async () => {
    const w = window as unknown as { small?: Promise<unknown> };
    // One task: both go to the worker in one message.
    w.small = window.tether.pubsub.publish('settle', 'small');
    const big = window.tether.pubsub.publish('settle', 'x'.repeat(70_000));
    const refused = await big.then(() => 'stored', (error: { code?: string }) => error.code);
    const smallState = await Promise.race([w.small.then(() => 'settled', () => 'failed'), new Promise((resolve) => setTimeout(() => resolve('waiting'), 300))]);
    return { refused, smallState };
  });
  expect(outcome).toEqual({ refused: 'message_too_big', smallState: 'waiting' });
  await network.restore();
  expect(await tab.evaluate(() => (window as unknown as { small: Promise<{ offset: number }> }).small.then((r) => typeof r.offset))).toBe('number');
  await context.close();
});

test('a publish and a transaction made in one task are stored in that order (the transaction is applied at once, the publish batched)', async ({ browser, openTab, network }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  const doc = `order-${Date.now()}`;
  await tab.evaluate((doc) => window.tether.state.doc(doc), doc);
  await expect.poll(() => tab.evaluate((doc) => window.tether.state.doc(doc).status.getState().synced, doc)).toBe(true);
  network.refuse();
  await expect.poll(() => tab.evaluate(() => window.tether.status.getState().connection)).toBe('offline');
  await tab.evaluate((doc) => {
    void window.tether.pubsub.publish('order', 'first');
    void window.tether.state.doc(doc).transact((tx) => tx.set('k', 'second'));
    void window.tether.pubsub.publish('order', 'third');
  }, doc);
  await expect.poll(async () => (await tab.evaluate(() => window.tether.pubsub.pending())).length).toBe(3);
  const pending = await tab.evaluate(() => window.tether.pubsub.pending());
  expect(pending.map((w) => (w.op === 'publish' ? w.data : w.writes))).toEqual(['first', { k: 'second' }, 'third']);
  expect(pending.map((w) => w.seq)).toEqual([...pending.map((w) => w.seq)].sort((a, b) => a - b));
  await network.restore();
  await expect.poll(() => tab.evaluate(() => window.tether.status.getState().pending)).toBe(0);
  await context.close();
});

test('two workers of one origin (a deploy: the old and the new worker URL) write bursts into one outbox at once: no sequence used twice, each write stored once, per-tab order', async ({ browser, server }) => {
  test.setTimeout(120_000);
  const context = await browser.newContext();
  const pages = [];
  for (const workerUrl of ['/tether-worker.js', '/tether-worker.js?deploy=2']) {
    const page = await context.newPage();
    await page.goto(`${server.httpUrl}/api/health`);
    await page.addScriptTag({ url: '/tether.js' });
    await page.evaluate(({ url, workerUrl }) => {
      window.tether = window.Tether.connect({ url, workerUrl });
    }, { url: server.wsUrl, workerUrl });
    await waitForConnection(page, 'online');
    pages.push(page);
  }
  // Two SharedWorkers in this browser context (one per script URL), one IndexedDB outbox and one client id between them.
  const contextId = await browserContextIdOf(pages[0]!);
  const cdp = await browser.newBrowserCDPSession();
  const { targetInfos } = await cdp.send('Target.getTargets');
  expect(targetInfos.filter((t) => t.type === 'shared_worker' && t.browserContextId === contextId).map((t) => new URL(t.url).search).sort()).toEqual(['', '?deploy=2']);
  await cdp.detach();
  const channel = `deploy-${Date.now()}`;
  const rounds = 20;
  const burst = 50;
  const failed = await Promise.all(
    pages.map((page, k) =>
      page.evaluate(
        async ({ channel, k, rounds, burst }) => {
          const publishes: Promise<unknown>[] = [];
          // Bursts from both workers at once: each numbers from what it stored last while the other numbers too.
          for (let round = 0; round < rounds; round++) {
            for (let i = 0; i < burst; i++) publishes.push(window.tether.pubsub.publish(channel, { k, i: round * burst + i }));
            await new Promise((resolve) => setTimeout(resolve, round % 3));
          }
          const settled = await Promise.allSettled(publishes);
          return settled.filter((s) => s.status === 'rejected').map((s) => String((s as PromiseRejectedResult).reason));
        },
        { channel, k, rounds, burst },
      ),
    ),
  );
  expect(failed).toEqual([[], []]);
  const history = await apiHistory(server.httpUrl, channel);
  const data = history.map((e) => e.data as { k: number; i: number });
  expect(data).toHaveLength(2 * rounds * burst);
  for (const k of [0, 1]) expect(data.filter((d) => d.k === k).map((d) => d.i)).toEqual(Array.from({ length: rounds * burst }, (_, i) => i));
  await context.close();
});
