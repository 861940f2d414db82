import { test, expect, callFrom, serverConnections, waitForConnection } from './fixtures/test.js';

/** The fixtures run the server with TETHER_HEARTBEAT_MS=1000: a dead link shows within ~2.5 s. */
const HEARTBEAT_WINDOW_MS = 1000 * 3 + 2000;

for (const mode of ['refuse', 'blackhole'] as const) {
  test(`network cut (${mode}): offline within the heartbeat window, calls fail fast, back online without reload`, async ({
    browser,
    openTab,
    network,
    transport,
    server,
  }) => {
    const context = await browser.newContext();
    const [a, b] = [await openTab(context), await openTab(context)];
    await b.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { seen: string[] }).seen = seen;
      // Record each change of connection state (the store also changes when `pending` does).
      window.tether.status.subscribe((s, prev) => {
        if (s.connection !== prev.connection) seen.push(s.connection);
      });
    });

    if (mode === 'refuse') network.refuse();
    else network.blackhole();

    await waitForConnection(a, 'offline', HEARTBEAT_WINDOW_MS);
    await waitForConnection(b, 'offline', HEARTBEAT_WINDOW_MS);
    await expect(a.locator('#status')).toHaveAttribute('data-connection', 'offline');
    await expect(a.locator('#status-text')).toHaveText('offline');

    // A long timeout proves the failure is immediate: a queued call would end in `timeout`.
    const failed = await callFrom(a, 'hello', ['world'], 60_000);
    expect(failed).toMatchObject({ ok: false, code: 'offline', name: 'TetherError' });

    await network.restore();
    await waitForConnection(a, 'online', 15_000);
    await waitForConnection(b, 'online', 15_000);
    expect(await callFrom(a, 'hello', ['again'])).toEqual({ ok: true, value: 'Hello, again!' });
    expect(await callFrom(b, 'hello', ['b'])).toEqual({ ok: true, value: 'Hello, b!' });
    expect(await b.evaluate(() => (window as unknown as { seen: string[] }).seen)).toEqual(['offline', 'online']);
    // Still one connection for the whole browser context after the reconnect (over long polling,
    // one server session, once the server gave up the session the cut left behind: its requests
    // may use more than one TCP connection).
    if (transport === 'websocket') expect(network.open).toBe(1);
    else await expect.poll(() => serverConnections(server.httpUrl), { timeout: 20_000 }).toBe(1);
    await context.close();
  });
}

test('a call in flight when the link dies fails with connection_lost, not a hang', async ({ browser, openTab, network }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  const pending = callFrom(tab, 'sleep', [5000], 60_000);
  await expect.poll(() => tab.evaluate(() => window.tether.status.getState().pending)).toBe(1);
  network.refuse();
  expect(await pending).toMatchObject({ ok: false, code: 'connection_lost' });
  expect(await tab.evaluate(() => window.tether.status.getState().pending)).toBe(0);
  await network.restore();
  await waitForConnection(tab, 'online', 15_000);
  await context.close();
});
