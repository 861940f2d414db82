/**
 * GET /metrics of the real server process while a browser tab works through the public SDK:
 * the exposition parses strictly and the counters moved by what the page did.
 */
import { test, expect, callFrom } from './fixtures/test.js';
import { E2E_API_KEY } from './fixtures/server-process.js';
import { parsePrometheusText, sampleValue, type Family } from '../server/testing/prometheus-text.js';

async function scrape(httpUrl: string): Promise<Map<string, Family>> {
  const res = await fetch(`${httpUrl}/metrics`, { headers: { authorization: `Bearer ${E2E_API_KEY}` } });
  expect(res.status).toBe(200);
  return parsePrometheusText(await res.text());
}

test('a page that says hello and publishes moves the counters by exactly that; /metrics wants the API key', async ({ browser, openTab, server }) => {
  expect((await fetch(`${server.httpUrl}/metrics`)).status).toBe(401);
  const before = await scrape(server.httpUrl);
  const delta = (after: Map<string, Family>, name: string, labels: Record<string, string>) => sampleValue(after, name, labels) - sampleValue(before, name, labels);

  const context = await browser.newContext();
  const tab = await openTab(context);
  expect(await callFrom(tab, 'hello', ['metrics'])).toEqual({ ok: true, value: 'Hello, metrics!' });
  const offsets = await tab.evaluate(() => Promise.all([1, 2, 3].map((n) => window.tether.pubsub.publish('metrics-e2e', { n }))));
  expect(offsets).toHaveLength(3);

  const after = await scrape(server.httpUrl);
  expect(sampleValue(after, 'tether_connections', { transport: 'websocket' })).toBe(1);
  expect(delta(after, 'tether_sessions_opened_total', { transport: 'websocket' })).toBeGreaterThanOrEqual(1);
  expect(delta(after, 'tether_frames_received_total', { type: 'handshake' })).toBeGreaterThanOrEqual(1);
  expect(delta(after, 'tether_frames_received_total', { type: 'rpc' })).toBe(1);
  expect(delta(after, 'tether_writes_acknowledged_total', { kind: 'publish', source: 'client' })).toBe(3);
  expect(delta(after, 'tether_writes_duplicate_total', { source: 'client' })).toBe(0);
  expect(delta(after, 'tether_broker_publish_seconds_count', { kind: 'event' })).toBe(3);
  expect(delta(after, 'tether_store_seconds_count', { operation: 'write' })).toBeGreaterThanOrEqual(1);
  expect(delta(after, 'tether_frames_received_total', { type: 'invalid' })).toBe(0);
  await context.close();
});
