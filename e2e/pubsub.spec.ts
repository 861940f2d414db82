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
  expect((await workerStats(browser, t1))?.connections[0]?.channels).toEqual(['room:1']);
  for (let i = 0; i < 5; i++) await t3.evaluate((i) => window.tether.pubsub.publish('room:1', { i }), i);
  const expected = [0, 1, 2, 3, 4].map((i) => ({ i }));
  await expect.poll(async () => (await receivedIn(t1, 'room:1')).map((e) => e.data)).toEqual(expected);
  await expect.poll(async () => (await receivedIn(t2, 'room:1')).map((e) => e.data)).toEqual(expected);
  await context.close();
});
