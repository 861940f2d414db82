/**
 * Presence, one entry per person: Alice with three tabs in one browser and one in another, Bob
 * with one. Every tab records each membership change it sees, so a leave-and-rejoin (a flap)
 * during a reload cannot pass unnoticed.
 */
import type { BrowserContext, Page } from '@playwright/test';
import type { PresenceSnapshot, TransportKind } from '../worker/api.js';
import { test, expect, callFrom, openWithClient, signToken, waitForConnection, TOKEN_SECRET, PROCEDURES, type HostUnderTest } from './fixtures/test.js';
import { E2E_API_KEY } from './fixtures/server-process.js';

/** The proxy's port in the running test: tabs through it use the transport under test. */
let proxyPort = 0;

/** The server's linger (README: a person leaves this long after their last tab or connection went). */
const LINGER_MS = 5000;

test.use({ serverEnv: { TETHER_TOKEN_SECRET: TOKEN_SECRET, TETHER_PROCEDURES: PROCEDURES, TETHER_ALLOWED_ORIGINS: '*', TETHER_PRESENCE_LINGER_MS: String(LINGER_MS) } });

type Seen = { id: string; tabs: number; devices: number; state: unknown; self: boolean };

declare global {
  interface Window {
    /** Every membership this tab saw, in order (ids joined by ','), recorded on change only. */
    memberships: string[];
    presenceStore: ReturnType<Window['tether']['presence']>;
  }
}

/** The host under test (a project option): every tab is checked to be in it. */
let hostMode: HostUnderTest = 'shared-worker';
/** What carries the tabs that go through the proxy (a project option). */
let transport: TransportKind = 'websocket';
test.beforeEach(({ hostMode: mode, transport: kind, network }) => {
  proxyPort = network.port;
  hostMode = mode;
  transport = kind;
});

async function inModeUnderTest(page: Page): Promise<void> {
  const mode = await page.evaluate(() => window.tether.status.getState().mode);
  expect(mode === 'shared-worker' ? 'shared-worker' : 'leader-election').toBe(hostMode);
}

async function tabAs(context: BrowserContext, httpUrl: string, wsUrl: string, user: string, channels?: string[]): Promise<Page> {
  const page = await openWithClient(context, httpUrl, { url: wsUrl, token: await signToken(user, channels ? { channels } : {}) });
  await waitForConnection(page, 'online', 20_000);
  await inModeUnderTest(page);
  if (wsUrl.includes(`:${proxyPort}/`)) expect(await page.evaluate(() => window.tether.status.getState().transport)).toBe(transport);
  return page;
}

/** Reloads a page opened by tabAs and connects it again as `user` (what a page of the app does on load). */
async function reloadAs(page: Page, wsUrl: string, user: string): Promise<void> {
  await page.reload();
  await page.addScriptTag({ url: '/tether.js' });
  const token = await signToken(user);
  await page.evaluate((o) => {
    window.tether = window.Tether.connect(o);
  }, { url: wsUrl, token });
  await waitForConnection(page, 'online', 20_000);
  await inModeUnderTest(page);
}

/** Joins `channel`'s presence in the page and records every membership change. */
async function join(page: Page, channel: string): Promise<void> {
  await page.evaluate((channel) => {
    window.memberships = [];
    window.presenceStore = window.tether.presence(channel);
    const record = (snapshot: PresenceSnapshot) => {
      if (!snapshot.joined) return;
      // As a set: members of about the same age may be listed in either order.
      const ids = snapshot.members.map((m) => m.id).sort().join(',');
      if (window.memberships.at(-1) !== ids) window.memberships.push(ids);
    };
    record(window.presenceStore.getState());
    window.presenceStore.subscribe(record);
  }, channel);
}

function membersIn(page: Page): Promise<Seen[]> {
  // By id: members who joined at about the same moment may be listed in either order.
  return page.evaluate(() => window.presenceStore.getState().members.map(({ id, tabs, devices, state, self }) => ({ id, tabs, devices, state, self })).sort((a, b) => (a.id < b.id ? -1 : 1)));
}

