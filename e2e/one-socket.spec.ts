import { test, expect, callFrom } from './fixtures/test.js';

test('three tabs of one browser share ONE WebSocket and each can call hello', async ({ browser, openTab, network, server }) => {
  const context = await browser.newContext();
  const tabs = [await openTab(context), await openTab(context), await openTab(context)];

  for (const tab of tabs) {
    expect(await callFrom(tab, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });
  }
  expect(network.accepted).toBe(1);
  expect(network.open).toBe(1);
  expect((await server.health()).connections).toBe(1);

  // The demo's own UI answers too (typed into the form, shown on the page).
  await tabs[1]!.getByRole('button', { name: 'Call' }).click();
  await expect(tabs[1]!.locator('#rpc-result')).toHaveText('"Hello, world!"');
  await expect(tabs[1]!.locator('#status')).toHaveAttribute('data-connection', 'online');
  await context.close();
});

test('two browser contexts are two clients with two sockets', async ({ browser, openTab, network, server }) => {
  const alice = await browser.newContext();
  const bob = await browser.newContext();
  const a = await openTab(alice);
  const b = await openTab(bob);
  expect(network.accepted).toBe(2);
  expect((await server.health()).connections).toBe(2);

  expect(await callFrom(a, 'hello', ['alice'])).toEqual({ ok: true, value: 'Hello, alice!' });
  expect(await callFrom(b, 'hello', ['bob'])).toEqual({ ok: true, value: 'Hello, bob!' });

  // Independent: closing one client's only tab ends its socket, the other keeps working.
  await alice.close();
  await expect.poll(async () => (await server.health()).connections).toBe(1);
  expect(await callFrom(b, 'hello', ['still here'])).toEqual({ ok: true, value: 'Hello, still here!' });
  await bob.close();
});
