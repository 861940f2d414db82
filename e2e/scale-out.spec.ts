/**
 * Two server processes on one PostgreSQL events DB and one Redis: browsers on either node see one
 * system. Each test gets a database and a Redis prefix of its own and removes the database.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { test, expect, type Browser, type BrowserContext } from '@playwright/test';
import { apiHistory, apiPublish, openWithClient, receivedIn, subscribeIn, waitForConnection } from './fixtures/test.js';
import { E2E_API_KEY, startServerProcess, type ServerProcess } from './fixtures/server-process.js';
import { TcpProxy } from './fixtures/tcp-proxy.js';

const ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test';

interface Cluster {
  a: ServerProcess;
  b: ServerProcess;
  stop(): Promise<void>;
}

async function startCluster(): Promise<Cluster> {
  const database = `tether_e2e_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  const env = {
    TETHER_DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${database}`,
    TETHER_REDIS_URL: 'redis://127.0.0.1:6379',
    TETHER_REDIS_PREFIX: `${database}:`,
  };
  // Started together: migrations must be safe when several processes start at once.
  const [a, b] = await Promise.all([startServerProcess(env), startServerProcess(env)]);
  return {
    a,
    b,
    async stop() {
      await Promise.all([a.stop(), b.stop()]);
      await admin.query(`DROP DATABASE ${database} WITH (FORCE)`);
      await admin.end();
    },
  };
}

let cluster: Cluster;
let contexts: BrowserContext[] = [];
test.beforeEach(async () => {
  cluster = await startCluster();
});
test.afterEach(async () => {
  for (const context of contexts) await context.close();
  contexts = [];
  await cluster.stop();
  // A process that did not finish its shutdown in time says so before it exits: that is a bug.
  for (const node of [cluster.a, cluster.b]) expect(node.logs.filter((l) => String(l.msg).startsWith('shutdown did not finish'))).toEqual([]);
});

/** A new browser (context), closed after the test. */
async function newBrowser(browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext();
  contexts.push(context);
  return context;
}

