/**
 * GET /metrics against a live server: the counters move by exactly the traffic made (over both
 * transports, through the HTTP API, with refusals and bad frames), labels stay bounded, and the
 * endpoint is protected as documented (README "Metrics").
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { pino } from 'pino';
import { startServer, type TetherServer } from './server.js';
import { Session } from './session.js';
import { createMetrics } from './metrics.js';
import { createAuthenticator } from './auth.js';
import { DEFAULT_CONFIG } from './config.js';
import { Revocations } from './revocations.js';
import { ProcedureRegistry } from './rpc/registry.js';
import { WriteQueue } from './pubsub/write-queue.js';
import { createLocalBroker } from './pubsub/broker.js';
import { createLocalPresence } from './presence/local-presence.js';
import { openSqliteStore } from './storage/sqlite.js';
import type { EventStore } from './storage/event-store.js';
import { RawClient } from './testing/raw-client.js';
import { LongPollClient } from './testing/long-poll-client.js';
import { parsePrometheusText, sampleValue, type Family } from './testing/prometheus-text.js';

const silent = pino({ level: 'silent' });
const API_KEY = 'metrics-test-key';
const SECRET = 'unit-test-secret-of-at-least-32-characters';

afterEach(() => {
  for (const c of RawClient.all) c.ws.terminate();
});

type Scrape = Map<string, Family>;

async function scrape(url: string, headers: Record<string, string> = { authorization: `Bearer ${API_KEY}` }): Promise<Scrape> {
  const res = await fetch(url, { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
  return parsePrometheusText(await res.text());
}

/** Families of this server's own metrics (not Node's process metrics, whose series come and go with GC kinds and handle types). */
function tetherFamilies(families: Scrape): Family[] {
  return [...families.values()].filter((f) => !/^tether_(process|nodejs)_/.test(f.name));
}

