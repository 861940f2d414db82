/**
 * Browsers without SharedWorker: one tab is elected to hold the socket, the others reach it
 * (worker/elected-host.ts). SharedWorker is removed from every page before the SDK loads.
 */
import type { Page } from '@playwright/test';
import { test, expect, apiHistory, apiPublish, callFrom, openWithClient, receivedIn, signToken, subscribeIn, waitForConnection, PROCEDURES, TOKEN_SECRET } from './fixtures/test.js';

test.use({ hostMode: 'leader-election' });

const modeOf = (page: Page) => page.evaluate(() => window.tether.status.getState().mode);
const modes = (pages: Page[]) => Promise.all(pages.map(modeOf));

test('three tabs without SharedWorker: one socket, one leader; rpc, pub/sub and documents work from every tab', async ({ browser, openTab, network }) => {
  const context = await browser.newContext();
  const tabs = [await openTab(context), await openTab(context), await openTab(context)];
  expect(await tabs[0]!.evaluate(() => typeof SharedWorker)).toBe('undefined');
  await expect.poll(async () => (await modes(tabs)).sort()).toEqual(['follower', 'follower', 'leader']);
  expect(network.open).toBe(1);
  // The demo's status bar says who holds the connection.
  for (const tab of tabs) {
    await expect(tab.locator('#host-mode')).toHaveText((await modeOf(tab)) === 'leader' ? 'this tab holds the connection' : 'through another tab');
  }

  for (const tab of tabs) expect(await callFrom(tab, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });

  for (const tab of tabs) await subscribeIn(tab, 'test');
  const offsets: number[] = [];
  for (const [i, tab] of tabs.entries()) offsets.push((await tab.evaluate((i) => window.tether.pubsub.publish('test', `hey ${i}`), i)).offset!);
  const expected = offsets.map((offset, i) => ({ data: `hey ${i}`, offset }));
  for (const tab of tabs) await expect.poll(() => receivedIn(tab, 'test')).toEqual(expected);
  await tabs[0]!.waitForTimeout(300); // nothing more arrives
  for (const tab of tabs) expect(await receivedIn(tab, 'test')).toEqual(expected);

  // A document transaction from each tab; every tab sees all three.
  for (const [i, tab] of tabs.entries()) {
    await tab.evaluate((i) => window.tether.state.doc("board").transact((tx) => tx.set(`from${i}`, i)), i);
  }
  for (const tab of tabs) {
    await expect.poll(() => tab.evaluate(() => window.tether.state.doc('board').getState())).toMatchObject({ from0: 0, from1: 1, from2: 2 });
  }
  expect(network.open).toBe(1);
  await context.close();
});

/** Publishes `count` events from the page without waiting for them; their promises settle into `window.settled`. */
function publishBurst(page: Page, tab: number, from: number, count: number): Promise<void> {
  return page.evaluate(
    ({ tab, from, count }) => {
      const w = window as unknown as { settled?: { n: number; offset?: number | null; error?: string }[] };
      const settled = (w.settled ??= []);
      for (let n = from; n < from + count; n++) {
        window.tether.pubsub.publish('failover', { tab, n }).then(
          ({ offset }) => settled.push({ n, offset }),
          (error: { code?: string }) => settled.push({ n, error: String(error.code) }),
        );
      }
    },
    { tab, from, count },
  );
}

const settledIn = (page: Page) => page.evaluate(() => (window as unknown as { settled?: { n: number; offset?: number | null; error?: string }[] }).settled ?? []);

async function leaderOf(pages: Page[]): Promise<Page> {
  let leader: Page | undefined;
  await expect
    .poll(async () => {
      const found = await modes(pages);
      leader = pages[found.indexOf('leader')];
      return found.filter((m) => m === 'leader').length;
    })
    .toBe(1);
  return leader!;
}

/** Every write once, in each tab's order, and nothing else. */
function expectOncePerTabInOrder(events: { data: unknown }[], perTab: Record<number, number>): void {
  const seen = new Map<number, number[]>();
  for (const { data } of events) {
    const { tab, n } = data as { tab: number; n: number };
    seen.set(tab, [...(seen.get(tab) ?? []), n]);
  }
  for (const [tab, count] of Object.entries(perTab)) expect(seen.get(Number(tab)), `tab ${tab}`).toEqual([...Array(count).keys()]);
  expect(events).toHaveLength(Object.values(perTab).reduce((a, b) => a + b, 0));
}

