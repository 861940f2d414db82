/**
 * Two nodes (two stores on one events DB, two brokers on one Redis, each behind a TCP proxy the
 * test cuts) deliver every channel in offset order with no gap and no repeat, and every document
 * change in version order — with Redis reordering across publishers, losing notifications,
 * refusing connections or swallowing bytes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { TcpProxy } from '../../e2e/fixtures/tcp-proxy.js';
import { openSqliteStore } from '../storage/sqlite.js';
import type { DocChange, EventStore, StoredEvent, WriteRequest } from '../storage/event-store.js';
import { WriteQueue } from './write-queue.js';
import { Redis } from 'ioredis';
import { createOrderedBroker } from './ordered-broker.js';
import type { Broker } from './broker.js';

const REDIS_PORT = 6379;
const silent = pino({ level: 'silent' });

interface Node {
  store: EventStore;
  broker: Broker;
  writes: WriteQueue;
  redis: TcpProxy;
}

let nodes: Node[] = [];
afterEach(async () => {
  for (const node of nodes) {
    await node.broker.close();
    await node.store.close();
    await node.redis.close();
  }
  nodes = [];
});

let prefix = '';
async function cluster(count: number, { maxEvents = 100_000, wrap = (s: EventStore) => s }: { maxEvents?: number; wrap?: (store: EventStore, node: number) => EventStore } = {}): Promise<Node[]> {
  const path = join(mkdtempSync(join(tmpdir(), 'tether-redis-')), 'events.db');
  prefix = `tether-test-${randomBytes(4).toString('hex')}:`;
  const made: Node[] = [];
  for (let i = 0; i < count; i++) {
    const store = wrap(openSqliteStore({ path, retention: { maxEvents, maxAgeMs: 3600_000 } }), i);
    const redis = await TcpProxy.start(REDIS_PORT);
    const broker = createOrderedBroker({ store, log: silent, redis: { url: `redis://127.0.0.1:${redis.port}`, prefix }, pollMs: 1000, degradedPollMs: 100, pingTimeoutMs: 300 });
    const node = { store, broker, writes: new WriteQueue(store, broker), redis };
    made.push(node);
    nodes.push(node);
  }
  await until(() => made.every((n) => n.broker.health().ok), 'Redis connections ready');
  return made;
}

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const api = (channel: string, data: string): WriteRequest => ({ kind: 'publish', channel, data, clientId: null, seq: null, user: null });

function listen(node: Node, channel: string): { offsets: number[]; data: string[]; resets: number[]; ready: Promise<void> } {
  const got = { offsets: [] as number[], data: [] as string[], resets: [] as number[], ready: Promise.resolve() };
  got.ready = node.broker.subscribe(channel, (event, frame) => {
    if ('reset' in event) {
      expect(JSON.parse(frame)).toMatchObject({ type: 'reset', channel, offset: event.offset });
      got.resets.push(event.offset);
      return;
    }
    expect(JSON.parse(frame)).toMatchObject({ type: 'event', channel, offset: event.offset });
    got.offsets.push(event.offset);
    got.data.push((event as StoredEvent).data);
  }).ready;
  return got;
}

const consecutive = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

describe('Redis fan-out across nodes', () => {
  it('publishes from two nodes, interleaved, reach subscribers on both in offset order, each once', async () => {
    const [a, b] = await cluster(2);
    const onA = listen(a!, 'c');
    const onB = listen(b!, 'c');
    await Promise.all([onA.ready, onB.ready]);
    const total = 300;
    await Promise.all([a!, b!].map(async (node, n) => {
      for (let i = 0; i < total / 2; i += 5) {
        await Promise.all(Array.from({ length: 5 }, (_, j) => node.writes.submit(api('c', `"${n}-${i + j}"`))));
      }
    }));
    await until(() => onA.offsets.length >= total && onB.offsets.length >= total, 'every event on both nodes');
    expect(onA.offsets).toEqual(consecutive(total));
    expect(onB.offsets).toEqual(consecutive(total));
    expect(onA.data).toEqual(onB.data);
  });

  it('an event whose notification never went out (its publisher killed after the commit) is found from the store', async () => {
    const [a, b] = await cluster(2);
    const onA = listen(a!, 'c');
    await onA.ready;
    // Stored through node B's store directly: committed, never announced.
    await b!.store.write([api('c', '"silent"')]);
    await until(() => onA.offsets.length === 1, 'the unannounced event', 5_000);
    // And one announced after it arrives in order behind it.
    await b!.writes.submit(api('c', '"loud"'));
    await until(() => onA.offsets.length === 2, 'the next event');
    expect(onA.data).toEqual(['"silent"', '"loud"']);
  });

  for (const cut of ['refuse', 'blackhole'] as const) {
    it(`Redis ${cut === 'refuse' ? 'refusing connections' : 'swallowing every byte'} mid-stream: delivery goes on from the store, nothing lost or repeated`, async () => {
      const [a, b] = await cluster(2);
      const onA = listen(a!, 'c');
      await onA.ready;
      let sent = 0;
      const publishSome = async (n: number) => {
        for (let i = 0; i < n; i++) await b!.writes.submit(api('c', `"${++sent}"`));
      };
      await publishSome(50);
      a!.redis[cut]();
      b!.redis[cut]();
      await publishSome(50);
      // Noticed (a blackhole only by the ping watchdog), and degraded, not stopped: the store is polled while Redis is away.
      await until(() => !a!.broker.health().ok, 'the outage noticed', 5_000);
      expect(a!.broker.health()).toMatchObject({ kind: 'redis', ok: false });
      await until(() => onA.offsets.length === 100, 'delivery during the outage', 10_000);
      await a!.redis.restore();
      await b!.redis.restore();
      await until(() => a!.broker.health().ok && b!.broker.health().ok, 'Redis back', 15_000);
      await publishSome(50);
      await until(() => onA.offsets.length >= 150, 'delivery after the outage');
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(onA.offsets).toEqual(consecutive(150));
      expect(onA.data).toEqual(consecutive(150).map((n) => `"${n}"`));
    }, 40_000);
  }

  it('document transactions committed on both nodes reach each node in version order, ending at the same state', async () => {
    const [a, b] = await cluster(2);
    const seen = new Map<Node, DocChange[]>([[a!, []], [b!, []]]);
    await Promise.all([a!, b!].map((node) => node.broker.subscribeDoc('counter', (change) => void seen.get(node)!.push(change)).ready));
    const perNode = 30;
    let commits = 0;
    await Promise.all([a!, b!].map(async (node) => {
      let mine = 0;
      while (mine < perNode) {
        const state = await node.store.document('counter', undefined);
        const key = state.keys.n;
        const value = key && 'value' in key ? Number(key.value) : 0;
        const outcome = await node.writes.submit({ kind: 'transact', doc: 'counter', reads: { n: key?.version ?? 0 }, writes: { n: String(value + 1) }, clientId: null, seq: null, user: null });
        if (outcome.status === 'committed') {
          mine++;
          commits++;
        }
      }
    }));
    expect(commits).toBe(2 * perNode);
    for (const [, changes] of seen) {
      await until(() => changes.at(-1)?.version === 2 * perNode, 'the last version');
      const versions = changes.map((c) => c.version);
      expect(versions).toEqual([...versions].sort((x, y) => x - y));
      expect(new Set(versions).size).toBe(versions.length);
      expect(changes.at(-1)!.keys.n).toEqual({ version: 2 * perNode, value: String(2 * perNode) });
    }
  });

  it('a node that could not read while retention dropped what it missed tells its subscribers (reset), never a silent gap', async () => {
    let down = false;
    const [a, b] = await cluster(2, {
      maxEvents: 20,
      // Node A's events DB connection fails for a while (its reads; node B writes on).
      wrap: (store, node) => node === 0 ? { ...store, kind: store.kind, history: (...args) => (down ? Promise.reject(new Error('A cannot reach the DB')) : store.history(...args)), positions: (...args) => (down ? Promise.reject(new Error('A cannot reach the DB')) : store.positions(...args)) } : store,
    });
    const onA = listen(a!, 'c');
    await onA.ready;
    a!.redis.refuse(); // and no notifications either
    down = true;
    for (let i = 1; i <= 60; i++) await b!.writes.submit(api('c', `"${i}"`));
    down = false;
    await until(() => onA.offsets.at(-1) === 60, 'delivery after the outage', 10_000);
    expect(onA.resets).toEqual([40]);
    expect(onA.offsets).toEqual(Array.from({ length: 20 }, (_, i) => 41 + i));
  });

  it('a notification of another events DB on the same Redis prefix is never delivered; the real event is, once', async () => {
    const [a, b] = await cluster(2);
    const onA = listen(a!, 'c');
    await onA.ready;
    const intruder = new Redis(`redis://127.0.0.1:${REDIS_PORT}`);
    try {
      await intruder.publish(`${prefix}ch:c`, JSON.stringify({ channel: 'c', offset: 1, epoch: 'another-db', data: '"not yours"', publisher: null }));
      await new Promise((resolve) => setTimeout(resolve, 100));
      await b!.writes.submit(api('c', '"mine"'));
      await until(() => onA.offsets.length === 1, 'the real event');
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(onA.data).toEqual(['"mine"']);
    } finally {
      intruder.disconnect();
    }
  });
});

describe('ordered broker without Redis (one process on PostgreSQL)', () => {
  it("a commit whose acknowledgement was lost (stored, never published) still reaches the process's subscribers", async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'tether-redis-')), 'events.db');
    const store = openSqliteStore({ path, retention: { maxEvents: 1000, maxAgeMs: 3600_000 } });
    const broker = createOrderedBroker({ store, log: silent, pollMs: 100 });
    const redis = await TcpProxy.start(REDIS_PORT); // unused: keeps the afterEach shape
    nodes.push({ store, broker, writes: new WriteQueue(store, broker), redis });
    const got: number[] = [];
    await broker.subscribe('c', (event) => void got.push(event.offset)).ready;
    expect(broker.health()).toEqual({ kind: 'local', ok: true });
    await store.write([api('c', '"lost ack"')]); // committed; the write queue saw an error and published nothing
    await nodes[0]!.writes.submit(api('c', '"next"'));
    await until(() => got.length === 2, 'both events');
    expect(got).toEqual([1, 2]);
  });

  it('a head read that fails while no subscriber awaits it is not an unhandled rejection', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'tether-redis-')), 'events.db');
    const real = openSqliteStore({ path, retention: { maxEvents: 1000, maxAgeMs: 3600_000 } });
    const store: EventStore = { ...real, kind: real.kind, history: () => Promise.reject(new Error('DB down')) };
    const broker = createOrderedBroker({ store, log: silent, pollMs: 100 });
    const redis = await TcpProxy.start(REDIS_PORT);
    nodes.push({ store: real, broker, writes: new WriteQueue(store, broker), redis });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      broker.subscribe('c', () => undefined); // its catch-up is queued: nobody awaits ready yet
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
