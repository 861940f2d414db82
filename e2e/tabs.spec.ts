import { test, expect, callFrom } from './fixtures/test.js';
import { workerStats } from './fixtures/shared-worker.js';

test('open and close 20 tabs: the worker releases every closed tab and keeps one socket', async ({ browser, openTab, network, server }) => {
  const context = await browser.newContext();
  const keeper = await openTab(context);
  const tabs = [];
  for (let i = 0; i < 20; i++) tabs.push(await openTab(context));
  await expect.poll(async () => (await workerStats(browser, keeper))?.tabs).toBe(21);

  // Close 15 by closing the page, and navigate 5 away: neither sends anything to the worker.
  for (const tab of tabs.slice(0, 15)) await tab.close();
  for (const tab of tabs.slice(15)) await tab.goto(`${server.httpUrl}/api/health`);

  await expect.poll(async () => (await workerStats(browser, keeper))?.tabs).toBe(1);
  const stats = await workerStats(browser, keeper);
  expect(stats?.connections).toEqual([expect.objectContaining({ tabs: 1, state: 'online', pending: 0 })]);
  expect(network.accepted).toBe(1);
  expect(await callFrom(keeper, 'hello', ['keeper'])).toEqual({ ok: true, value: 'Hello, keeper!' });
  await context.close();
});

test('client.close() detaches at once; the last tab leaving closes the socket', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const a = await openTab(context);
  const b = await openTab(context);
  await expect.poll(async () => (await workerStats(browser, a))?.tabs).toBe(2);

  await b.evaluate(() => window.tether.close());
  await expect.poll(async () => (await workerStats(browser, a))?.tabs).toBe(1);
  expect(await callFrom(b, 'hello', ['x'])).toMatchObject({ ok: false, code: 'closed' });
  expect(await callFrom(a, 'hello', ['a'])).toEqual({ ok: true, value: 'Hello, a!' });

  await a.evaluate(() => window.tether.close());
  await expect.poll(async () => (await workerStats(browser, a))?.connections.length).toBe(0);
  await expect.poll(async () => (await server.health()).connections).toBe(0);
  await context.close();
});