test('writes queued offline in three tabs, the leader tab closed, the network back: each delivered once, in per-tab order; a new leader holds one socket', async ({ browser, openTab, network, server }) => {
  const observerContext = await browser.newContext();
  const observer = await openTab(observerContext, { direct: true });
  await subscribeIn(observer, 'failover');

  const context = await browser.newContext();
  const tabs = [await openTab(context), await openTab(context), await openTab(context)];
  const leader = await leaderOf(tabs);
  const followers = tabs.filter((t) => t !== leader);
  expect(network.open).toBe(1);

  network.refuse();
  for (const tab of tabs) await waitForConnection(tab, 'offline');
  for (const [i, tab] of tabs.entries()) await publishBurst(tab, i, 0, 40);
  // Durable before the leader goes: all 120 are in the outbox (whoever stored them).
  await expect.poll(() => followers[0]!.evaluate(async () => (await window.tether.pubsub.pending()).length)).toBe(120);

  await leader.close();
  // Written while no tab leads yet: they wait in their tab's worker, then go to the next leader.
  for (const tab of followers) await publishBurst(tab, tabs.indexOf(tab), 40, 10);
  const next = await leaderOf(followers);
  expect(await modeOf(followers.find((t) => t !== next)!)).toBe('follower');

  await network.restore();
  const perTab = Object.fromEntries(tabs.map((tab, i) => [i, tab === leader ? 40 : 50]));
  await expect.poll(async () => (await apiHistory(server.httpUrl, 'failover')).length, { timeout: 20_000 }).toBe(140);

  expectOncePerTabInOrder(await apiHistory(server.httpUrl, 'failover'), perTab);
  await expect.poll(async () => (await receivedIn(observer, 'failover')).length).toBe(140);
  expectOncePerTabInOrder(await receivedIn(observer, 'failover'), perTab);

  // Every follower's publish settled with its offset, the ones the closed leader had stored too.
  for (const tab of followers) {
    await expect.poll(async () => (await settledIn(tab)).length).toBe(50);
    const settled = await settledIn(tab);
    expect(settled.filter((s) => s.error !== undefined)).toEqual([]);
    expect(new Set(settled.map((s) => s.n)).size).toBe(50);
  }
  for (const tab of followers) expect(await callFrom(tab, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });
  await expect.poll(() => network.open).toBe(1);
  await Promise.all([context.close(), observerContext.close()]);
});

/**
 * A frozen tab, as a phone's browser freezes a background tab: the Page Lifecycle `freeze` event,
 * then no script runs in the page. (CDP's Page.setWebLifecycleState does neither in this headless
 * Chromium: a 100 ms interval kept ticking through a "frozen" second and no event fired.)
 */
function freeze(page: Page, ms: number): Promise<void> {
  return page.evaluate((ms) => {
    document.dispatchEvent(new Event('freeze'));
    const end = Date.now() + ms;
    while (Date.now() < end);
  }, ms);
}

test('the leader tab frozen: it hands the socket to another tab at once; subscribers miss nothing; thawed, it follows', async ({ browser, openTab, network, server }) => {
  const context = await browser.newContext();
  const tabs = [await openTab(context), await openTab(context), await openTab(context)];
  const leader = await leaderOf(tabs);
  const followers = tabs.filter((t) => t !== leader);
  for (const tab of followers) await subscribeIn(tab, 'failover');
  await followers[0]!.evaluate(() => window.tether.pubsub.publish('failover', { tab: 0, n: 0 }));

  // A call in flight through the leader when it goes: it fails, it does not hang.
  const inFlight = callFrom(followers[0]!, 'sleep', [8000], 20_000);
  await followers[0]!.waitForTimeout(200);
  const frozen = freeze(leader, 6000);
  const frozenAt = Date.now();
  const next = await leaderOf(followers);
  // The other follower is served by the new leader within moments (handed over, not stolen after
  // the silence; and no attach lost to a leader not listening yet, which costs a 3 s retry).
  expect(await callFrom(followers.find((t) => t !== next)!, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });
  const handoverMs = Date.now() - frozenAt;
  test.info().annotations.push({ type: 'handover', description: `${handoverMs} ms` });
  expect(handoverMs).toBeLessThan(2500);
  expect(await inFlight).toMatchObject({ ok: false, code: 'connection_lost' });

  // The new leader serves: calls, and publishes from both remaining tabs, each delivered once.
  for (const tab of followers) expect(await callFrom(tab, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });
  for (let n = 1; n < 6; n++) await followers[n % 2]!.evaluate((n) => window.tether.pubsub.publish('failover', { tab: 0, n }), n);
  for (const tab of followers) {
    await expect.poll(async () => (await receivedIn(tab, 'failover')).map((e) => (e.data as { n: number }).n)).toEqual([0, 1, 2, 3, 4, 5]);
  }
  await expect.poll(() => network.open).toBe(1); // the frozen tab's socket closed

  await frozen;
  await leader.evaluate(() => document.dispatchEvent(new Event('resume')));
  // The thawed tab follows the new leader and works again; one tab leads.
  await expect.poll(() => modeOf(leader)).toBe('follower');
  expect(await modeOf(next)).toBe('leader');
  await waitForConnection(leader, 'online');
  expect(await callFrom(leader, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });
  await leader.evaluate(() => window.tether.pubsub.publish('failover', { tab: 0, n: 6 }));
  expect((await apiHistory(server.httpUrl, 'failover')).map((e) => (e.data as { n: number }).n)).toEqual([0, 1, 2, 3, 4, 5, 6]);
  expect(network.open).toBe(1);
  await context.close();
});