describe('metrics count the traffic (development mode, with an API key)', () => {
  let server: TetherServer;
  let ws: string;
  let metricsUrl: string;

  beforeAll(async () => {
    server = await startServer({
      port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:',
      apiKey: API_KEY, maxMessageBytes: 1024, allowedOrigins: ['http://app.example'],
    });
    ws = `ws://127.0.0.1:${server.port}/ws`;
    metricsUrl = `http://127.0.0.1:${server.port}/metrics`;
  });
  afterAll(() => server.close());

  it('every counter moves by exactly what the clients did', async () => {
    const before = await scrape(metricsUrl);

    // A: a well-behaved client, and a few mistakes.
    const a = await new RawClient(ws).open();
    a.send({ type: 'handshake', v: 1, clientId: 'metrics-a' });
    expect(await a.next()).toMatchObject({ type: 'welcome' });
    a.send({ type: 'rpc', id: 1, method: 'hello', args: ['world'] });
    expect(await a.answerTo(1)).toMatchObject({ type: 'result', value: 'Hello, world!' });
    for (let seq = 1; seq <= 5; seq++) a.send({ type: 'publish', seq, channel: 'room', data: seq });
    for (let seq = 1; seq <= 5; seq++) expect(await a.next()).toMatchObject({ type: 'ack', seq, offset: seq });
    a.send({ type: 'publish', seq: 3, channel: 'room', data: 3 }); // a resend: acknowledged again, not stored again
    expect(await a.next()).toMatchObject({ type: 'ack', seq: 3, offset: 3 });
    a.send({ type: 'transact', seq: 6, doc: 'board', reads: { k: 0 }, writes: { k: 1 } });
    expect(await a.next()).toMatchObject({ type: 'ack', seq: 6 });
    a.send({ type: 'transact', seq: 7, doc: 'board', reads: { k: 0 }, writes: { k: 2 } }); // read a stale version
    expect(await a.next()).toMatchObject({ type: 'conflict', seq: 7 });
    const { epoch } = await server.store.history('room', undefined, 0);
    a.send({ type: 'subscribe', channel: 'room', since: { offset: 2, epoch } });
    expect(await a.next()).toMatchObject({ type: 'subscribed', channel: 'room' });
    for (const offset of [3, 4, 5]) expect(await a.next()).toMatchObject({ type: 'event', offset });
    a.send({ type: 'history', id: 2, channel: 'room', since: { offset: 0, epoch }, limit: 10 });
    expect(((await a.answerTo(2)).value as { events: unknown[] }).events).toHaveLength(5);
    a.send('not json');
    expect(await a.next()).toMatchObject({ type: 'error', code: 'invalid_message' });
    a.send({ type: 'nope' });
    expect(await a.next()).toMatchObject({ type: 'error', code: 'invalid_message' });
    a.send({ type: 'publish', seq: 8, channel: 'not a channel!', data: 1 }); // malformed write: refused and recorded
    expect(await a.next()).toMatchObject({ type: 'error', seq: 8, code: 'invalid_message' });
    a.send({ type: 'rpc', id: 3, method: 'missing', args: [] });
    expect(await a.answerTo(3)).toMatchObject({ type: 'error', code: 'not_found' });
    a.send({ type: 'writes', writes: [{ type: 'publish', seq: 9, channel: 'other', data: 9 }, { type: 'publish', seq: 10, channel: 'other', data: 10 }] });
    expect(await a.next()).toMatchObject({ type: 'answers', answers: [{ type: 'ack', seq: 9 }, { type: 'ack', seq: 10 }] });

    // B: a frame before the handshake (4000). C: a protocol version the server does not speak (4002).
    const b = await new RawClient(ws).open();
    b.send({ type: 'ping', t: 1 });
    expect((await b.closed).code).toBe(4000);
    const c = await new RawClient(ws).open();
    c.send({ type: 'handshake', v: 99 });
    expect((await c.closed).code).toBe(4002);
    // E: a frame over TETHER_MAX_MESSAGE_BYTES (ws closes it with 1009).
    const e = await new RawClient(ws).open();
    e.send({ type: 'handshake', v: 1, pad: 'x'.repeat(2000) });
    expect((await e.closed).code).toBe(1009);
    // A page of another site: refused before any session.
    const evil = new RawClient(ws, { origin: 'http://evil.example' });
    await expect(evil.open()).rejects.toThrow(/403/);

    // D: long polling.
    const d = await LongPollClient.handshaken(ws.replace('ws:', 'http:'));
    await d.send({ type: 'rpc', id: 1, method: 'hello', args: ['poll'] });
    expect(await d.answerTo(1)).toMatchObject({ type: 'result', value: 'Hello, poll!' });

    // The backend: one publish, one with a wrong key.
    const api = (key: string) => fetch(`http://127.0.0.1:${server.port}/api/publish`, {
      method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ channel: 'news', data: 1 }),
    });
    expect((await api(API_KEY)).status).toBe(200);
    expect((await api('wrong')).status).toBe(401);

    // Closed connections leave the gauge once the server has seen them go.
    let after = await scrape(metricsUrl);
    for (let i = 0; i < 50 && sampleValue(after, 'tether_connections', { transport: 'websocket' }) !== 1; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      after = await scrape(metricsUrl);
    }
    const delta = (name: string, labels: Record<string, string> = {}) => sampleValue(after, name, labels) - sampleValue(before, name, labels);

    expect(sampleValue(after, 'tether_connections', { transport: 'websocket' })).toBe(1);
    expect(sampleValue(after, 'tether_connections', { transport: 'long-polling' })).toBe(1);
    expect(delta('tether_sessions_opened_total', { transport: 'websocket' })).toBe(4);
    expect(delta('tether_sessions_opened_total', { transport: 'long-polling' })).toBe(1);

    /** Every series of `family` moved by `expected[value of label]`, and the others not at all. */
    const moved = (family: string, label: string, expected: Record<string, number>) => {
      const series = after.get(family)!.samples;
      expect(series.length).toBeGreaterThanOrEqual(Object.keys(expected).length);
      const actual: Record<string, number> = {};
      for (const s of series) {
        const d = s.value - sampleValue(before, family, s.labels);
        if (d !== 0) actual[s.labels[label]!] = d;
      }
      expect(actual).toEqual(expected);
    };
    moved('tether_frames_received_total', 'type', { handshake: 3, ping: 1, rpc: 3, publish: 6, transact: 2, subscribe: 1, history: 1, invalid: 3, writes: 1 });
    moved('tether_frames_sent_total', 'type', { welcome: 2, result: 3, ack: 7, conflict: 1, subscribed: 1, event: 3, error: 6, answers: 1 });
    moved('tether_errors_sent_total', 'code', { invalid_message: 4, unsupported_version: 1, not_found: 1 });
    moved('tether_server_closes_total', 'code', { 4000: 1, 4002: 1, 1009: 1 });
    moved('tether_writes_refused_total', 'code', { invalid_message: 1 });
    moved('tether_catch_up_events_total', 'via', { subscribe: 3, history: 5 });
    moved('tether_admissions_refused_total', 'reason', { origin: 1 });
    expect(delta('tether_writes_acknowledged_total', { kind: 'publish', source: 'client' })).toBe(7);
    expect(delta('tether_writes_acknowledged_total', { kind: 'transact', source: 'client' })).toBe(1);
    expect(delta('tether_writes_acknowledged_total', { kind: 'publish', source: 'api' })).toBe(1);
    expect(delta('tether_writes_acknowledged_total', { kind: 'transact', source: 'api' })).toBe(0);
    expect(delta('tether_writes_duplicate_total', { source: 'client' })).toBe(1);
    expect(delta('tether_writes_duplicate_total', { source: 'api' })).toBe(0);
    expect(delta('tether_transaction_conflicts_total', { source: 'client' })).toBe(1);

    // Histograms: one observation per hand-over to the broker, one store handshake (only A had a clientId).
    expect(delta('tether_broker_publish_seconds_count', { kind: 'event' })).toBe(8);
    expect(delta('tether_broker_publish_seconds_count', { kind: 'doc' })).toBe(1);
    expect(delta('tether_store_seconds_count', { operation: 'handshake' })).toBe(1);
    expect(delta('tether_store_seconds_count', { operation: 'write' })).toBeGreaterThanOrEqual(1);
    expect(delta('tether_store_seconds_count', { operation: 'history' })).toBeGreaterThanOrEqual(3);
    expect(delta('tether_store_seconds_sum', { operation: 'write' })).toBeGreaterThan(0);

    // HTTP: the first scrape's own request is counted once it finished (this one's is not yet).
    expect(delta('tether_http_requests_total', { route: '/api/publish', status: '200' })).toBe(1);
    expect(delta('tether_http_requests_total', { route: '/api/publish', status: '401' })).toBe(1);
    expect(delta('tether_http_requests_total', { route: '/metrics', status: '200' })).toBeGreaterThanOrEqual(1);

    // The process metrics are there, under the same prefix.
    expect(sampleValue(after, 'tether_process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(after.get('tether_nodejs_eventloop_lag_seconds')?.type).toBe('gauge');
    await d.close();
  });

  it('an HTTP request whose connection ends before its answer is written is counted once: a 413 cut while the body still arrives, a request aborted by its client', async () => {
    const before = await scrape(metricsUrl);
    const delta = async (status: string) => sampleValue(await scrape(metricsUrl), 'tether_http_requests_total', { route: '/api/publish', status }) - sampleValue(before, 'tether_http_requests_total', { route: '/api/publish', status });
    const head = (extra: string) => `POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${API_KEY}\r\nContent-Type: application/json\r\n${extra}\r\n`;

    // A chunked body past the limit (1024 bytes): the server answers 413 and stops reading; the
    // client goes away on seeing it (the server would cut the connection later).
    const big = connect(server.port, '127.0.0.1');
    big.on('error', () => {});
    const answer = new Promise<string>((resolve) => big.once('data', (data) => resolve(data.toString().split('\r\n')[0]!)));
    await new Promise((resolve) => big.once('connect', resolve));
    big.write(head('Transfer-Encoding: chunked\r\n'));
    for (let i = 0; i < 4; i++) big.write(`200\r\n${'x'.repeat(0x200)}\r\n`);
    expect(await answer).toBe('HTTP/1.1 413 Payload Too Large');
    big.destroy();
    await expect.poll(() => delta('413')).toBe(1);

    // Half a body, then the client goes away.
    const aborted = connect(server.port, '127.0.0.1');
    aborted.on('error', () => {});
    await new Promise((resolve) => aborted.once('connect', resolve));
    aborted.write(head('Content-Length: 100\r\n') + '{"channel":');
    await new Promise((resolve) => setTimeout(resolve, 50));
    aborted.destroy();
    await expect.poll(() => delta('aborted')).toBe(1);

    await new Promise((resolve) => setTimeout(resolve, 100)); // never counted a second time
    expect(await delta('413')).toBe(1);
    expect(await delta('aborted')).toBe(1);
    expect(await delta('400')).toBe(0);
  });

  it('series stay bounded: traffic on 500 channels, 50 documents and 50 API routes adds none, and no label names them', async () => {
    const before = await scrape(metricsUrl);
    const count = (families: Scrape) => tetherFamilies(families).reduce((n, f) => n + f.samples.length, 0);

    const a = await new RawClient(ws).open();
    a.send({ type: 'handshake', v: 1, clientId: 'metrics-bounded' });
    expect(await a.next()).toMatchObject({ type: 'welcome' });
    for (let frame = 0; frame < 50; frame++) {
      a.send({ type: 'writes', writes: Array.from({ length: 10 }, (_, i) => ({ type: 'publish', seq: frame * 10 + i + 1, channel: `chan-${frame * 10 + i}`, data: i })) });
      expect(await a.next()).toMatchObject({ type: 'answers' });
    }
    for (let i = 0; i < 50; i++) a.send({ type: 'subscribe', channel: `chan-${i}` });
    for (let i = 0; i < 50; i++) a.send({ type: 'doc_open', doc: `doc-${i}` });
    await a.until((f) => f.type === 'doc' && f.doc === 'doc-49');
    for (let i = 0; i < 50; i++) {
      const res = await fetch(`http://127.0.0.1:${server.port}/api/docs/doc-${i}`, { headers: { authorization: `Bearer ${API_KEY}` } });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }

    const after = await scrape(metricsUrl);
    expect(sampleValue(after, 'tether_writes_acknowledged_total', { kind: 'publish', source: 'client' }) - sampleValue(before, 'tether_writes_acknowledged_total', { kind: 'publish', source: 'client' })).toBe(500);
    expect(count(after)).toBe(count(before));
    const values = tetherFamilies(after).flatMap((f) => f.samples.flatMap((s) => Object.values(s.labels)));
    expect(values.filter((v) => /chan-|doc-|metrics-bounded/.test(v))).toEqual([]);
    // Fixed series only: a few hundred, whatever the traffic.
    expect(count(after)).toBeLessThan(1000);
  });
});