test('a subscriber on node A gets, once and in offset order, what browsers on node B and the HTTP API on node A publish, interleaved', async ({ browser }) => {
  const { a, b } = cluster;
  expect(await (await fetch(`${a.httpUrl}/api/health`)).json()).toMatchObject({ ok: true, store: { kind: 'postgres', ok: true }, broker: { kind: 'redis', ok: true } });
  const reader = await openWithClient(await newBrowser(browser), a.httpUrl, { url: a.wsUrl });
  await waitForConnection(reader, 'online');
  expect(await subscribeIn(reader, 'feed')).toBeUndefined();
  const writers = await Promise.all([0, 1].map(async () => {
    const page = await openWithClient(await newBrowser(browser), b.httpUrl, { url: b.wsUrl });
    await waitForConnection(page, 'online');
    return page;
  }));
  const perWriter = 40;
  await Promise.all([
    ...writers.map((page, w) => page.evaluate(async ({ w, n }) => {
      for (let i = 0; i < n; i++) await window.tether.pubsub.publish('feed', `browser${w}-${i}`);
    }, { w, n: perWriter })),
    (async () => {
      for (let i = 0; i < perWriter; i++) expect((await apiPublish(a.httpUrl, 'feed', `api-${i}`)).status).toBe(200);
    })(),
  ]);
  const total = 3 * perWriter;
  await expect.poll(async () => (await receivedIn(reader, 'feed')).length, { timeout: 15_000 }).toBe(total);
  const got = await receivedIn(reader, 'feed');
  expect(got.map((e) => e.offset)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  // Each source in its own order, each event once.
  for (const source of ['browser0', 'browser1', 'api']) {
    expect(got.map((e) => String(e.data)).filter((d) => d.startsWith(`${source}-`))).toEqual(Array.from({ length: perWriter }, (_, i) => `${source}-${i}`));
  }
  expect((await apiHistory(b.httpUrl, 'feed')).map((e) => e.data)).toEqual(got.map((e) => e.data));
});

test('transactions from both nodes on one key commit exactly as many times as they were made', async ({ browser }) => {
  const { a, b } = cluster;
  const pages = await Promise.all([a, b, a, b].map(async (node) => {
    const page = await openWithClient(await newBrowser(browser), node.httpUrl, { url: node.wsUrl });
    await waitForConnection(page, 'online');
    return page;
  }));
  const perPage = 15;
  await Promise.all(pages.map((page) => page.evaluate(async (n) => {
    const doc = window.tether.state.doc('counter');
    for (let i = 0; i < n; i++) await doc.transact((tx) => tx.set('n', ((tx.get('n') as number | undefined) ?? 0) + 1), { maxRetries: 100 });
  }, perPage)));
  const expected = pages.length * perPage;
  const state = await (await fetch(`${a.httpUrl}/api/docs/counter`, { headers: { authorization: 'Bearer e2e-api-key' } })).json() as { version: number; keys: { n: { value: number } } };
  expect(state.keys.n.value).toBe(expected);
  expect(state.version).toBe(expected);
  // Every node's sessions saw every committed change: each page's view ends at the total.
  for (const page of pages) {
    await expect.poll(() => page.evaluate(() => window.tether.state.doc('counter').getState().n), { timeout: 10_000 }).toBe(expected);
  }
});

test('node A is killed: its subscriber moves to node B through the load balancer without missing an event, and its outbox flushes there once', async ({ browser }) => {
  const { a, b } = cluster;
  // The load balancer: one address, sending new connections to a live node.
  const balancer = await TcpProxy.start(a.port);
  try {
    const reader = await openWithClient(await newBrowser(browser), a.httpUrl, { url: `ws://127.0.0.1:${balancer.port}/ws` });
    await waitForConnection(reader, 'online');
    expect(await subscribeIn(reader, 'feed')).toBeUndefined();
    let published = 0;
    const publishing = (async () => {
      while (published < 120) {
        expect((await apiPublish(b.httpUrl, 'feed', ++published)).status).toBe(200);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    await expect.poll(async () => (await receivedIn(reader, 'feed')).length, { timeout: 10_000 }).toBeGreaterThan(20);
    await a.stop('SIGKILL');
    balancer.retarget(b.port);
    // Written while the reader's node is dead: queued in its outbox, flushed once on node B.
    const mine = reader.evaluate(() => Promise.all([1, 2, 3].map((i) => window.tether.pubsub.publish('mine', `after-kill-${i}`))));
    await publishing;
    await mine;
    await expect.poll(async () => (await receivedIn(reader, 'feed')).length, { timeout: 20_000 }).toBe(120);
    const got = await receivedIn(reader, 'feed');
    expect(got.map((e) => e.offset)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
    expect(got.map((e) => e.data)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
    expect((await apiHistory(b.httpUrl, 'mine')).map((e) => e.data)).toEqual(['after-kill-1', 'after-kill-2', 'after-kill-3']);
  } finally {
    await balancer.close();
  }
});

test('presence across the two nodes: one entry per browser whichever node it is on; node A is killed and Alice moves to node B without Bob seeing her leave', async ({ browser }) => {
  const { a, b } = cluster;
  const balancer = await TcpProxy.start(a.port);
  try {
    // Development mode: one member per browser (`client:<clientId>`).
    const alice = await openWithClient(await newBrowser(browser), a.httpUrl, { url: `ws://127.0.0.1:${balancer.port}/ws` });
    const bob = await openWithClient(await newBrowser(browser), b.httpUrl, { url: b.wsUrl });
    for (const page of [alice, bob]) {
      await waitForConnection(page, 'online');
      await page.evaluate(() => {
        const w = window as unknown as { here: ReturnType<typeof window.tether.presence>; seen: string[] };
        w.here = window.tether.presence('room');
        w.seen = [];
        // Every membership this tab sees (who, with how many tabs/browsers), recorded on change only.
        w.here.subscribe(({ joined, members }) => {
          const ids = members.map((m) => `${m.self ? 'me' : 'other'}:${m.tabs}/${m.devices}`).sort().join(',');
          if (joined && w.seen.at(-1) !== ids) w.seen.push(ids);
        });
      });
    }
    const members = (page: typeof alice) => page.evaluate(() => (window as unknown as { here: ReturnType<typeof window.tether.presence> }).here.getState().members.map(({ tabs, devices, self }) => ({ tabs, devices, self })).sort((x, y) => Number(y.self) - Number(x.self)));
    const seen = (page: typeof alice) => page.evaluate(() => (window as unknown as { seen: string[] }).seen);
    const both = [{ tabs: 1, devices: 1, self: true }, { tabs: 1, devices: 1, self: false }];
    await expect.poll(() => members(alice), { timeout: 10_000 }).toEqual(both);
    await expect.poll(() => members(bob), { timeout: 10_000 }).toEqual(both);
    await expect.poll(() => seen(bob)).toEqual(expect.arrayContaining(['me:1/1,other:1/1']));
    const before = (await seen(bob)).length;

    // Alice's node dies without a word; the balancer sends her reconnect to node B. Her entry on
    // A counts until A's liveness key runs out (6 s); her new one on B is the same browser: one device.
    await a.stop('SIGKILL');
    balancer.retarget(b.port);
    await waitForConnection(alice, 'offline').catch(() => {}); // may already be back
    await waitForConnection(alice, 'online', 20_000);
    await expect.poll(() => alice.evaluate(() => (window as unknown as { here: ReturnType<typeof window.tether.presence> }).here.getState().joined), { timeout: 10_000 }).toBe(true);
    // Past A's liveness expiry and the linger: Alice is still one entry, and Bob never saw her go.
    await bob.waitForTimeout(8000);
    expect(await members(bob)).toEqual(both);
    expect(await members(alice)).toEqual(both);
    // Never gone, never two browsers (her entry on A and on B are one device), never a dip.
    expect((await seen(bob)).slice(before - 1)).toEqual(['me:1/1,other:1/1']);
    const api = await fetch(`${b.httpUrl}/api/presence?channel=room`, { headers: { authorization: `Bearer ${E2E_API_KEY}` } });
    expect(((await api.json()) as { total: number }).total).toBe(2);
  } finally {
    await balancer.close();
  }
});