// A worker that hangs *inside* an IndexedDB transaction (a request's callback not yet run) keeps
// that transaction open, and Chromium then holds back every other readwrite transaction of the
// database — the next leader's lead record and outbox too — until it wakes: measured with a hang
// inside a transaction on any store (offsets, leader, outbox), no tab took over within 10 s,
// while outside one the next tab took over after 3.6 s. That is IndexedDB's order, which the lead
// record relies on, and the likeliest cause of this test's earlier flakiness (skipped since issue
// 14): the hang began right after the subscription, while the leader may still have been saving its
// offset. So the hang starts once the leader is idle.
test('the leader tab\'s worker hangs without notice: the next in line takes the lock after its silence; woken, the old leader steps down; writes once', async ({ browser, openTab, network, server }) => {
  const context = await browser.newContext();
  const tabs = [await openTab(context), await openTab(context), await openTab(context)];
  const leader = await leaderOf(tabs);
  const followers = tabs.filter((t) => t !== leader);
  await subscribeIn(followers[0]!, 'failover');
  await leader.waitForTimeout(500); // the subscription's offset saved: no transaction left open (see above)
  const worker = leader.workers()[0]!;
  // Its event loop blocked for 12 s: no heartbeat, no socket, no answers — as a frozen worker.
  let woke = false;
  const hung = worker
    .evaluate(() => {
      const end = Date.now() + 12_000;
      while (Date.now() < end);
    })
    .then(() => (woke = true));
  const hungAt = Date.now();
  // A write made meanwhile waits in its tab's worker, then goes to the next leader; events the
  // backend publishes meanwhile reach the subscriber through the next leader, none missed.
  await publishBurst(followers[1]!, 1, 0, 5);
  for (let n = 0; n < 3; n++) expect((await apiPublish(server.httpUrl, 'failover', { tab: 9, n })).ok).toBe(true);
  const next = await leaderOf(followers);
  const tookOverMs = Date.now() - hungAt;
  test.info().annotations.push({ type: 'takeover after silence', description: `${tookOverMs} ms` });
  expect(await callFrom(next, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });
  expect(woke).toBe(false); // taken over and serving while the old leader still hung
  await expect.poll(async () => (await receivedIn(followers[0]!, 'failover')).length).toBe(8);

  await hung;
  // Woken, it finds its lock taken: it closes its socket and follows.
  await expect.poll(() => modeOf(leader)).toBe('follower');
  await waitForConnection(leader, 'online');
  await publishBurst(leader, 2, 0, 5);
  await expect.poll(async () => (await receivedIn(followers[0]!, 'failover')).length).toBe(13);
  expectOncePerTabInOrder(await apiHistory(server.httpUrl, 'failover'), { 1: 5, 2: 5, 9: 3 });
  expectOncePerTabInOrder(await receivedIn(followers[0]!, 'failover'), { 1: 5, 2: 5, 9: 3 });
  expect((await modes(tabs)).filter((m) => m === 'leader')).toHaveLength(1);
  await expect.poll(() => network.open).toBe(1);
  await context.close();
});

