/**
 * Benchmarks in a real browser (headless Debian Chromium, loopback), Tether beside two peers in
 * the same run and the same browser, so that an engine change can be judged:
 *  - floor:     a bare SharedWorker owning one raw ws to an echo server, relaying to every tab
 *               (no outbox, no protocol: what a SharedWorker + WebSocket cost at least);
 *  - Socket.IO: two tabs, each with its own socket.io-client 4.8 connection (websocket
 *               transport) to a Socket.IO server in its own process (room broadcast, acks);
 *  - Tether:    two tabs of one context with the script-tag client, through their SharedWorker,
 *               against the reference server at its default limits.
 * Rows: tab → tab latency at fixed rates, requests one at a time, one tab's durable throughput;
 * and the offline outbox (N publishes while the network is cut, then restored). To split where a
 * publish's time goes, two more rows: an IndexedDB strict commit alone (in a bare SharedWorker of
 * the same kind of context as Tether's), and the publish against a second Tether server whose
 * fsync is off (`TETHER_DB_SYNC=off`). And document changes as the tabs see them: whether the
 * calling tab shows its transaction before `transact` returns, and when the other tab's
 * `subscribe` listener sees it.
 * The floor and Socket.IO pages come from a loopback HTTP server of this process (Chromium's
 * Local Network Access blocks WebSockets from pages fulfilled by page.route).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from '@playwright/test';
import { WebSocketServer } from 'ws';
import { TcpProxy } from '../e2e/fixtures/tcp-proxy.js';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../e2e/fixtures/chromium.js';
import type { Target } from './targets.js';
import type { DocStore } from '../sdk/index.js';

const executablePath = CHROMIUM_PATH;

/** What every bench page (floor, Socket.IO, Tether) offers the measuring code. */
interface BenchApi {
  /** Tab → tab: sends `t` to the other tab(s). */
  send(t: number): void;
  /** Calls `onMessage(t)` for what the other tab sends; resolves once receiving is set up. */
  listen(onMessage: (t: number) => void): Promise<void>;
  /** One request that the server answers to this tab. */
  roundTrip(): Promise<unknown>;
}