test('one entry per person: Alice with 3 + 1 tabs in two browsers and Bob; reloads do not flap; she leaves with her last browser', async ({ browser, server, network }) => {
  const ws = `ws://127.0.0.1:${network.port}/ws`;
  const aliceA = await browser.newContext();
  const aliceB = await browser.newContext();
  const bobContext = await browser.newContext();
  const aliceTabs = [
    await tabAs(aliceA, server.httpUrl, ws, 'alice'),
    await tabAs(aliceA, server.httpUrl, ws, 'alice'),
    await tabAs(aliceA, server.httpUrl, ws, 'alice'),
  ];
  const aliceOther = await tabAs(aliceB, server.httpUrl, ws, 'alice');
  const bob = await tabAs(bobContext, server.httpUrl, ws, 'bob');
  const everyone = [...aliceTabs, aliceOther, bob];
  for (const page of everyone) await join(page, 'room');

  const expected = (self: 'alice' | 'bob') => [
    { id: 'alice', tabs: 4, devices: 2, state: null, self: self === 'alice' },
    { id: 'bob', tabs: 1, devices: 1, state: null, self: self === 'bob' },
  ];
  for (const page of everyone) {
    await expect.poll(() => membersIn(page)).toEqual(expected(page === bob ? 'bob' : 'alice'));
  }
  // The backend sees the same.
  const api = async () => {
    const response = await fetch(`${server.httpUrl}/api/presence?channel=room`, { headers: { authorization: `Bearer ${E2E_API_KEY}` } });
    expect(response.status).toBe(200);
    return ((await response.json()) as { members: { id: string; tabs: number; devices: number }[] }).members.map(({ id, tabs, devices }) => ({ id, tabs, devices })).sort((a, b) => (a.id < b.id ? -1 : 1));
  };
  expect(await api()).toEqual([
    { id: 'alice', tabs: 4, devices: 2 },
    { id: 'bob', tabs: 1, devices: 1 },
  ]);

  // From here on every tab records changes from the two members it sees now (before, Alice's first
  // tabs saw her alone until Bob joined).
  for (const page of everyone) await page.evaluate(() => window.memberships.splice(0, window.memberships.length - 1));

  // Reloads: one of Alice's three tabs (the worker stays), and Bob's only tab (his worker goes
  // with it and a new one connects). Nobody sees anyone leave and come back.
  await reloadAs(aliceTabs[2]!, ws, 'alice');
  await join(aliceTabs[2]!, 'room');
  await reloadAs(bob, ws, 'bob');
  await join(bob, 'room');
  for (const page of [...aliceTabs.slice(0, 2), aliceOther]) {
    await expect.poll(() => membersIn(page)).toEqual(expected('alice'));
  }
  await expect.poll(() => membersIn(bob)).toEqual(expected('bob'));
  // Past the linger: a flap would have shown by now.
  await bob.waitForTimeout(LINGER_MS + 1000);
  for (const page of [...aliceTabs.slice(0, 2), aliceOther]) expect(await page.evaluate(() => window.memberships)).toEqual(['alice,bob']);
  expect(await aliceTabs[2]!.evaluate(() => window.memberships)).toEqual(['alice,bob']);
  expect(await bob.evaluate(() => window.memberships)).toEqual(['alice,bob']);

  // Alice closes her second browser: still here, with the first browser's tabs.
  await aliceB.close();
  await expect.poll(() => membersIn(bob), { timeout: LINGER_MS + 10_000 }).toEqual([
    { id: 'alice', tabs: 3, devices: 1, state: null, self: false },
    { id: 'bob', tabs: 1, devices: 1, state: null, self: true },
  ]);
  expect(await bob.evaluate(() => window.memberships)).toEqual(['alice,bob']);

  // She closes the first: gone for Bob, not before the linger, and within the documented time
  // (README, Presence): the linger after the server noticed. A WebSocket's close is seen at once;
  // over long polling a closed browser cuts its held poll, which a blip does too, and is noticed
  // when no poll follows: here by the idle timeout, 3 × TETHER_IDLE_HEARTBEAT_MS (1 s in these
  // tests), sooner than the cut-poll rule (5 s; server/long-polling.test.ts), found by a sweep
  // every TETHER_HEARTBEAT_MS (1 s) after its last heartbeat (up to 1 s before the close).
  const noticedWithin = transport === 'long-polling' ? 3 * 1000 + 1000 + 1000 : 0;
  const closedAt = Date.now();
  await aliceA.close();
  await bob.waitForTimeout(LINGER_MS - 1500);
  expect((await membersIn(bob)).map((m) => m.id)).toEqual(['alice', 'bob']);
  await expect.poll(() => membersIn(bob), { timeout: 15_000, intervals: [100] }).toEqual([{ id: 'bob', tabs: 1, devices: 1, state: null, self: true }]);
  const goneAfter = Date.now() - closedAt;
  console.log(`presence (${transport}, ${hostMode}): Alice gone for Bob ${goneAfter} ms after her last browser closed (linger ${LINGER_MS} ms)`);
  // Slack for a loaded machine: the 50 ms coalescing, the frame's way and this poll's 100 ms.
  expect(goneAfter).toBeLessThan(LINGER_MS + noticedWithin + 3000);
  expect(await bob.evaluate(() => window.memberships)).toEqual(['alice,bob', 'bob']);
  expect(await api()).toEqual([{ id: 'bob', tabs: 1, devices: 1 }]);
  await bobContext.close();
});

