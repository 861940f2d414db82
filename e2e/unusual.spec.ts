/**
 * What a tab sees when the unusual happens: a write too big in bytes, a token endpoint that
 * fails after a reload, a transaction on a deleted key, a backup restored under live clients.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { test, expect, apiDoc, apiHistory, apiPublish, openWithClient, resetsIn, signToken, subscribeIn, receivedIn, waitForConnection, TOKEN_SECRET } from './fixtures/test.js';
import { startServerProcess } from './fixtures/server-process.js';

const run = promisify(execFile);
const TOOLS = fileURLToPath(new URL('../server/dist/server/tools/', import.meta.url));

test('a 30,000 × "€" publish (90 KB in UTF-8) fails at once with message_too_big; the writes behind it are stored', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const tab = await openTab(context);
  const results = await tab.evaluate(async () => {
    const outcome = (p: Promise<unknown>) => p.then((v) => ({ ok: v }), (e: { code: string; message: string }) => ({ code: e.code, message: e.message }));
    const big = outcome(window.tether.pubsub.publish('euro', '€'.repeat(30_000)));
    const after = [1, 2, 3].map((n) => outcome(window.tether.pubsub.publish('euro', `after ${n}`)));
    return Promise.all([big, ...after]);
  });
  expect(results[0]).toMatchObject({ code: 'message_too_big' });
  expect((results[0] as { message: string }).message).toMatch(/90\d{3} bytes \(UTF-8\)/);
  expect(results.slice(1)).toEqual([{ ok: { offset: 1 } }, { ok: { offset: 2 } }, { ok: { offset: 3 } }]);
  expect((await apiHistory(server.httpUrl, 'euro')).map((e) => e.data)).toEqual(['after 1', 'after 2', 'after 3']);
  await expect.poll(() => tab.evaluate(() => window.tether.status.getState().pending)).toBe(0);
  await context.close();
});

test.describe('with tokens', () => {
  // Sockets through the cuttable proxy: another origin than the page's, allowed explicitly.
  test.use({ serverEnv: { TETHER_TOKEN_SECRET: TOKEN_SECRET, TETHER_ALLOWED_ORIGINS: '*' } });

  test('offline reload with a failing token function: the write is kept, counted, the status says why, and it is sent as the user once the token works', async ({ browser, server, network }) => {
    const context = await browser.newContext();
    const viaProxy = `ws://127.0.0.1:${network.port}/ws`;
    const token = await signToken('alice');
    const connect = (tab: import('@playwright/test').Page) =>
      tab.evaluate(
        ({ url, token }) => {
          const w = window as unknown as { tokenWorks?: boolean };
          // As an app does: ask its backend for a token; offline, that fetch fails.
          window.tether = window.Tether.connect({
            url,
            token: async () => {
              if (!w.tokenWorks) throw new Error('GET /tether-token failed: network error');
              return token;
            },
          });
        },
        { url: viaProxy, token },
      );
    const tab = await openWithClient(context, server.httpUrl, { url: viaProxy, token });
    await waitForConnection(tab, 'online');
    expect(await tab.evaluate(() => window.tether.pubsub.publish('notes', 'online'))).toEqual({ offset: 1 });

    network.refuse();
    await tab.reload();
    await tab.addScriptTag({ url: '/tether.js' });
    await connect(tab);
    await tab.evaluate(() => void window.tether.pubsub.publish('notes', 'written offline').then((r) => ((window as unknown as { sent?: unknown }).sent = r)));
    await expect.poll(() => tab.evaluate(() => window.tether.status.getState().pending)).toBe(1);
    await expect.poll(() => tab.evaluate(() => window.tether.status.getState().error?.code)).toBe('unauthorized');

    await tab.evaluate(() => ((window as unknown as { tokenWorks?: boolean }).tokenWorks = true));
    await network.restore();
    await expect.poll(() => tab.evaluate(() => (window as unknown as { sent?: unknown }).sent), { timeout: 20_000 }).toEqual({ offset: 2 });
    expect((await apiHistory(server.httpUrl, 'notes')).map((e) => e.data)).toEqual(['online', 'written offline']);
    await expect.poll(() => tab.evaluate(() => window.tether.status.getState())).toMatchObject({ pending: 0, error: null });
    await context.close();
  });
});

test('a transaction on a key another client deleted commits on its first run', async ({ browser, openTab, server }) => {
  const [a, b] = await Promise.all([browser.newContext(), browser.newContext()]);
  const alice = await openTab(a);
  const bob = await openTab(b);
  await alice.evaluate(() => window.tether.state.doc('cards').transact((tx) => tx.set('card', 'draft')));
  await expect.poll(() => bob.evaluate(() => window.tether.state.doc('cards').getState().card)).toBe('draft');
  await bob.evaluate(() => window.tether.state.doc('cards').transact((tx) => tx.delete('card')));
  await expect.poll(() => alice.evaluate(() => 'card' in window.tether.state.doc('cards').getState())).toBe(false);
  // The demo's "edit a removed card": read it (absent), write it.
  const runs = await alice.evaluate(async () => {
    let runs = 0;
    await window.tether.state.doc('cards').transact((tx) => {
      runs++;
      tx.set('card', `${tx.get('card') ?? 'new'}!`);
    });
    return runs;
  });
  expect(runs).toBe(1);
  expect((await apiDoc(server.httpUrl, 'cards')).keys.card?.value).toBe('new!');
  await expect.poll(() => bob.evaluate(() => window.tether.state.doc('cards').getState().card)).toBe('new!');
  await Promise.all([a.close(), b.close()]);
});

test('a backup restored under live clients: subscribers get a reset and documents the restored state, never a silent gap', async ({ browser, openTab, server, network }) => {
  test.setTimeout(90_000);
  const context = await browser.newContext();
  const tab = await openTab(context);
  expect(await subscribeIn(tab, 'feed')).toBeUndefined();
  await tab.evaluate(async () => {
    for (const n of [1, 2]) await window.tether.pubsub.publish('feed', n);
    await window.tether.state.doc('board').transact((tx) => tx.set('title', 'before backup'));
  });
  const backup = `${server.db}.backup`;
  await run(process.execPath, [`${TOOLS}backup.js`, backup], { env: { ...process.env, TETHER_DB: server.db } });
  await tab.evaluate(async () => {
    for (const n of [3, 4]) await window.tether.pubsub.publish('feed', n);
    await window.tether.state.doc('board').transact((tx) => tx.set('title', 'lost with the disk'));
  });
  await expect.poll(async () => (await receivedIn(tab, 'feed')).length).toBe(4);

  // The disk is lost: the operator stops the server and restores last night's backup.
  network.refuse();
  await server.stop();
  const restored = await run(process.execPath, [`${TOOLS}restore.js`, backup], { env: { ...process.env, TETHER_DB: server.db } });
  expect(restored.stdout).toMatch(/new epochs/);
  const again = await startServerProcess({ TETHER_DB: server.db, PORT: String(server.port) });
  try {
    // Others write before this client is back: the same offsets and versions, other contents.
    for (const data of ['other 3', 'other 4']) expect((await apiPublish(again.httpUrl, 'feed', data)).status).toBe(200);
    await network.restore();
    await waitForConnection(tab, 'online', 20_000);
    await expect.poll(async () => (await resetsIn(tab, 'feed')).length, { timeout: 15_000 }).toBeGreaterThan(0);
    const doc = await apiDoc(again.httpUrl, 'board');
    expect(doc.keys.title?.value).toBe('before backup');
    await expect.poll(() => tab.evaluate(() => window.tether.state.doc('board').getState().title)).toBe('before backup');
  } finally {
    await again.stop();
  }
  await context.close();
});

test('a reloaded tab joining a subscription another tab keeps alive gets what it missed since its own offset, each event once', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const keeper = await openTab(context);
  const reloader = await openTab(context);
  expect(await subscribeIn(keeper, 'feed')).toBeUndefined();
  expect(await subscribeIn(reloader, 'feed')).toBeUndefined();
  for (const data of ['e1', 'e2']) expect((await apiPublish(server.httpUrl, 'feed', data)).status).toBe(200);
  await expect.poll(async () => (await receivedIn(reloader, 'feed')).map((e) => e.data)).toEqual(['e1', 'e2']);

  await reloader.reload();
  // While it reloads, the worker stays (the keeper tab holds it) and the channel moves on.
  for (const data of ['e3', 'e4']) expect((await apiPublish(server.httpUrl, 'feed', data)).status).toBe(200);
  await expect.poll(async () => (await receivedIn(keeper, 'feed')).length).toBe(4);
  await waitForConnection(reloader, 'online');
  expect(await subscribeIn(reloader, 'feed')).toBeUndefined();
  expect((await apiPublish(server.httpUrl, 'feed', 'e5')).status).toBe(200);
  await expect.poll(async () => (await receivedIn(reloader, 'feed')).map((e) => [e.offset, e.data])).toEqual([[3, 'e3'], [4, 'e4'], [5, 'e5']]);
  await reloader.waitForTimeout(300);
  expect(await receivedIn(reloader, 'feed')).toHaveLength(3);
  await context.close();
});

test('a reloaded tab that missed more than one page of history (60 events of 20 KB; the server cuts pages at ~256 KiB) gets every event, in order', async ({ browser, openTab, server }) => {
  const context = await browser.newContext();
  const keeper = await openTab(context);
  const reloader = await openTab(context);
  expect(await subscribeIn(keeper, 'big')).toBeUndefined();
  expect(await subscribeIn(reloader, 'big')).toBeUndefined();
  await reloader.reload();
  const pad = 'x'.repeat(20_000);
  for (let n = 1; n <= 60; n++) expect((await apiPublish(server.httpUrl, 'big', { n, pad })).status).toBe(200);
  await expect.poll(async () => (await receivedIn(keeper, 'big')).length, { timeout: 15_000 }).toBe(60);
  await waitForConnection(reloader, 'online');
  expect(await subscribeIn(reloader, 'big')).toBeUndefined();
  await expect
    .poll(async () => (await receivedIn(reloader, 'big')).map((e) => (e.data as { n: number }).n), { timeout: 15_000 })
    .toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
  await context.close();
});