declare global {
  interface Window {
    bench: BenchApi;
    benchReady?: Promise<void>;
    /** Received messages: [sent at (epoch ms), arrival − sent (ms)]. */
    rx?: [number, number][];
    benchDoc?: DocStore<{ k?: number }>;
    /** /idb.html: `count` strict IndexedDB commits in a bare SharedWorker; latencies (ms) and the record's JSON size. */
    idbCommits?: (count: number) => Promise<{ lat: number[]; bytes: number }>;
    /** The document both Tether tabs have open for the document-changes row. */
    benchTabsDoc?: DocStore<{ k?: number }>;
    /** Tab B: each value of `k` its `subscribe` listener saw first → when (epoch ms). */
    docSeen?: Record<string, number>;
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

export interface LatencyResult {
  p50: number;
  p99: number;
}

export interface RateResult extends LatencyResult {
  /** Median latency of the last 10% of messages (in send order) minus that of the first 10%. */
  growth: number;
  sent: number;
  received: number;
}

export type Peer = 'floor' | 'socketio' | 'tether' | 'tetherLeader' | 'tetherLongPolling';
export const PEERS: Peer[] = ['floor', 'socketio', 'tether', 'tetherLeader', 'tetherLongPolling'];

export interface BrowserPlan {
  /** Tab → tab rows: messages per second, for how long. */
  rates: { rate: number; seconds: number }[];
  /** Requests one at a time, per row (after a few unmeasured ones). */
  roundTrips: number;
  /** One tab's durable throughput: at most `window` unacknowledged publishes, for `seconds` or `max` publishes. */
  throughput: { window: number; seconds: number; max: number };
  /** Publishes fired in one loop, timed until all are acknowledged. */
  burst: number;
  /** Document transactions one at a time from tab A (after 10 unmeasured), started `gapMs` apart at the soonest. */
  docChanges: { count: number; gapMs: number };
}

/** One animation frame at 60 Hz (ms). */
export const FRAME_MS = 1000 / 60;

export interface DocChangesResult {
  /** Transactions measured. */
  total: number;
  /** How many showed `k === i` in the calling tab's store synchronously, right after `transact` returned. */
  shownOnReturn: number;
  /** Call in tab A → tab B's `subscribe` listener sees `k === i` (ms); one never seen counts as Infinity. */
  otherTab: LatencyResult;
  /** How many tab B saw at all (within 10 s of the last call). */
  seen: number;
  /** How many tab B saw within FRAME_MS of the call. */
  withinFrame: number;
  /** Call → `transact` resolved in tab A (the server committed). */
  resolved: LatencyResult;
}

export interface BrowserRun {
  /** One entry per plan rate, in plan order. */
  tabToTab: { rate: number; seconds: number; results: Record<Peer, RateResult> }[];
  roundTrip: {
    floor: LatencyResult;
    socketio: LatencyResult;
    rpc: LatencyResult;
    /** The same call over long polling (`transports: ['long-polling']`). */
    rpcLongPolling: LatencyResult;
    publish: LatencyResult;
    /** The same publish over long polling. */
    publishLongPolling: LatencyResult;
    /** The same publish row against the second server, `TETHER_DB_SYNC=off`. */
    publishSyncOff: LatencyResult;
    transact: LatencyResult;
    /** One IndexedDB `readwrite` transaction with strict durability putting one small record, in a bare SharedWorker. */
    idbCommit: LatencyResult;
  };
  /** The size of the record `idbCommit` puts (JSON bytes). */
  idbRecordBytes: number;
  throughput: { perSec: number; acked: number; failed: number; ms: number };
  burst: { ms: number; perSec: number; count: number; failed: number };
  docChanges: DocChangesResult;
}

/** Opens a page of the Tether server with the script-tag client connected to `wsUrl`. */
async function tetherPage(context: BrowserContext, target: Target, wsUrl: string, mode: 'auto' | 'leader-election' = 'auto', transport?: 'long-polling'): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${target.port}/api/health`);
  await page.addScriptTag({ url: '/tether.js' });
  await page.evaluate(({ url, mode, transport }) => {
    window.tether = window.Tether.connect({ url, mode, ...(transport ? { transports: [transport] } : {}) });
  }, { url: wsUrl, mode, transport });
  await page.waitForFunction(() => window.tether.status.getState().connection === 'online');
  if (transport) await page.waitForFunction((t) => window.tether.status.getState().transport === t, transport);
  return page;
}

/**
 * Tether without SharedWorker (`mode: 'leader-election'`): three tabs of one context; the first
 * leads, the two returned are followers, so a message goes follower → leader → server → leader →
 * follower (the longest path there is in that mode).
 */
async function tetherFollowers(browser: Browser, target: Target, wsUrl: string, channel: string): Promise<[Page, Page]> {
  const context = await browser.newContext();
  const leader = await tetherPage(context, target, wsUrl, 'leader-election');
  await leader.waitForFunction(() => window.tether.status.getState().mode === 'leader');
  const followers: [Page, Page] = [await tetherPage(context, target, wsUrl, 'leader-election'), await tetherPage(context, target, wsUrl, 'leader-election')];
  for (const page of followers) {
    await page.waitForFunction(() => window.tether.status.getState().mode === 'follower');
    await tetherBench(page, channel);
  }
  return followers;
}

/** Tether over long polling (`transports: ['long-polling']`, as where WebSockets are blocked): two tabs of one context, one SharedWorker. */
async function tetherLongPolling(browser: Browser, target: Target, wsUrl: string): Promise<[Page, Page]> {
  const context = await browser.newContext();
  const channel = `latency-${Math.random().toString(36).slice(2)}`;
  const tabs: [Page, Page] = [await tetherPage(context, target, wsUrl, 'auto', 'long-polling'), await tetherPage(context, target, wsUrl, 'auto', 'long-polling')];
  for (const page of tabs) await tetherBench(page, channel);
  return tabs;
}

/** Gives a Tether page the bench API: pub/sub on `channel`, `hello` by RPC. */
async function tetherBench(page: Page, channel: string): Promise<void> {
  await page.evaluate((channel) => {
    window.bench = {
      send: (t) => void window.tether.pubsub.publish(channel, t),
      listen: (onMessage) =>
        new Promise<void>((resolve) => {
          window.tether.pubsub.subscribe<number>(channel, (t) => onMessage(t), { onSubscribed: () => resolve() });
        }),
      roundTrip: () => window.tether.rpc.call('hello', ['world']),
    };
  }, channel);
}

/** Two tabs of one new context on `url` (a page that defines `window.bench` and `window.benchReady`). */
async function peerPages(browser: Browser, url: string): Promise<[Page, Page]> {
  const context = await browser.newContext();
  const pages: Page[] = [];
  for (let i = 0; i < 2; i++) {
    const page = await context.newPage();
    await page.goto(url);
    await page.evaluate(() => window.benchReady);
    pages.push(page);
  }
  return pages as [Page, Page];
}

/**
 * Tab A sends `rate` timestamps per second for `seconds` on a schedule (message i is due at
 * i / rate; every message due is sent at once, so the rate holds when a timer fires late);
 * tab B records arrival − sent. Latencies in send order give the queue growth.
 */
export async function tabToTabAt(a: Page, b: Page, rate: number, seconds: number): Promise<RateResult> {
  await b.evaluate(() => {
    window.rx = [];
  });
  const sent = await a.evaluate(
    async ({ rate, seconds }) => {
      const count = Math.max(1, Math.round(rate * seconds));
      const interval = 1000 / rate;
      const t0 = performance.now();
      let i = 0;
      while (i < count) {
        const now = performance.now();
        while (i < count && t0 + i * interval <= now) {
          window.bench.send(performance.timeOrigin + performance.now());
          i++;
        }
        if (i < count) await new Promise((resolve) => setTimeout(resolve, Math.max(0, t0 + i * interval - performance.now())));
      }
      return count;
    },
    { rate, seconds },
  );
  // A benchmark reports: what did not arrive within 30 s shows as received < sent.
  await b.waitForFunction((sent) => window.rx!.length >= sent, sent, { timeout: 30_000, polling: 20 }).catch(() => {});
  const rx = (await b.evaluate(() => window.rx!)).sort((x, y) => x[0] - y[0]);
  const lat = rx.map(([, latency]) => latency);
  const tenth = Math.max(1, Math.floor(lat.length / 10));
  return {
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    growth: percentile(lat.slice(-tenth), 50) - percentile(lat.slice(0, tenth), 50),
    sent,
    received: rx.length,
  };
}

/** Waits until a Tether tab has no write unacknowledged (other pages: at once), then 300 ms more. */
async function settle(page: Page): Promise<void> {
  await page
    .waitForFunction(() => !('tether' in window) || window.tether.status.getState().pending === 0, undefined, { timeout: 60_000, polling: 20 })
    .catch(() => {});
  await page.waitForTimeout(300);
}

type Sequential = 'roundTrip' | 'publish' | 'transact';

/** `count` requests one at a time from `page` (after 10 unmeasured), each awaited before the next. */
export async function oneAtATime(page: Page, op: Sequential, count: number): Promise<LatencyResult> {
  const lat = await page.evaluate(
    async ({ op, count }) => {
      const run = (i: number): Promise<unknown> => {
        if (op === 'roundTrip') return window.bench.roundTrip();
        if (op === 'publish') return window.tether.pubsub.publish('bench-rtt', i);
        window.benchDoc ??= window.tether.state.doc<{ k?: number }>('bench-doc');
        return window.benchDoc.transact((tx) => tx.set('k', i));
      };
      for (let i = 0; i < 10; i++) await run(-i);
      const lat: number[] = [];
      for (let i = 0; i < count; i++) {
        const t0 = performance.now();
        await run(i);
        lat.push(performance.now() - t0);
      }
      return lat;
    },
    { op, count },
  );
  return { p50: percentile(lat, 50), p99: percentile(lat, 99) };
}

/**
 * `count` IndexedDB commits one at a time (after 10 unmeasured) in the bare SharedWorker of
 * `page` (/idb.html): each a `readwrite` transaction with `{ durability: 'strict' }` putting one
 * outbox-like record into a fresh database, timed in the worker until `complete`.
 */
export async function idbCommits(page: Page, count: number): Promise<{ result: LatencyResult; bytes: number }> {
  const { lat, bytes } = await page.evaluate((count) => window.idbCommits!(count), count);
  return { result: { p50: percentile(lat, 50), p99: percentile(lat, 99) }, bytes };
}

/**
 * Document changes as the two tabs see them. Both open a fresh document and wait until it is
 * synced; tab B records when its `subscribe` listener first sees each value of `k`. Tab A makes
 * 10 unmeasured transactions, then `count`, one at a time (each awaited, the next started
 * `gapMs` after the previous at the soonest), each `transact(tx => tx.set('k', i))`: A notes
 * the time of the call (`performance.timeOrigin + performance.now()`), whether its store shows
 * `k === i` right after `transact` returns (before awaiting it), and when it resolves.
 */
export async function docChangesSeen(a: Page, b: Page, { count, gapMs }: BrowserPlan['docChanges']): Promise<DocChangesResult> {
  const name = `tabs-${Math.random().toString(36).slice(2)}`;
  await b.evaluate((name) => {
    const doc = window.tether.state.doc<{ k?: number }>(name);
    const seen: Record<string, number> = {};
    window.docSeen = seen;
    window.benchTabsDoc = doc;
    doc.subscribe((state) => {
      const k = state.k;
      if (typeof k === 'number' && !(k in seen)) seen[k] = performance.timeOrigin + performance.now();
    });
  }, name);
  await a.evaluate((name) => {
    window.benchTabsDoc = window.tether.state.doc<{ k?: number }>(name);
  }, name);
  for (const page of [a, b]) await page.waitForFunction(() => window.benchTabsDoc!.status.getState().synced, undefined, { timeout: 30_000, polling: 20 });
  const calls = await a.evaluate(
    async ({ count, gapMs }) => {
      const doc = window.benchTabsDoc!;
      const one = async (i: number) => {
        const t0 = performance.now();
        const pending = doc.transact((tx) => tx.set('k', i));
        const shown = doc.getState().k === i;
        await pending;
        const resolved = performance.now() - t0;
        await new Promise((r) => setTimeout(r, Math.max(0, t0 + gapMs - performance.now())));
        return { at: performance.timeOrigin + t0, shown, resolved };
      };
      for (let i = 1; i <= 10; i++) await one(-i);
      const calls: { at: number; shown: boolean; resolved: number }[] = [];
      for (let i = 0; i < count; i++) calls.push(await one(i));
      return calls;
    },
    { count, gapMs },
  );
  // A benchmark reports: what tab B did not see within 10 s shows as seen < total.
  await b.waitForFunction((count) => Object.keys(window.docSeen!).filter((k) => Number(k) >= 0).length >= count, count, { timeout: 10_000, polling: 20 }).catch(() => {});
  const seen = await b.evaluate(() => window.docSeen!);
  await b.evaluate(() => window.benchTabsDoc!.close());
  await a.evaluate(() => window.benchTabsDoc!.close());
  const otherTab = calls.map((call, i) => (seen[i] === undefined ? Infinity : seen[i] - call.at));
  const resolved = calls.map((call) => call.resolved);
  return {
    total: calls.length,
    shownOnReturn: calls.filter((call) => call.shown).length,
    otherTab: { p50: percentile(otherTab, 50), p99: percentile(otherTab, 99) },
    seen: otherTab.filter(Number.isFinite).length,
    withinFrame: otherTab.filter((ms) => ms <= FRAME_MS).length,
    resolved: { p50: percentile(resolved, 50), p99: percentile(resolved, 99) },
  };
}

/**
 * One tab publishes as fast as it can with at most `window` publishes unacknowledged (the next
 * starts as each resolves), for `seconds` or `max` publishes; acknowledged publishes per second.
 */
export async function windowedThroughput(page: Page, plan: BrowserPlan['throughput']): Promise<BrowserRun['throughput']> {
  const run = await page.evaluate(async ({ window: size, seconds, max }) => {
    const channel = `throughput-${Math.random().toString(36).slice(2)}`;
    let started = 0;
    let acked = 0;
    let failed = 0;
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    await new Promise<void>((resolve) => {
      const next = () => {
        if (started >= max || performance.now() >= end) {
          if (acked + failed === started) resolve();
          return;
        }
        started++;
        window.tether.pubsub.publish(channel, started).then(
          () => {
            acked++;
            next();
          },
          () => {
            failed++;
            next();
          },
        );
      };
      for (let i = 0; i < size; i++) next();
    });
    return { acked, failed, ms: performance.now() - t0 };
  }, plan);
  return { ...run, perSec: (run.acked * 1000) / run.ms };
}

/** `count` publishes fired in one loop; the time until all are acknowledged. */
export async function burst(page: Page, count: number): Promise<BrowserRun['burst']> {
  const run = await page.evaluate(async (count) => {
    const channel = `burst-${Math.random().toString(36).slice(2)}`;
    let failed = 0;
    const t0 = performance.now();
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < count; i++) all.push(window.tether.pubsub.publish(channel, i).catch(() => failed++));
    await Promise.all(all);
    return { ms: performance.now() - t0, failed };
  }, count);
  return { ...run, count, perSec: (count * 1000) / run.ms };
}

/**
 * One run of the browser rows in one fresh browser: Tether (`tether`, a server at its default
 * limits) beside the floor and Socket.IO (`socketio`, the peer server), interleaved row by row.
 * `tetherSyncOff` is the same server with `TETHER_DB_SYNC=off`, for the publish row only.
 */
export async function browserPeers(tether: Target, tetherSyncOff: Target, socketio: Target, plan: BrowserPlan, runIndex = 0): Promise<BrowserRun> {
  const pages = await startPages();
  const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, headless: true });
  try {
    const tetherContext = await browser.newContext();
    const wsUrl = `ws://127.0.0.1:${tether.port}/ws`;
    const tetherTabs: [Page, Page] = [await tetherPage(tetherContext, tether, wsUrl), await tetherPage(tetherContext, tether, wsUrl)];
    const channel = `latency-${Math.random().toString(36).slice(2)}`;
    for (const page of tetherTabs) await tetherBench(page, channel);
    // In the same context as Tether's tabs (browser.newContext(): IndexedDB in memory, as Tether's
    // is here): one tab on the fsync-off server (its own SharedWorker: another origin), and the
    // page of the bare IndexedDB SharedWorker (the bench pages' origin: a database of its own).
    const syncOffTab = await tetherPage(tetherContext, tetherSyncOff, `ws://127.0.0.1:${tetherSyncOff.port}/ws`);
    await tetherBench(syncOffTab, `latency-${Math.random().toString(36).slice(2)}`);
    const idbPage = await tetherContext.newPage();
    await idbPage.goto(`${pages.origin}/idb.html`);
    const tabs: Record<Peer, [Page, Page]> = {
      floor: await peerPages(browser, `${pages.origin}/floor.html`),
      socketio: await peerPages(browser, `${pages.origin}/socketio.html?port=${socketio.port}`),
      tether: tetherTabs,
      tetherLeader: await tetherFollowers(browser, tether, wsUrl, `latency-${Math.random().toString(36).slice(2)}`),
      tetherLongPolling: await tetherLongPolling(browser, tether, wsUrl),
    };
    // Rotating who goes first from run to run spreads what one peer leaves behind (a busy CPU)
    // over the others; between rows, Tether's outbox drains and everything settles.
    const order = PEERS.map((_, i) => PEERS[(i + runIndex) % PEERS.length]!);
    for (const peer of order) {
      const [a, b] = tabs[peer];
      await b.evaluate(() => window.bench.listen((t) => window.rx!.push([t, performance.timeOrigin + performance.now() - t])));
      await tabToTabAt(a, b, 100, 0.2); // warm-up (JIT, buffers), not measured
      await settle(a);
    }
    // Warm-ups, not measured: the fsync-off worker (it carries no tab → tab rows) and the IndexedDB worker.
    await oneAtATime(syncOffTab, 'publish', plan.roundTrips);
    await idbCommits(idbPage, Math.min(plan.roundTrips, 50));
    await settle(syncOffTab);

    const tabToTab: BrowserRun['tabToTab'] = [];
    for (const { rate, seconds } of plan.rates) {
      const results = {} as Record<Peer, RateResult>;
      for (const peer of order) {
        results[peer] = await tabToTabAt(tabs[peer][0], tabs[peer][1], rate, seconds);
        await settle(tabs[peer][0]);
      }
      tabToTab.push({ rate, seconds, results });
    }

    const [a] = tabs.tether;
    const rows: Partial<BrowserRun['roundTrip']> = {};
    rows.floor = await oneAtATime(tabs.floor[0], 'roundTrip', plan.roundTrips);
    rows.socketio = await oneAtATime(tabs.socketio[0], 'roundTrip', plan.roundTrips);
    const idb = await idbCommits(idbPage, plan.roundTrips);
    rows.idbCommit = idb.result;
    rows.rpc = await oneAtATime(a, 'roundTrip', plan.roundTrips);
    rows.rpcLongPolling = await oneAtATime(tabs.tetherLongPolling[0], 'roundTrip', plan.roundTrips);
    rows.publishLongPolling = await oneAtATime(tabs.tetherLongPolling[0], 'publish', plan.roundTrips);
    await settle(tabs.tetherLongPolling[0]);
    rows.publish = await oneAtATime(a, 'publish', plan.roundTrips);
    await settle(a);
    rows.publishSyncOff = await oneAtATime(syncOffTab, 'publish', plan.roundTrips);
    await settle(syncOffTab);
    rows.transact = await oneAtATime(a, 'transact', plan.roundTrips);
    await settle(a);
    const docChanges = await docChangesSeen(a, tabs.tether[1], plan.docChanges);
    const roundTrip = rows as BrowserRun['roundTrip'];
    // The extra pages go before the throughput rows: only Tether's two tabs stay.
    await idbPage.close();
    await syncOffTab.close();
    await settle(a);
    const throughput = await windowedThroughput(a, plan.throughput);
    await settle(a);
    return { tabToTab, roundTrip, idbRecordBytes: idb.bytes, throughput, burst: await burst(a, plan.burst), docChanges };
  } finally {
    await browser.close();
    pages.close();
  }
}