test('presence state set in one tab reaches every member; joining outside the subscribe grant is refused and nothing else breaks', async ({ browser, server, network }) => {
  const ws = `ws://127.0.0.1:${network.port}/ws`;
  const aliceContext = await browser.newContext();
  const carolContext = await browser.newContext();
  const alice1 = await tabAs(aliceContext, server.httpUrl, ws, 'alice');
  const alice2 = await tabAs(aliceContext, server.httpUrl, ws, 'alice');
  const carol = await tabAs(carolContext, server.httpUrl, ws, 'carol', ['room', 'lobby']);
  for (const page of [alice1, alice2, carol]) await join(page, 'room');

  // Odd characters and the largest state there is.
  const typing = { typing: true, name: 'Alice 🧑‍💻 "al" \u2028 <b>', card: 'c-42' };
  await alice1.evaluate((state) => window.presenceStore.set(state), typing);
  for (const page of [alice1, alice2, carol]) {
    await expect.poll(async () => (await membersIn(page)).find((m) => m.id === 'alice')?.state).toEqual(typing);
  }
  // The latest set wins, from any of her tabs.
  await alice2.evaluate(() => window.presenceStore.set({ typing: false }));
  await expect.poll(async () => (await membersIn(carol)).find((m) => m.id === 'alice')?.state).toEqual({ typing: false });

  // Too big: refused in the tab with the reason; the previous state stays.
  const tooBig = await alice1.evaluate(() => window.presenceStore.set({ text: 'x'.repeat(2000) }).then(() => 'set', (e: { code: string; message: string }) => `${e.code}: ${e.message}`));
  expect(tooBig).toMatch(/^message_too_big: .*at most 1024/);
  // The limit is in bytes as sent (UTF-8), not characters: 400 × "€" is 402 characters of JSON but 1,202 bytes.
  const euros = (n: number) => alice1.evaluate((n) => window.presenceStore.set('€'.repeat(n)).then(() => 'set', (e: { code: string; message: string }) => `${e.code}: ${e.message}`), n);
  expect(await euros(400)).toBe('message_too_big: presence state is 1202 bytes of JSON (UTF-8); at most 1024');
  expect(await euros(340)).toBe('set');
  await expect.poll(async () => (await membersIn(carol)).find((m) => m.id === 'alice')?.state).toBe('€'.repeat(340));

  // Bad input fails in the page at once, with the reason, and nothing else breaks: a channel name
  // outside the protocol's, and states that are not JSON (a BigInt; a function has no JSON at all).
  const bad = await alice1.evaluate(async () => {
    let name = 'accepted';
    try {
      window.tether.presence('no*stars');
    } catch (e) {
      name = `${(e as Error).name}: ${(e as Error).message}`;
    }
    const tell = (p: Promise<void>) => p.then(() => 'set', (e: { code: string }) => e.code);
    return { name, bigint: await tell(window.presenceStore.set({ n: 10n })), fn: await tell(window.presenceStore.set(() => 1)) };
  });
  expect(bad).toEqual({ name: 'TypeError: presence: name "no*stars" must be 1–200 letters, digits, _ . : @ / - (no *)', bigint: 'invalid_argument', fn: 'invalid_argument' });
  await expect.poll(async () => (await membersIn(carol)).find((m) => m.id === 'alice')?.state).toBe('€'.repeat(340));

  // Carol may subscribe to room and lobby only: her presence on `secret` is refused.
  const refused = await carol.evaluate(async () => {
    const store = window.tether.presence('secret');
    for (let i = 0; i < 100 && store.getState().error === null; i++) await new Promise((r) => setTimeout(r, 50));
    const { error, joined, members } = store.getState();
    const set = await store.set({ x: 1 }).then(() => 'set', (e: { code: string }) => e.code);
    return { error, joined, members: members.length, set };
  });
  expect(refused).toEqual({ error: { code: 'forbidden', message: 'you may not join the presence of secret' }, joined: false, members: 0, set: 'forbidden' });
  // Her connection keeps working, and her presence on room too.
  expect(await callFrom(carol, 'hello', ['world'])).toEqual({ ok: true, value: 'Hello, world!' });
  await carol.evaluate(() => window.presenceStore.set({ here: true }));
  await expect.poll(async () => (await membersIn(alice1)).find((m) => m.id === 'carol')?.state).toEqual({ here: true });
  // The backend is refused nothing, and others never saw `secret`.
  const secret = await fetch(`${server.httpUrl}/api/presence?channel=secret`, { headers: { authorization: `Bearer ${E2E_API_KEY}` } });
  expect(((await secret.json()) as { members: unknown[] }).members).toEqual([]);

  // leave() removes the tab: Alice keeps one tab, then leaves with it.
  await alice2.evaluate(() => window.presenceStore.leave());
  await expect.poll(async () => (await membersIn(carol)).find((m) => m.id === 'alice')?.tabs).toBe(1);
  await alice1.evaluate(() => window.presenceStore.leave());
  await expect.poll(async () => (await membersIn(carol)).map((m) => m.id), { timeout: LINGER_MS + 5000 }).toEqual(['carol']);
  await aliceContext.close();
  await carolContext.close();
});