test('the leader tab closed in the middle of bursts from three tabs, online: every write stored and delivered once, in per-tab order, and each tab told', async ({ browser, openTab, server }) => {
  const observerContext = await browser.newContext();
  const observer = await openTab(observerContext, { direct: true });
  await subscribeIn(observer, 'failover');
  const context = await browser.newContext();
  const tabs = [await openTab(context), await openTab(context), await openTab(context)];
  const leader = await leaderOf(tabs);
  const followers = tabs.filter((t) => t !== leader);
  const perTab: Record<number, number> = {};
  // Bursts of 50 every 20 ms; the leader tab closes right after the followers' third burst, with
  // their writes being stored, sent, acknowledged and reported all at once.
  const bursts = async (tab: Page, i: number, rounds: number, after?: (round: number) => Promise<void>) => {
    for (let round = 0; round < rounds; round++) {
      await publishBurst(tab, i, round * 50, 50);
      await after?.(round);
      await tab.waitForTimeout(20);
    }
    perTab[i] = rounds * 50;
  };
  await bursts(leader, tabs.indexOf(leader), 4);
  await expect.poll(() => apiHistory(server.httpUrl, 'failover').then((e) => e.length)).toBe(200);
  let closing: Promise<void> | undefined;
  await Promise.all(
    followers.map((tab, k) =>
      bursts(tab, tabs.indexOf(tab), 10, async (round) => {
        if (k === 1 && round === 2) closing = leader.close();
      }),
    ),
  );
  await closing;
  await leaderOf(followers);

  const total = 200 + 500 + 500;
  await expect.poll(async () => (await apiHistory(server.httpUrl, 'failover')).length, { timeout: 30_000 }).toBe(total);
  expectOncePerTabInOrder(await apiHistory(server.httpUrl, 'failover'), perTab);
  await expect.poll(async () => (await receivedIn(observer, 'failover')).length, { timeout: 20_000 }).toBe(total);
  expectOncePerTabInOrder(await receivedIn(observer, 'failover'), perTab);
  for (const tab of followers) {
    await expect.poll(async () => (await settledIn(tab)).length).toBe(500);
    expect((await settledIn(tab)).filter((s) => s.error !== undefined)).toEqual([]);
  }
  await Promise.all([context.close(), observerContext.close()]);
});

test.describe('with tokens', () => {
  test.use({ serverEnv: { TETHER_TOKEN_SECRET: TOKEN_SECRET, TETHER_PROCEDURES: PROCEDURES, TETHER_ALLOWED_ORIGINS: '*' } });

  test("a follower tab's token reaches the leader's engine: its calls and writes are its user's, its grants enforced, before and after a failover", async ({ browser, server, network }) => {
    const context = await browser.newContext();
    const wsUrl = `ws://127.0.0.1:${network.port}/ws`;
    // The token is asked of each tab (a function in the tab, called from the leader's worker).
    const tabs = [];
    for (let i = 0; i < 3; i++) tabs.push(await openWithClient(context, server.httpUrl, { url: wsUrl, token: await signToken('alice', { channels: ['room:*'] }) }));
    for (const tab of tabs) await waitForConnection(tab, 'online');
    const leader = await leaderOf(tabs);
    const followers = tabs.filter((t) => t !== leader);
    for (const tab of followers) {
      expect(await callFrom(tab, 'whoami', [])).toEqual({ ok: true, value: { user: 'alice' } });
      expect(await tab.evaluate(() => window.tether.pubsub.publish('room:1', 'hi').then((r) => typeof r.offset))).toBe('number');
      expect(await tab.evaluate(() => window.tether.pubsub.publish('admin', 'no').then(() => 'stored', (e: { code: string }) => e.code))).toBe('forbidden');
    }
    await leader.close();
    const next = await leaderOf(followers);
    for (const tab of followers) await waitForConnection(tab, 'online');
    expect(await callFrom(next, 'whoami', [])).toEqual({ ok: true, value: { user: 'alice' } });
    const other = followers.find((t) => t !== next)!;
    expect(await callFrom(other, 'whoami', [])).toEqual({ ok: true, value: { user: 'alice' } });
    expect(await other.evaluate(() => window.tether.pubsub.publish('room:1', 'after').then((r) => typeof r.offset))).toBe('number');
    expect((await apiHistory(server.httpUrl, 'room:1')).map((e) => e.data)).toEqual(['hi', 'hi', 'after']);
    expect(network.open).toBe(1);
    await context.close();
  });
});
