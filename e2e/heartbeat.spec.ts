/**
 * Idle connections ping rarely (welcome.idleHeartbeatMs), yet a tab that writes on a dead link
 * finds out at the fast pace: the worker pings at once when something waits for the server.
 */
import { test, expect, waitForConnection } from './fixtures/test.js';

// Fast pace 500 ms (a dead link under work shows in ~1–1.5 s); idle pace 20 s (~40 s alone).
test.use({ serverEnv: { TETHER_HEARTBEAT_MS: '500', TETHER_IDLE_HEARTBEAT_MS: '20000' } });

test('an idle tab on a blackholed link notices it at the fast pace as soon as it writes; the write is stored once after', async ({ browser, openTab, network, server }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  // Idle now (nothing in flight): the link goes dark without a sound.
  network.blackhole();
  await tab.waitForTimeout(1500);
  expect(await tab.evaluate(() => window.tether.status.getState().connection)).toBe('online');
  await tab.evaluate(() => {
    (window as unknown as { stored: Promise<unknown> }).stored = window.tether.pubsub.publish('beat', 'through the dark');
  });
  // Far below the idle pace's ~40 s: the write made the worker ping at once and watch closely.
  await waitForConnection(tab, 'offline', 5_000);
  await network.restore();
  await waitForConnection(tab, 'online', 15_000);
  expect(await tab.evaluate(() => (window as unknown as { stored: Promise<unknown> }).stored)).toEqual({ offset: 1 });
  const history = await (await fetch(`${server.httpUrl}/api/history?channel=beat&since=0`, { headers: { authorization: 'Bearer e2e-api-key' } })).json() as { events: unknown[] };
  expect(history.events).toHaveLength(1);
  await context.close();
});
