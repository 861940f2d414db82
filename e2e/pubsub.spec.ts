import { test, expect, receivedIn, subscribeIn } from './fixtures/test.js';
import { workerStats } from './fixtures/shared-worker.js';

test('the seed sequence: A and B subscribe to "test", C publishes "hey", A and B each receive it once', async ({ browser, openTab }) => {
  const [ca, cb, cc] = [await browser.newContext(), await browser.newContext(), await browser.newContext()];
  const [a, b, c] = [await openTab(ca), await openTab(cb), await openTab(cc)];
  await subscribeIn(a, 'test');
  await subscribeIn(b, 'test');

  const { offset } = await c.evaluate(() => window.tether.pubsub.publish('test', 'hey'));
  expect(offset).toBeGreaterThan(0);

  await expect.poll(() => receivedIn(a, 'test')).toEqual([{ data: 'hey', offset }]);
  await expect.poll(() => receivedIn(b, 'test')).toEqual([{ data: 'hey', offset }]);
  await c.waitForTimeout(300); // nothing more arrives
  expect(await receivedIn(a, 'test')).toHaveLength(1);
  expect(await receivedIn(b, 'test')).toHaveLength(1);
  expect(await receivedIn(c, 'test')).toHaveLength(0);
  await Promise.all([ca.close(), cb.close(), cc.close()]);
});

test('tabs of one browser share one server subscription; each tab gets each event once', async ({ browser, openTab }) => {
  const context = await browser.newContext();
  const [t1, t2, t3] = [await openTab(context), await openTab(context), await openTab(context)];
  await subscribeIn(t1, 'room:1');
  await subscribeIn(t2, 'room:1');
  expect((await workerStats(browser, t1))?.connections[0]?.channels).toEqual(['chat', 'room:1']);
  for (let i = 0; i < 5; i++) await t3.evaluate((i) => window.tether.pubsub.publish('room:1', { i }), i);
  const expected = [0, 1, 2, 3, 4].map((i) => ({ i }));
  await expect.poll(async () => (await receivedIn(t1, 'room:1')).map((e) => e.data)).toEqual(expected);
  await expect.poll(async () => (await receivedIn(t2, 'room:1')).map((e) => e.data)).toEqual(expected);
  await context.close();
});

test('the demo chat: a message typed in one browser appears in the other, once; offline it waits as pending', async ({ browser, openTab, network }) => {
  const [ca, cb] = [await browser.newContext(), await browser.newContext()];
  const a = await openTab(ca);
  const b = await openTab(cb, { direct: true });
  // Wait until both subscriptions are live before typing (the demo subscribes at load).
  await expect.poll(async () => (await workerStats(browser, a))?.connections[0]?.channels).toEqual(['chat']);
  await expect.poll(async () => (await workerStats(browser, b))?.connections[0]?.channels).toEqual(['chat']);

  await a.getByLabel('message').fill('hello from A');
  await a.getByRole('button', { name: 'Send' }).click();
  await expect(b.locator('#chat-log .msg-text')).toHaveText(['hello from A']);
  await expect(a.locator('#chat-log .msg-text')).toHaveText(['hello from A']);

  network.refuse();
  await expect(a.locator('#status')).toHaveAttribute('data-connection', 'offline');
  await a.getByLabel('message').fill('sent while offline');
  await a.getByRole('button', { name: 'Send' }).click();
  // Shown at once, marked pending until the server stored it.
  await expect(a.locator('#chat-log li[data-pending] .msg-text')).toHaveText('sent while offline');
  await expect(a.locator('#chat-log .badge-pending')).toHaveCount(1);
  await expect(a.locator('#pending')).toHaveText('1 pending');
  await network.restore();
  await expect(b.locator('#chat-log .msg-text')).toHaveText(['hello from A', 'sent while offline']);
  await expect(a.locator('#chat-log .msg-text')).toHaveText(['hello from A', 'sent while offline']);
  await expect(a.locator('#pending')).toHaveText('');
  await expect(a.locator('#chat-log .badge-pending')).toHaveCount(0);
  await a.screenshot({ path: test.info().outputPath('demo-chat.png') });
  await Promise.all([ca.close(), cb.close()]);
});

test('the last unsubscribe ends the server subscription', async ({ browser, openTab }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  await tab.evaluate(() => {
    const w = window as unknown as { offs: (() => void)[] };
    w.offs = [window.tether.pubsub.subscribe('temp', () => {}), window.tether.pubsub.subscribe('temp', () => {})];
  });
  await expect.poll(async () => (await workerStats(browser, tab))?.connections[0]?.channels).toEqual(['chat', 'temp']);
  await tab.evaluate(() => (window as unknown as { offs: (() => void)[] }).offs[0]!());
  await tab.waitForTimeout(200);
  expect((await workerStats(browser, tab))?.connections[0]?.channels).toEqual(['chat', 'temp']);
  await tab.evaluate(() => (window as unknown as { offs: (() => void)[] }).offs[1]!());
  await expect.poll(async () => (await workerStats(browser, tab))?.connections[0]?.channels).toEqual(['chat']);
  expect(['persisted', 'best-effort', 'unsupported']).toContain(await tab.evaluate(() => window.tether.persistence));
  await context.close();
});
