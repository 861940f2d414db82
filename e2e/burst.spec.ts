import { test, expect, apiHistory, receivedIn, subscribeIn } from './fixtures/test.js';

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