describe('a session counts what actually goes out (a transport that stops taking frames under it)', () => {
  /**
   * A session on a transport that can go from open to closing at any frame: as a WebSocket does
   * when the peer's close frame arrives, well before its 'close' event.
   */
  function session(wrapStore: (store: EventStore) => EventStore = (store) => store) {
    const metrics = createMetrics();
    const store = openSqliteStore({ path: ':memory:', retention: { maxEvents: 1000, maxAgeMs: 3_600_000 } });
    const broker = createLocalBroker();
    const presence = createLocalPresence({ lingerMs: 0 });
    const sent: Record<string, unknown>[] = [];
    let receive: (text: string, isBinary: boolean) => void = () => {};
    const transport = {
      kind: 'websocket' as const,
      isOpen: true,
      bufferedAmount: 0,
      /** Called with each frame sent; may close the transport. */
      onSend: (_frame: Record<string, unknown>) => {},
      send(frame: string) {
        const parsed = JSON.parse(frame) as Record<string, unknown>;
        sent.push(parsed);
        transport.onSend(parsed);
      },
      close() {
        transport.isOpen = false;
      },
      terminate() {},
      onMessage: (listener: (text: string, isBinary: boolean) => void) => void (receive = listener),
      onClose() {},
      waitForDrain: async () => {},
    };
    new Session(transport, {
      log: silent, authenticate: createAuthenticator({ ...DEFAULT_CONFIG }), revocations: new Revocations(store),
      procedures: new ProcedureRegistry(silent), store: wrapStore(store), writes: new WriteQueue(store, broker, metrics), broker, presence,
      heartbeatMs: 60_000, idleHeartbeatMs: 60_000, maxMessageBytes: 65_536,
      limits: { maxSubscriptions: 100, rateLimit: 1000, maxBufferedBytes: 1 << 20, maxRpcInFlight: 10 }, metrics,
    });
    const count = async (name: string, labels: Record<string, string>) => sampleValue(parsePrometheusText(await metrics.registry.metrics()), name, labels);
    const send = (frame: unknown) => receive(JSON.stringify(frame), false);
    const until = (type: string) => expect.poll(() => sent.some((f) => f.type === type)).toBe(true);
    return { transport, sent, send, until, count, store, close: () => store.close() };
  }
  const settle = () => new Promise((resolve) => setTimeout(resolve, 50));

  it('errors: counted when sent alone or inside answers; not when the transport had stopped taking frames', async () => {
    const s = session();
    s.send({ type: 'handshake', v: 1 }); // no clientId: every write is refused
    await s.until('welcome');
    s.send({ type: 'nope' });
    s.send({ type: 'writes', writes: [{ type: 'publish', seq: 1, channel: 'a', data: 1 }, { type: 'publish', seq: 2, channel: 'a', data: 2 }] });
    await s.until('answers');
    s.send({ type: 'publish', seq: 3, channel: 'a', data: 3 });
    await expect.poll(() => s.sent.filter((f) => f.type === 'error').length).toBe(2);
    expect(await s.count('tether_errors_sent_total', { code: 'invalid_message' })).toBe(4); // nope, 2 in answers, 1 alone

    s.transport.isOpen = false; // the peer's close frame arrived
    s.send({ type: 'nope' });
    s.send({ type: 'writes', writes: [{ type: 'publish', seq: 4, channel: 'a', data: 4 }] });
    s.send({ type: 'publish', seq: 5, channel: 'a', data: 5 });
    await settle();
    expect(await s.count('tether_errors_sent_total', { code: 'invalid_message' })).toBe(4);
    s.close();
  });

  it('catch-up events: not those the socket dropped, nor those the client already had', async () => {
    const s = session((store) => Object.assign(Object.create(store) as EventStore, {
      // A store whose pages start at the offset asked for (inclusive): the first event is one the client has.
      history: async (channel: string, since: { offset: number; epoch?: string } | undefined, limit: number, maxBytes?: number) => {
        const page = await store.history(channel, since === undefined ? undefined : { ...since, offset: Math.max(0, since.offset - 1) }, limit, maxBytes);
        return since === undefined ? page : { ...page, from: since.offset };
      },
    }));
    s.send({ type: 'handshake', v: 1, clientId: 'catch-up' });
    await s.until('welcome');
    for (let seq = 1; seq <= 5; seq++) s.send({ type: 'publish', seq, channel: 'room', data: seq });
    await expect.poll(() => s.sent.filter((f) => f.type === 'ack').length).toBe(5);
    const { epoch } = await s.store.history('room', undefined, 0);

    s.send({ type: 'subscribe', channel: 'room', since: { offset: 2, epoch } }); // the page holds 2..5; 2 is skipped
    await expect.poll(() => s.sent.filter((f) => f.type === 'event').map((f) => f.offset)).toEqual([3, 4, 5]);
    expect(await s.count('tether_catch_up_events_total', { via: 'subscribe' })).toBe(3);

    // The peer closes right after `subscribed`: the events of the page are dropped, not counted.
    s.transport.onSend = (frame) => {
      if (frame.type === 'subscribed') s.transport.isOpen = false;
    };
    s.send({ type: 'subscribe', channel: 'room', since: { offset: 0, epoch } });
    await s.until('subscribed');
    s.send({ type: 'history', id: 1, channel: 'room', since: { offset: 0, epoch }, limit: 10 });
    await settle();
    expect(await s.count('tether_catch_up_events_total', { via: 'subscribe' })).toBe(3);
    expect(await s.count('tether_catch_up_events_total', { via: 'history' })).toBe(0);
    s.close();
  });
});