/**
 * The floor and the Socket.IO pages, on a loopback HTTP server with the floor's echo server:
 *  /floor.html, /floor-worker.js  a bare SharedWorker owning one ws to the echo server. `send`
 *      goes to every tab (the worker relays each echo to all); `roundTrip` comes back to the
 *      sending tab only.
 *  /socketio.html?port=P  socket.io-client (websocket transport) to the Socket.IO server on P:
 *      `send` = emit to a room the other tab joined; `roundTrip` = emit with an ack callback.
 *  /idb.html, /idb-worker.js  a bare SharedWorker that, asked for N, opens a fresh IndexedDB
 *      database and times N + 10 strict `readwrite` transactions one after another (the first 10
 *      unmeasured), each putting one outbox-like record (~150 B of JSON); no WebSocket.
 */
async function startPages(): Promise<{ origin: string; close(): void }> {
  const echo = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  echo.on('connection', (socket) => socket.on('message', (data) => socket.send(data.toString())));
  await new Promise((resolve) => echo.once('listening', resolve));
  const echoPort = (echo.address() as AddressInfo).port;
  const worker = `
    const ports = [];
    const ws = new WebSocket('ws://127.0.0.1:${echoPort}');
    const open = new Promise((r) => ws.addEventListener('open', r));
    ws.addEventListener('message', (e) => {
      const d = e.data;
      if (d[0] === 'q') ports[Number(d.slice(1, d.indexOf(':')))].postMessage(d);
      else for (const p of ports) p.postMessage(d);
    });
    onconnect = (e) => {
      const p = e.ports[0];
      const id = ports.push(p) - 1;
      p.onmessage = (m) => ws.send(m.data);
      open.then(() => p.postMessage('ready:' + id));
    };`;
  const floor = `<!doctype html><script>
    const w = new SharedWorker('/floor-worker.js');
    let id, onMessage, answer, ready;
    window.benchReady = new Promise((r) => (ready = r));
    w.port.onmessage = (e) => {
      const d = e.data;
      if (d[0] === 'b') onMessage?.(Number(d.slice(1)));
      else if (d[0] === 'q') answer?.();
      else if (d.startsWith('ready:')) { id = Number(d.slice(6)); ready(); }
    };
    window.bench = {
      send: (t) => w.port.postMessage('b' + t),
      listen: async (cb) => { onMessage = cb; },
      roundTrip: () => new Promise((r) => { answer = r; w.port.postMessage('q' + id + ':' + performance.now()); }),
    };
  </script>`;
  const socketio = `<!doctype html><script src="/socket.io.min.js"></script><script>
    const socket = io('http://127.0.0.1:' + new URLSearchParams(location.search).get('port'), { transports: ['websocket'] });
    window.benchReady = new Promise((r) => socket.once('connect', r));
    window.bench = {
      send: (t) => socket.emit('pub', 'latency', t),
      listen: (cb) => new Promise((r) => { socket.on('msg', cb); socket.emit('join', 'latency', r); }),
      roundTrip: () => new Promise((r) => socket.emit('echo', 0, r)),
    };
  </script>`;
  const idbWorker = `
    const open = (name) => new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore('outbox', { keyPath: ['clientId', 'seq'] });
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    onconnect = (e) => {
      const port = e.ports[0];
      port.onmessage = async ({ data: count }) => {
        const name = 'bench-idb-' + Math.random().toString(36).slice(2);
        const db = await open(name);
        const clientId = crypto.randomUUID();
        const record = (seq) => ({ op: 'publish', channel: 'bench-rtt', data: seq, clientId, seq, url: 'ws://127.0.0.1:40000/ws', user: 'anonymous', createdAt: Date.now() });
        const put = (seq) => new Promise((resolve, reject) => {
          const tx = db.transaction('outbox', 'readwrite', { durability: 'strict' });
          tx.objectStore('outbox').put(record(seq));
          tx.oncomplete = resolve;
          tx.onabort = () => reject(tx.error);
        });
        let seq = 1;
        for (let i = 0; i < 10; i++) await put(seq++);
        const lat = [];
        for (let i = 0; i < count; i++) {
          const t0 = performance.now();
          await put(seq++);
          lat.push(performance.now() - t0);
        }
        db.close();
        indexedDB.deleteDatabase(name);
        port.postMessage({ lat, bytes: JSON.stringify(record(seq)).length });
      };
    };`;
  const idb = `<!doctype html><script>
    const w = new SharedWorker('/idb-worker.js');
    window.idbCommits = (count) => new Promise((r) => { w.port.onmessage = (e) => r(e.data); w.port.postMessage(count); });
  </script>`;
  const files: Record<string, [string, string]> = {
    '/idb.html': ['text/html', idb],
    '/idb-worker.js': ['text/javascript', idbWorker],
    '/floor.html': ['text/html', floor],
    '/floor-worker.js': ['text/javascript', worker],
    '/socketio.html': ['text/html', socketio],
    '/socket.io.min.js': ['text/javascript', readFileSync('node_modules/socket.io-client/dist/socket.io.min.js', 'utf8')],
  };
  const http: Server = createServer((req, res) => {
    const file = files[new URL(req.url ?? '/', 'http://x').pathname];
    if (!file) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': file[0] });
    res.end(file[1]);
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    close() {
      http.close();
      echo.close();
    },
  };
}

export interface OutboxResult {
  queueMs: number;
  drainMs: number;
  stored: number;
}

/** N publishes made offline in an on-disk profile, then the network restored. */
export async function offlineOutbox(target: Target, count: number, apiKey: string): Promise<OutboxResult> {
  const proxy = await TcpProxy.start(target.port);
  const profile = mkdtempSync(join(tmpdir(), 'tether-bench-profile-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath, args: CHROMIUM_ARGS, headless: true });
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${target.port}/api/health`);
    await page.addScriptTag({ url: '/tether.js' });
    await page.evaluate((url) => {
      window.tether = window.Tether.connect({ url });
    }, `ws://127.0.0.1:${proxy.port}/ws`);
    await page.waitForFunction(() => window.tether.status.getState().connection === 'online');
    proxy.refuse();
    await page.waitForFunction(() => window.tether.status.getState().connection === 'offline');
    const channel = `outbox-${Math.random().toString(36).slice(2)}`; // a fresh channel per run
    const queueMs = await page.evaluate(async ({ count, channel }) => {
      const t0 = performance.now();
      for (let i = 0; i < count; i++) void window.tether.pubsub.publish(channel, i);
      await new Promise<void>((resolve) => {
        const check = () => (window.tether.status.getState().pending >= count ? resolve() : setTimeout(check, 5));
        check();
      });
      return performance.now() - t0;
    }, { count, channel });
    const t1 = performance.now();
    await proxy.restore();
    // Drained when the server's history holds them all.
    let stored = 0;
    for (;;) {
      const response = await fetch(`http://127.0.0.1:${target.port}/api/history?channel=${channel}&since=0&limit=1`, { headers: { authorization: `Bearer ${apiKey}` } });
      stored = ((await response.json()) as { head: number }).head;
      if (stored >= count) break;
      if (performance.now() - t1 > 120_000) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    return { queueMs, drainMs: performance.now() - t1, stored };
  } finally {
    await context.close();
    await proxy.close();
  }
}
