/**
 * Browsers without SharedWorker: one tab is elected to hold the socket, the others reach it
 * (worker/elected-host.ts). SharedWorker is removed from every page before the SDK loads.
 */
import type { Page } from '@playwright/test';
import { test, expect, apiHistory, callFrom, receivedIn, subscribeIn, waitForConnection } from './fixtures/test.js';

test.use({ hostMode: 'leader-election' });

const modeOf = (page: Page) => page.evaluate(() => window.tether.status.getState().mode);
const modes = (pages: Page[]) => Promise.all(pages.map(modeOf));

test('three tabs without SharedWorker: one socket, one leader; rpc, pub/sub and documents work from every tab', async ({ browser, openTab, network }) => {
  const context = await browser.newContext();
  const tabs = [await openTab(context), await openTab(context), await openTab(context)];
  expect(await tabs[0]!.evaluate(() => typeof SharedWorker)).toBe('undefined');
  await expect.poll(async () => (await modes(tabs)).sort()).toEqual(['follower', 'follower', 'leader']);
  expect(network.open).toBe(1);

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
