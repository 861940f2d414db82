/**
 * The real engine over long polling, against a real server, behind a TCP proxy that refuses or
 * kills WebSocket upgrades and passes plain HTTP: it falls back, keeps exactly-once and
 * gap-free delivery across cuts, and moves back to a WebSocket when upgrades get through again.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ChannelDelivery } from './api.js';
import { Engine, Harness, eventually } from './testing/harness.js';

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

async function storedData(h: Harness, channel: string): Promise<unknown[]> {
  return (await h.server.store.history(channel, { offset: 0 }, 10_000)).events.map((e) => JSON.parse(e.data) as unknown);
}

/** An engine that bypasses the proxy: a WebSocket client the test never cuts. */
function direct(h: Harness): Engine {
  return new Engine(`ws://127.0.0.1:${h.server.port}/ws`, Harness.newDatabase());
}

function events(deliveries: ChannelDelivery[]): unknown[] {
  return deliveries.flatMap((d) => (d.kind === 'event' ? [d.data] : []));
}

describe('where WebSockets are blocked', { timeout: 60_000 }, () => {
  for (const policy of ['refuse', 'kill'] as const) {
    it(`upgrades ${policy === 'refuse' ? 'refused (403)' : 'killed right after opening'}: online over long polling, calls and pub/sub with a WebSocket client both ways`, async () => {
      harness = await Harness.start();
      harness.proxy.upgradesWill(policy);
      const lp = harness.engine();
      const tab = lp.attach();
      await eventually(() => lp.status(tab).connection === 'online', 10_000, 'online');
      expect(lp.status(tab).transport).toBe('long-polling');
      expect(harness.proxy.upgradesBlocked).toBeGreaterThanOrEqual(2);
      expect(await lp.connection.call('hello', ['world'], { timeoutMs: 5000 })).toEqual({ ok: true, value: 'Hello, world!' });

      const ws = direct(harness);
      const wsTab = ws.attach();
      await eventually(() => ws.status(wsTab).connection === 'online');
      expect(ws.status(wsTab).transport).toBe('websocket');
      const atLp: ChannelDelivery[] = [];
      const atWs: ChannelDelivery[] = [];
      await lp.connection.subscribe(tab.tabId, 's1', 'test', (d) => void atLp.push(d));
      await ws.connection.subscribe(wsTab.tabId, 's2', 'test', (d) => void atWs.push(d));
      await eventually(() => atLp.some((d) => d.kind === 'subscribed') && atWs.some((d) => d.kind === 'subscribed'));
      expect(await ws.connection.publish(wsTab.tabId, 'test', 'hey')).toMatchObject({ ok: true });
      expect(await lp.connection.publish(tab.tabId, 'test', 'hey back')).toMatchObject({ ok: true });
      await eventually(() => events(atLp).length === 2 && events(atWs).length === 2);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(events(atLp)).toEqual(['hey', 'hey back']);
      expect(events(atWs)).toEqual(['hey', 'hey back']);
      ws.close();
    });
  }

  for (const cut of ['refuse', 'blackhole'] as const) {
    it(`cut (${cut}) while on long polling: writes made offline stored once, in order; the subscriber misses nothing`, async () => {
      harness = await Harness.start();
      harness.proxy.upgradesWill('refuse');
      const lp = harness.engine();
      const tab = lp.attach();
      await eventually(() => lp.status(tab).connection === 'online', 10_000, 'online');
      const got: ChannelDelivery[] = [];
      await lp.connection.subscribe(tab.tabId, 's', 'orders', (d) => void got.push(d));
      await eventually(() => got.some((d) => d.kind === 'subscribed'));
      // In flight when the cut comes: some of these are sent, some answered, some not.
      const before = Array.from({ length: 20 }, (_, i) => lp.connection.publish(tab.tabId, 'orders', i));
      if (cut === 'refuse') harness.proxy.refuse();
      else harness.proxy.blackhole();
      await eventually(() => lp.status(tab).connection === 'offline', 10_000, 'offline');
      const during = Array.from({ length: 30 }, (_, i) => lp.connection.publish(tab.tabId, 'orders', 20 + i));
      const backend = direct(harness);
      const backendTab = backend.attach();
      await eventually(() => backend.status(backendTab).connection === 'online');
      await backend.connection.publish(backendTab.tabId, 'orders', 'while cut');
      await harness.proxy.restore();
      const outcomes = await Promise.all([...before, ...during]);
      expect(outcomes.every((o) => o.ok)).toBe(true);
      expect(lp.status(tab).transport).toBe('long-polling');
      const stored = await storedData(harness, 'orders');
      expect(stored.filter((d) => typeof d === 'number')).toEqual(Array.from({ length: 50 }, (_, i) => i));
      expect(stored).toHaveLength(51);
      await eventually(() => events(got).length === 51, 10_000, 'every event delivered');
      await new Promise((resolve) => setTimeout(resolve, 200));
      const offsets = got.flatMap((d) => (d.kind === 'event' ? [d.offset] : []));
      expect(offsets).toEqual(Array.from({ length: 51 }, (_, i) => i + 1)); // each once, in order, no gap
      backend.close();
    });
  }

  it('upgrades let through again: back to a WebSocket under a stream of writes, nothing lost or repeated, no call failed', async () => {
    // A call of 300 ms after another, 60 ms apart: one is in flight most of the time, so a switch
    // that did not wait for a quiet moment would fail one with connection_lost.
    harness = await Harness.start({ procedures: { slow: async () => new Promise((resolve) => setTimeout(() => resolve('done'), 300)) } });
    harness.proxy.upgradesWill('refuse');
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online', 10_000, 'online');
    expect(engine.status(tab).transport).toBe('long-polling');
    const writes: Promise<unknown>[] = [];
    const calls: Promise<unknown>[] = [];
    let n = 0;
    let calling = true;
    const timer = setInterval(() => writes.push(engine.connection.publish(tab.tabId, 'stream', n++)), 10);
    const callChain = (async () => {
      while (calling) {
        calls.push(engine.connection.call('slow', [], { timeoutMs: 10_000 }));
        await calls.at(-1);
        await new Promise((resolve) => setTimeout(resolve, 60));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 500));
    harness.proxy.upgradesWill('pass');
    await eventually(() => engine.status(tab).transport === 'websocket', 20_000, 'back on a WebSocket');
    await new Promise((resolve) => setTimeout(resolve, 500));
    clearInterval(timer);
    calling = false;
    await callChain;
    expect((await Promise.all(writes)).every((o) => (o as { ok: boolean }).ok)).toBe(true);
    expect(calls.length).toBeGreaterThan(5);
    expect(await Promise.all(calls)).toEqual(calls.map(() => ({ ok: true, value: 'done' })));
    expect(await storedData(harness, 'stream')).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(n).toBeGreaterThan(50);
  });

  it('forced long polling (`transports: [\'long-polling\']`) never tries a WebSocket', async () => {
    harness = await Harness.start();
    const engine = harness.engine(Harness.newDatabase(), { transports: ['long-polling'] });
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online', 10_000, 'online');
    expect(engine.status(tab).transport).toBe('long-polling');
    await new Promise((resolve) => setTimeout(resolve, 4000)); // past the first probe time
    expect(harness.proxy.upgrades).toBe(0);
  });
});