describe('two processes over Redis (the Redis at 127.0.0.1:6379, one SQLite file)', () => {
  const servers: TetherServer[] = [];
  afterAll(() => Promise.all(servers.map((s) => s.close())));

  it('the delivery lag is observed once per notification received: the publisher\'s own echo as self, the other\'s as other', async () => {
    const db = join(mkdtempSync(join(tmpdir(), 'tether-metrics-')), 'events.db');
    const redisPrefix = `tether-metrics-${randomBytes(4).toString('hex')}:`;
    for (let i = 0; i < 2; i++) {
      servers.push(await startServer({ port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db, redisUrl: 'redis://127.0.0.1:6379', redisPrefix }));
    }
    const [one, two] = servers as [TetherServer, TetherServer];
    for (const server of servers) {
      await expect.poll(async () => ((await (await fetch(`http://127.0.0.1:${server.port}/api/health`)).json()) as { broker: { ok: boolean } }).broker.ok).toBe(true);
    }
    const subscriber = async (server: TetherServer) => {
      const c = await new RawClient(`ws://127.0.0.1:${server.port}/ws`).open();
      c.send({ type: 'handshake', v: 1 });
      await c.until((f) => f.type === 'welcome');
      c.send({ type: 'subscribe', channel: 'lag' });
      await c.until((f) => f.type === 'subscribed');
      return c;
    };
    const [a, b] = [await subscriber(one), await subscriber(two)];
    const url = (server: TetherServer) => `http://127.0.0.1:${server.port}/metrics`;
    const count = (families: Scrape, origin: string) => sampleValue(families, 'tether_broker_delivery_lag_seconds_count', { origin });
    const before = [await scrape(url(one)), await scrape(url(two))] as const;

    const writer = await new RawClient(`ws://127.0.0.1:${one.port}/ws`).open();
    writer.send({ type: 'handshake', v: 1, clientId: 'metrics-lag' });
    await writer.until((f) => f.type === 'welcome');
    writer.send({ type: 'publish', seq: 1, channel: 'lag', data: 'hi' });
    await writer.until((f) => f.type === 'ack');
    await a.until((f) => f.type === 'event');
    await b.until((f) => f.type === 'event');
    // Process one delivered from its own commit; its echo from Redis comes (and is counted) right after.
    await expect.poll(async () => count(await scrape(url(one)), 'self') - count(before[0], 'self')).toBe(1);
    const after = [await scrape(url(one)), await scrape(url(two))] as const;
    expect(count(after[0], 'other') - count(before[0], 'other')).toBe(0);
    expect(count(after[1], 'other') - count(before[1], 'other')).toBe(1);
    expect(count(after[1], 'self') - count(before[1], 'self')).toBe(0);
    expect(sampleValue(after[1], 'tether_broker_delivery_lag_seconds_sum', { origin: 'other' })).toBeLessThan(5);
  });
});

