/**
 * Soak: 4 tabs in 2 browsers write 3,000 events while the network is cut again and again and the
 * server is killed with SIGKILL and restarted. Exactly 3,000 are stored, each once, in the order
 * each tab made them.
 */
import { test, expect, apiHistory } from './fixtures/test.js';
import { startServerProcess, type ServerProcess } from './fixtures/server-process.js';

const PER_TAB = 750;
const CHUNK = 10;

test('soak: 3,000 writes from 4 tabs in 2 browsers under repeated cuts and a server SIGKILL: each stored once, in per-tab order', async ({ browser, openTab, server, network }) => {
  test.setTimeout(180_000);
  const contexts = [await browser.newContext(), await browser.newContext()];
  const tabs = [await openTab(contexts[0]!), await openTab(contexts[0]!), await openTab(contexts[1]!), await openTab(contexts[1]!)];

  // Each tab writes in small chunks, without waiting for acknowledgements: offline they queue.
  const writing = tabs.map((tab, index) =>
    tab.evaluate(
      async ({ index, perTab, chunk }) => {
        const sent: Promise<unknown>[] = [];
        for (let n = 0; n < perTab; n += chunk) {
          for (let i = n; i < Math.min(perTab, n + chunk); i++) sent.push(window.tether.pubsub.publish('soak', { tab: index, n: i }));
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        const results = await Promise.allSettled(sent);
        return results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
      },
      { index, perTab: PER_TAB, chunk: CHUNK },
    ),
  );

  let live: ServerProcess = server;
  let running = true;
  const all = Promise.all(writing).finally(() => (running = false));
  const chaos = (async () => {
    let cuts = 0;
    let killed = false;
    while (running && cuts < 30) {
      await new Promise((resolve) => setTimeout(resolve, 300 + Math.random() * 700));
      if (!running) break;
      if (!killed && cuts === 3) {
        // Mid-stream: the server dies without a chance to flush anything, and comes back on the same DB.
        killed = true;
        await live.stop('SIGKILL');
        await new Promise((resolve) => setTimeout(resolve, 300));
        live = await startServerProcess({ TETHER_DB: server.db, PORT: String(server.port) });
      }
      if (cuts++ % 3 === 2) network.blackhole();
      else network.refuse();
      await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 500));
      await network.restore();
    }
    return { cuts, killed };
  })();

  const failures = await all;
  const { cuts, killed } = await chaos;
  try {
    expect(failures.flat()).toEqual([]);
    expect(killed).toBe(true);
    expect(cuts).toBeGreaterThan(3);
    const events = await apiHistory(live.httpUrl, 'soak');
    const writes = events.map((e) => e.data as { tab: number; n: number });
    expect(writes).toHaveLength(4 * PER_TAB);
    expect(new Set(writes.map((w) => `${w.tab}:${w.n}`)).size).toBe(4 * PER_TAB);
    for (let tab = 0; tab < 4; tab++) {
      expect(writes.filter((w) => w.tab === tab).map((w) => w.n), `tab ${tab} in order`).toEqual([...Array(PER_TAB).keys()]);
    }
    expect(events.map((e) => e.offset)).toEqual(events.map((_, i) => i + 1));
    for (const tab of tabs) await expect.poll(() => tab.evaluate(() => window.tether.status.getState().pending)).toBe(0);
    console.log(`soak: ${writes.length} writes stored once each over ${cuts} cuts and a SIGKILL`);
  } finally {
    if (live !== server) await live.stop();
    await Promise.all(contexts.map((c) => c.close()));
  }
});
