/**
 * Benchmarks in a real browser (headless Debian Chromium, loopback):
 *  - tab A → worker → server → worker → tab B latency over N messages, beside a bare
 *    SharedWorker + ws echo measured in the same run (the floor: no outbox, no protocol);
 *  - the offline outbox: N publishes while the network is cut, in an on-disk profile: time
 *    until all are durably queued, and from reconnect until the server stored them all, once.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from '@playwright/test';
import { WebSocketServer } from 'ws';
import { TcpProxy } from '../e2e/fixtures/tcp-proxy.js';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../e2e/fixtures/chromium.js';
import type { Target } from './targets.js';

const executablePath = CHROMIUM_PATH;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

export interface LatencyResult {
  p50: number;
  p99: number;
}

/** Opens a page of the Tether server with the script-tag client connected to `wsUrl`. */
async function tetherPage(browser: Browser, target: Target, wsUrl: string, context = browser.contexts()[0]): Promise<Page> {
  const page = await (context ?? (await browser.newContext())).newPage();
  await page.goto(`http://127.0.0.1:${target.port}/api/health`);
  await page.addScriptTag({ url: '/tether.js' });
  await page.evaluate((url) => {
    window.tether = window.Tether.connect({ url });
  }, wsUrl);
  await page.waitForFunction(() => window.tether.status.getState().connection === 'online');
  return page;
}

/** Sends `count` messages from page A, spaced `gapMs` apart, and returns what page B measured. */
async function measure(a: Page, b: Page, count: number, send: string, gapMs = 2): Promise<LatencyResult> {
  await a.evaluate(
    async ({ count, send, gapMs }) => {
      const fire = new Function('t', send) as (t: number) => void;
      for (let i = 0; i < count; i++) {
        fire(performance.timeOrigin + performance.now());
        await new Promise((r) => setTimeout(r, gapMs));
      }
    },
    { count, send, gapMs },
  );
  await b.waitForFunction((count) => (window as unknown as { lat: number[] }).lat.length >= count, count, { timeout: 60_000 });
  const lat = await b.evaluate(() => (window as unknown as { lat: number[] }).lat);
  return { p50: percentile(lat, 50), p99: percentile(lat, 99) };
}

export async function tabToTab(target: Target, count: number): Promise<{ tether: LatencyResult; baseline: LatencyResult }> {
  const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, headless: true });
  const baseline = await startBaseline();
  try {
    const context = await browser.newContext();
    const wsUrl = `ws://127.0.0.1:${target.port}/ws`;
    const [a, b] = [await tetherPage(browser, target, wsUrl, context), await tetherPage(browser, target, wsUrl, context)];
    await b.evaluate(
      () =>
        new Promise<void>((resolve) => {
          const lat: number[] = [];
          (window as unknown as { lat: number[] }).lat = lat;
          window.tether.pubsub.subscribe('latency', (data) => lat.push(performance.timeOrigin + performance.now() - (data as number)), {
            onSubscribed: () => resolve(),
          });
        }),
    );
    const tether = await measure(a, b, count, "void window.tether.pubsub.publish('latency', t)");

    const bare = await browser.newContext();
    const [ba, bb] = [await bare.newPage(), await bare.newPage()];
    for (const page of [ba, bb]) {
      await page.goto(baseline.url);
      await page.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
    }
    const base = await measure(ba, bb, count, 'window.send(t)');
    return { tether, baseline: base };
  } finally {
    await browser.close();
    baseline.close();
  }
}

/** The floor: a page + a bare SharedWorker that owns one ws to an echo server, broadcasting replies to every tab. */
async function startBaseline(): Promise<{ url: string; close(): void }> {
  const echo = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  echo.on('connection', (socket) => socket.on('message', (data) => socket.send(data.toString())));
  await new Promise((resolve) => echo.once('listening', resolve));
  const echoPort = (echo.address() as AddressInfo).port;
  const worker = `
    const ports = [];
    const ws = new WebSocket('ws://127.0.0.1:${echoPort}');
    const open = new Promise((r) => ws.addEventListener('open', r));
    ws.addEventListener('message', (e) => { for (const p of ports) p.postMessage(e.data); });
    onconnect = (e) => { const p = e.ports[0]; ports.push(p); p.onmessage = (m) => ws.send(m.data); open.then(() => p.postMessage('ready')); };`;
  const page = `<!doctype html><script>
    const w = new SharedWorker('/worker.js');
    window.lat = [];
    window.send = (t) => w.port.postMessage(String(t));
    w.port.onmessage = (e) => { if (e.data === 'ready') { window.ready = true; return; } window.lat.push(performance.timeOrigin + performance.now() - Number(e.data)); };
  </script>`;
  const http: Server = createServer((req, res) => {
    const js = req.url === '/worker.js';
    res.writeHead(200, { 'content-type': js ? 'text/javascript' : 'text/html' });
    res.end(js ? worker : page);
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/`,
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