describe('a metrics listener that cannot start (TETHER_METRICS_PORT in use)', () => {
  /** What this process holds open: file descriptors on the events DB, TCP connections to Redis. */
  function held(db: string): { dbFiles: number; redisConnections: number; listeners: number } {
    const links = readdirSync('/proc/self/fd').flatMap((fd) => {
      try {
        return [readlinkSync(`/proc/self/fd/${fd}`)];
      } catch {
        return []; // closed while listing
      }
    });
    const sockets = new Set(links.flatMap((link) => /^socket:\[(\d+)\]$/.exec(link)?.[1] ?? []));
    const mine = ['/proc/net/tcp', '/proc/net/tcp6'].flatMap((table) => readFileSync(table, 'utf8').trim().split('\n').slice(1))
      .map((line) => line.trim().split(/\s+/))
      .filter((columns) => sockets.has(columns[9] ?? ''));
    return {
      dbFiles: links.filter((link) => link.startsWith(db)).length,
      redisConnections: mine.filter((columns) => columns[2]?.endsWith(':18EB') && columns[3] !== '0A').length, // to port 6379, not a listener
      listeners: mine.filter((columns) => columns[3] === '0A').length,
    };
  }

  it('the start fails with a clear error and leaves nothing open: no events DB handle, no Redis connection, no main listener', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-metrics-port-'));
    const db = join(dir, 'events.db');
    const taken = createNetServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const metricsPort = (taken.address() as AddressInfo).port;
    const port = await new Promise<number>((resolve) => {
      const probe = createNetServer().listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as AddressInfo;
        probe.close(() => resolve(free));
      });
    });
    try {
      await expect.poll(() => held(db).redisConnections).toBe(0); // those of the tests before, closing
      const before = held(db);
      const error = await startServer({ port, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db, redisUrl: 'redis://127.0.0.1:6379', redisPrefix: `tether-metrics-port-${randomBytes(4).toString('hex')}:`, metricsPort }).then(() => undefined, (e: unknown) => e);
      await new Promise((resolve) => setTimeout(resolve, 300)); // time for a Redis connection to be made, were one started
      expect(held(db)).toEqual(before);
      expect(before.dbFiles).toBe(0);
      expect(String(error)).toMatch(new RegExp(`metrics listener \\(TETHER_METRICS_PORT\\) could not listen on 127\\.0\\.0\\.1:${metricsPort}: .*EADDRINUSE`));
      expect(error).toMatchObject({ code: 'EADDRINUSE' });
      // The main port was not left listening, and the events DB can go.
      await expect(fetch(`http://127.0.0.1:${port}/api/health`)).rejects.toThrow();
      rmSync(dir, { recursive: true });
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it('the main port in use: the same (the metrics listener, the events DB and Redis are closed again)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-main-port-'));
    const db = join(dir, 'events.db');
    const taken = createNetServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as AddressInfo;
    try {
      await expect.poll(() => held(db).redisConnections).toBe(0); // those of the tests before, closing
      const before = held(db);
      const error = await startServer({ port, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db, redisUrl: 'redis://127.0.0.1:6379', redisPrefix: `tether-main-port-${randomBytes(4).toString('hex')}:`, metricsPort: 0 }).then(() => undefined, (e: unknown) => e);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(held(db)).toEqual(before);
      expect(String(error)).toMatch(new RegExp(`the server could not listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
      rmSync(dir, { recursive: true });
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});

describe('GET /metrics protection', () => {
  const servers: TetherServer[] = [];
  afterAll(() => Promise.all(servers.map((s) => s.close())));
  const start = async (options: Parameters<typeof startServer>[0]) => {
    const server = await startServer({ port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:', ...options });
    servers.push(server);
    return server;
  };
  const get = async (url: string, headers: Record<string, string> = {}) => {
    const res = await fetch(url, { headers });
    return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
  };

  it('secure mode with an API key: the key is required on the main port; the admin port serves it without one; clients go on', async () => {
    const server = await start({ tokenSecret: SECRET, apiKey: API_KEY, metricsPort: 0 });
    const url = `http://127.0.0.1:${server.port}/metrics`;
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
    const client = await new RawClient(`ws://127.0.0.1:${server.port}/ws`).open();
    client.send({ type: 'handshake', v: 1, token });
    const welcome = await client.next();
    expect(welcome, JSON.stringify(welcome)).toMatchObject({ type: 'welcome', user: 'alice' });

    const missing = await get(url);
    expect(missing.status).toBe(401);
    expect(missing.type).toBe('application/json');
    expect(JSON.parse(missing.text)).toEqual({ error: { code: 'unauthorized', message: 'missing or wrong API key (Authorization: Bearer <TETHER_API_KEY>)' } });
    expect((await get(url, { authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await get(url, { authorization: API_KEY })).status).toBe(401); // no scheme
    expect((await get(`${url}?key=${API_KEY}`)).status).toBe(401); // never from the query string
    const right = await get(url, { authorization: `Bearer ${API_KEY}` });
    expect(right.status).toBe(200);
    expect(sampleValue(parsePrometheusText(right.text), 'tether_connections', { transport: 'websocket' })).toBe(1);
    expect((await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}` } })).status).toBe(405);

    expect(server.metricsPort).toBeGreaterThan(0);
    const admin = `http://127.0.0.1:${server.metricsPort}`;
    const open = await get(`${admin}/metrics`);
    expect(open.status).toBe(200);
    const families = parsePrometheusText(open.text);
    expect(sampleValue(families, 'tether_http_requests_total', { route: '/metrics', status: '401' })).toBe(4);
    expect((await get(`${admin}/api/health`)).status).toBe(404);

    // The client was served all along.
    client.send({ type: 'rpc', id: 1, method: 'hello', args: ['still here'] });
    expect(await client.answerTo(1)).toMatchObject({ type: 'result', value: 'Hello, still here!' });
  });

  it('secure mode without an API key: refused, saying how to enable it', async () => {
    const server = await start({ tokenSecret: SECRET });
    const answer = await get(`http://127.0.0.1:${server.port}/metrics`);
    expect(answer.status).toBe(401);
    const { error } = JSON.parse(answer.text) as { error: { code: string; message: string } };
    expect(error.code).toBe('unauthorized');
    expect(error.message).toMatch(/TETHER_API_KEY/);
    expect(error.message).toMatch(/TETHER_METRICS_PORT/);
  });

  it('development mode without an API key: open (the server listens on 127.0.0.1 by default)', async () => {
    const server = await start({});
    const answer = await get(`http://127.0.0.1:${server.port}/metrics`);
    expect(answer.status).toBe(200);
    expect(parsePrometheusText(answer.text).get('tether_frames_received_total')?.type).toBe('counter');
  });

  it('the admin listener closes with the server', async () => {
    const server = await start({ metricsPort: 0 });
    const admin = `http://127.0.0.1:${server.metricsPort}/metrics`;
    expect((await get(admin)).status).toBe(200);
    await server.close();
    servers.splice(servers.indexOf(server), 1);
    await expect(fetch(admin)).rejects.toThrow();
  });

  it('the parser refuses what is not the text format', () => {
    expect(() => parsePrometheusText('a_total 1\n')).not.toThrow();
    expect(() => parsePrometheusText('a_total{x="1"} one\n')).toThrow(/not a float/);
    expect(() => parsePrometheusText('a_total{x=1} 1\n')).toThrow(/not quoted/);
    expect(() => parsePrometheusText('a_total{x="\\q"} 1\n')).toThrow(/bad escape/);
    expect(() => parsePrometheusText('a_total 1\na_total 2\n')).toThrow(/twice/);
    expect(() => parsePrometheusText('a 1\nb 1\na{x="y"} 1\n')).toThrow(/not together/);
    expect(() => parsePrometheusText('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n')).toThrow(/cumulative/);
    expect(() => parsePrometheusText('# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n')).toThrow(/_count/);
    expect(() => parsePrometheusText('a 1')).toThrow(/newline/);
  });
});