test('offline: the members stay as last known and the tab says it is not joined; back online it joins again without anyone seeing it leave', async ({ browser, server, network }) => {
  const watcherContext = await browser.newContext();
  const cutContext = await browser.newContext();
  // Development mode would key anonymous clients by client id; this file runs with tokens.
  const watcher = await tabAs(watcherContext, server.httpUrl, server.wsUrl, 'watcher');
  const cut = await tabAs(cutContext, server.httpUrl, `ws://127.0.0.1:${network.port}/ws`, 'dana');
  await join(watcher, 'room');
  await join(cut, 'room');
  await expect.poll(async () => (await membersIn(watcher)).map((m) => m.id)).toEqual(['dana', 'watcher']);
  const seen = await watcher.evaluate(() => window.memberships.length); // it may have seen itself alone first
  // A short cut (refused): shorter than the linger, so the watcher never sees Dana leave.
  network.refuse();
  await waitForConnection(cut, 'offline');
  expect(await cut.evaluate(() => window.presenceStore.getState().joined)).toBe(false);
  expect((await membersIn(cut)).map((m) => m.id)).toContain('watcher');
  await network.restore();
  await waitForConnection(cut, 'online', 20_000);
  await expect.poll(() => cut.evaluate(() => window.presenceStore.getState().joined)).toBe(true);
  await cut.waitForTimeout(LINGER_MS + 500);
  expect((await watcher.evaluate(() => window.memberships)).slice(seen - 1)).toEqual(['dana,watcher']);
  await watcherContext.close();
  await cutContext.close();
});
