/**
 * The events DB contract, as a suite every store runs unchanged (SQLite, PostgreSQL): exactly-once
 * writes, refusals that still advance the sequence, out-of-order and `{seq}` reads, per-channel
 * offsets, epochs, retention, document versions, tombstones and the size bound — and the same
 * with two store instances on one database, as two server processes have.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ANSWERS_KEPT, TOMBSTONE_VERSIONS_KEPT, type EventStore, type WriteRequest } from './event-store.js';
import { WriteQueue } from '../pubsub/write-queue.js';
import { createLocalBroker } from '../pubsub/broker.js';

export interface HarnessOptions {
  /** Events kept per channel. @default 1000 */
  maxEvents?: number;
  /** @default unbounded */
  maxDocBytes?: number;
}

export interface StoreHarness {
  /** A store on a new, empty database. */
  open(options: Required<Pick<HarnessOptions, 'maxEvents'>> & HarnessOptions): Promise<EventStore>;
  /** One more store on the database `store` was opened on: another process, or the same one after a restart. */
  attach(store: EventStore, options: Required<Pick<HarnessOptions, 'maxEvents'>> & HarnessOptions): Promise<EventStore>;
}

const pub = (seq: number, data = `"w${seq}"`, clientId = 'client-aaaa', user: string | null = 'u1'): WriteRequest => ({
  kind: 'publish', channel: 'c', data, clientId, seq, user,
});

export function describeEventStore(name: string, harness: StoreHarness): void {
  let stores: EventStore[] = [];
  afterEach(async () => {
    await Promise.all(stores.map((s) => s.close()));
    stores = [];
  });
  async function open(options: HarnessOptions = {}): Promise<EventStore> {
    const store = await harness.open({ maxEvents: 1000, ...options });
    stores.push(store);
    return store;
  }
  async function attach(to: EventStore, options: HarnessOptions = {}): Promise<EventStore> {
    const store = await harness.attach(to, { maxEvents: 1000, ...options });
    stores.push(store);
    return store;
  }
  async function close(store: EventStore): Promise<void> {
    stores = stores.filter((s) => s !== store);
    await store.close();
  }

  describe(name, () => {
  describe('exactly-once writes', () => {
    it('applies a write once; a replay is acknowledged again with the same offset and no second event', async () => {
      const store = await open();
      const [first] = await store.write([pub(1)]);
      expect(first).toMatchObject({ status: 'stored', event: { offset: 1 } });
      expect(await store.write([pub(1), pub(1)])).toEqual([
        { status: 'duplicate', offset: 1 },
        { status: 'duplicate', offset: 1 },
      ]);
      expect((await store.history('c', { offset: 0 }, 100)).events).toHaveLength(1);
    });

    it('refuses a write that skips ahead, and keeps order', async () => {
      const store = await open();
      await store.write([pub(1)]);
      expect(await store.write([pub(3)])).toEqual([{ status: 'out_of_order', expected: 2 }]);
      expect(await store.write([pub(2), pub(3)])).toMatchObject([{ status: 'stored' }, { status: 'stored' }]);
      expect((await store.history('c', { offset: 0 }, 100)).events.map((e) => e.data)).toEqual(['"w1"', '"w2"', '"w3"']);
    });

    it('an out-of-order resend of an older write is a duplicate, not a new event', async () => {
      const store = await open();
      await store.write([pub(1), pub(2), pub(3)]);
      expect(await store.write([pub(2), pub(1), pub(4)])).toMatchObject([
        { status: 'duplicate', offset: 2 },
        { status: 'duplicate', offset: 1 },
        { status: 'stored', event: { offset: 4 } },
      ]);
    });

    it('concurrent resends of the same write through the group-commit queue store it once', async () => {
      const store = await open();
      const queue = new WriteQueue(store, createLocalBroker());
      const outcomes = await Promise.all([queue.submit(pub(1)), queue.submit(pub(1)), queue.submit(pub(2)), queue.submit(pub(1))]);
      expect(outcomes.map((o) => o.status)).toEqual(['stored', 'duplicate', 'stored', 'duplicate']);
      expect((await store.history('c', { offset: 0 }, 100)).events).toHaveLength(2);
    });

    it('a refused (forbidden) write advances the sequence, stores nothing, and a resend gets the same refusal', async () => {
      const store = await open();
      const skip: WriteRequest = { kind: 'skip', clientId: 'client-aaaa', seq: 1, user: 'u1', code: 'forbidden', message: 'you may not publish to c' };
      expect(await store.write([skip, pub(2)])).toMatchObject([
        { status: 'refused', code: 'forbidden', message: 'you may not publish to c' },
        { status: 'stored', event: { offset: 1 } },
      ]);
      // The answer was lost; the client resends the original write: same refusal, not an ack.
      expect(await store.write([pub(1)])).toEqual([{ status: 'refused', code: 'forbidden', message: 'you may not publish to c' }]);
      expect((await store.history('c', { offset: 0 }, 10)).events.map((e) => e.data)).toEqual(['"w2"']);
    });

    it("refuses a client id that belongs to another user", async () => {
      const store = await open();
      await store.write([pub(1)]);
      expect(await store.write([pub(2, '"x"', 'client-aaaa', 'mallory')])).toEqual([{ status: 'forbidden' }]);
      expect(await store.handshake('client-aaaa', 'mallory', 1)).toBe('forbidden');
      expect(await store.handshake('client-aaaa', 'u1', 1)).toEqual({ lastSeq: 1 });
      expect(await store.handshake('client-new', 'u1', 1)).toEqual({ lastSeq: 0 });
    });

    it('a new client starts at 1: a later write first is out of order, and the first one is stored, not taken for a duplicate', async () => {
      const store = await open();
      expect(await store.write([pub(2)])).toEqual([{ status: 'out_of_order', expected: 1 }]);
      expect(await store.write([pub(1), pub(2)])).toMatchObject([{ status: 'stored' }, { status: 'stored' }]);
      expect((await store.history('c', { offset: 0 }, 10)).events.map((e) => e.data)).toEqual(['"w1"', '"w2"']);
    });

    it('a client holding only later writes (restored backup, new DB) moves its sequence up explicitly in the handshake', async () => {
      const store = await open();
      await store.write([pub(1), pub(2)]);
      expect(await store.handshake('client-aaaa', 'u1', 57)).toEqual({ lastSeq: 56, movedFrom: 2 });
      expect(await store.write([pub(57)])).toMatchObject([{ status: 'stored' }]);
      // A handshake never moves a sequence back.
      expect(await store.handshake('client-aaaa', 'u1', 3)).toEqual({ lastSeq: 57 });
      expect(await store.handshake('client-bbbb', 'u2', 10)).toEqual({ lastSeq: 9, movedFrom: 0 });
    });

    it('an Idempotency-Key makes API retries safe, and is bound to its request', async () => {
      const store = await open();
      const api = (channel: string, data: string): WriteRequest => ({ kind: 'publish', channel, data, clientId: null, seq: null, user: null, idempotencyKey: 'k1' });
      expect(await store.write([api('c', '1'), api('c', '1')])).toMatchObject([{ status: 'stored', event: { offset: 1 } }, { status: 'duplicate', offset: 1 }]);
      expect(await store.write([api('c', '2')])).toEqual([{ status: 'idempotency_mismatch' }]);
      expect(await store.write([api('other', '1')])).toEqual([{ status: 'idempotency_mismatch' }]);
      expect((await store.history('c', { offset: 0 }, 10)).events).toHaveLength(1);
      const transact: WriteRequest = { kind: 'transact', doc: 'd', reads: {}, writes: { n: '1' }, clientId: null, seq: null, user: null, idempotencyKey: 'k2' };
      expect(await store.write([transact, transact])).toMatchObject([{ status: 'committed', change: { version: 1 } }, { status: 'duplicate', offset: 1 }]);
      expect(await store.write([{ ...transact, writes: { n: '2' } }])).toEqual([{ status: 'idempotency_mismatch' }]);
      expect((await store.document('d', undefined)).version).toBe(1);
    });

    it('an applied write survives closing and opening the store again (durable before acknowledged)', async () => {
      const first = await open();
      await first.write([pub(1), pub(2)]);
      await close(first);
      const again = await attach(first);
      expect(await again.write([pub(2)])).toEqual([{ status: 'duplicate', offset: 2 }]);
      expect((await again.history('c', { offset: 0 }, 10)).events).toHaveLength(2);
    });
  });

  describe('storage stays bounded', () => {
    it('answers kept for resends are pruned once far behind the client; recent ones still answer the same', async () => {
      const store = await open();
      const refused: WriteRequest = { kind: 'skip', clientId: 'client-aaaa', seq: 1, user: 'u1', code: 'forbidden', message: 'no' };
      const tx = (seq: number): WriteRequest => ({ kind: 'transact', doc: 'd', reads: {}, writes: { k: String(seq) }, clientId: 'client-aaaa', seq, user: 'u1' });
      await store.write([refused, tx(2)]);
      // Move the client far ahead (its sequence, as a restored client's handshake does).
      await store.handshake('client-aaaa', 'u1', ANSWERS_KEPT + 3);
      await store.write([tx(ANSWERS_KEPT + 3)]);
      await store.prune();
      // Pruned: a resend this old cannot happen (the client holds at most its window unanswered).
      expect(await store.write([{ ...refused }])).toEqual([{ status: 'duplicate', offset: null }]);
      expect(await store.write([tx(2)])).toMatchObject([{ status: 'conflict' }]);
      // Kept: the recent one answers as the first time.
      expect(await store.write([tx(ANSWERS_KEPT + 3)])).toEqual([{ status: 'duplicate', offset: 2 }]);
    });

    it('answers from the lowest sequence a client still holds are kept, however old', async () => {
      const store = await open();
      const tx = (seq: number): WriteRequest => ({ kind: 'transact', doc: 'd', reads: {}, writes: { k: String(seq) }, clientId: 'client-aaaa', seq, user: 'u1' });
      await store.write([tx(1)]);
      await store.handshake('client-aaaa', 'u1', ANSWERS_KEPT + 3);
      await store.write([tx(ANSWERS_KEPT + 3)]);
      // A worker failed to clear write 1 from its outbox: its next handshake says it holds it still.
      await store.handshake('client-aaaa', 'u1', 1);
      await store.prune();
      expect(await store.write([tx(1)])).toEqual([{ status: 'duplicate', offset: 1 }]);
    });

    it('tombstones far behind a document are pruned; a client older than them gets the full state, never a missed deletion', async () => {
      const store = await open();
      const write = (writes: Record<string, string | null>): WriteRequest => ({ kind: 'transact', doc: 'd', reads: {}, writes, clientId: null, seq: null, user: null });
      await store.write([write({ gone: '1', kept: '1' }), write({ gone: null })]);
      for (let i = 0; i < TOMBSTONE_VERSIONS_KEPT * 2; i++) await store.write([write({ kept: String(i) })]);
      const { epoch } = await store.document('d', undefined);
      expect(await store.document('d', 1, epoch)).toMatchObject({ full: false, keys: { gone: { deleted: true } } });
      await store.prune();
      const old = await store.document('d', 1, epoch);
      expect(old.full).toBe(true); // the deletion of `gone` is no longer stored as a tombstone
      expect(old.keys).not.toHaveProperty('gone');
      const recent = await store.document('d', TOMBSTONE_VERSIONS_KEPT * 2, epoch);
      expect(recent.full).toBe(false);
    });
  });

  describe('channel history', () => {
    it('offsets are per channel, consecutive; history resumes after an offset', async () => {
      const store = await open();
      const api = (channel: string, data: string): WriteRequest => ({ kind: 'publish', channel, data, clientId: null, seq: null, user: null });
      await store.write([api('a', '1'), api('b', '1'), api('a', '2'), api('a', '3')]);
      const history = await store.history('a', { offset: 1 }, 10);
      expect(history).toMatchObject({ head: 3, reset: false, from: 1 });
      expect(history.events.map((e) => [e.offset, e.data])).toEqual([[2, '2'], [3, '3']]);
      expect((await store.history('b', undefined, 10)).head).toBe(1);
    });

    it('signals a reset when retention dropped what the subscriber missed, or the epoch changed', async () => {
      const store = await open({ maxEvents: 3 });
      const api = (data: string): WriteRequest => ({ kind: 'publish', channel: 'a', data, clientId: null, seq: null, user: null });
      await store.write([1, 2, 3, 4, 5, 6].map((n) => api(String(n))));
      const behind = await store.history('a', { offset: 1 }, 10);
      expect(behind).toMatchObject({ reset: true, from: 3, head: 6 });
      expect(behind.events.map((e) => e.offset)).toEqual([4, 5, 6]);
      expect(await store.history('a', { offset: 3, epoch: behind.epoch }, 10)).toMatchObject({ reset: false });
      expect(await store.history('a', { offset: 5, epoch: 'another' }, 10)).toMatchObject({ reset: true });
      expect(await store.history('a', { offset: 99, epoch: behind.epoch }, 10)).toMatchObject({ reset: true });
    });

    it('prunes by age', async () => {
      const store = await open();
      await store.write([{ kind: 'publish', channel: 'a', data: '1', clientId: null, seq: null, user: null }]);
      expect(await store.prune(Date.now() + 2 * 3600_000)).toBe(1);
      expect(await store.history('a', { offset: 0 }, 10)).toMatchObject({ reset: true, events: [] });
    });
  });

  describe('shared documents (DSTM)', () => {
    const tx = (seq: number, reads: Record<string, number | { seq: number }>, writes: Record<string, string | null>, clientId = 'client-aaaa'): WriteRequest => ({
      kind: 'transact', doc: 'd', reads, writes, clientId, seq, user: 'u1',
    });

    it('commits when every read is current, bumping the versions of the keys written', async () => {
      const store = await open();
      expect(await store.write([tx(1, { hello: 0 }, { hello: '"world"' })])).toEqual([
        { status: 'committed', change: { doc: 'd', version: 1, keys: { hello: { version: 1, value: '"world"' } } } },
      ]);
      expect(await store.document('d', undefined)).toEqual({ doc: 'd', version: 1, full: true, epoch: expect.any(String), keys: { hello: { version: 1, value: '"world"' } } });
    });

    it('the seed conflict: a transaction that read a stale version is rejected with the current values', async () => {
      const store = await open();
      await store.write([tx(1, {}, { hello: '"hi"' }, 'client-bbbb')]);
      await store.write([tx(2, { hello: 1 }, { hello: '"world"' }, 'client-bbbb')]); // B
      const [a] = await store.write([tx(1, { hello: 1 }, { hello: '"code camp"' })]); // A read version 1
      expect(a).toEqual({ status: 'conflict', doc: 'd', version: 2, current: { hello: { version: 2, value: '"world"' } } });
      // The conflict advanced A's sequence: its retry is a new write.
      expect(await store.write([tx(2, { hello: 2 }, { hello: '"code camp"' })])).toMatchObject([{ status: 'committed' }]);
    });

    it('a resent transaction reports its first outcome again, without a second effect', async () => {
      const store = await open();
      await store.write([tx(1, {}, { n: '1' })]);
      expect(await store.write([tx(1, {}, { n: '1' })])).toEqual([{ status: 'duplicate', offset: 1 }]);
      await store.write([tx(1, {}, { n: '5' }, 'client-bbbb')]);
      expect(await store.write([tx(2, { n: 1 }, { n: '2' })])).toMatchObject([{ status: 'conflict' }]);
      expect(await store.write([tx(2, { n: 1 }, { n: '2' })])).toMatchObject([{ status: 'conflict', current: { n: { version: 2, value: '5' } } }]);
      expect((await store.document('d', undefined)).version).toBe(2);
    });

    it('a read of a key written by an earlier pending transaction of the same client checks that write', async () => {
      const store = await open();
      await store.write([tx(1, {}, { n: '1' }), tx(2, { n: { seq: 1 } }, { n: '2' })]);
      expect((await store.document('d', undefined)).keys.n).toEqual({ version: 2, value: '2' });
      // If the earlier one was rejected, the dependent one is rejected too.
      await store.write([tx(1, {}, { n: '9' }, 'client-bbbb')]);
      expect(await store.write([tx(3, { n: 2 }, { n: '3' }), tx(4, { n: { seq: 3 } }, { n: '4' })])).toMatchObject([
        { status: 'conflict' },
        { status: 'conflict' },
      ]);
    });

    it('deletes leave tombstones; a client holding an older version learns only what changed', async () => {
      const store = await open();
      await store.write([tx(1, {}, { a: '1', b: '2' })]);
      await store.write([tx(2, {}, { a: null })]);
      const { epoch } = await store.document('d', undefined);
      expect(await store.document('d', 1, epoch)).toEqual({ doc: 'd', version: 2, full: false, epoch, keys: { a: { version: 2, deleted: true } } });
      expect(await store.document('d', undefined)).toEqual({ doc: 'd', version: 2, full: true, epoch, keys: { b: { version: 1, value: '2' } } });
      // A version of another documents epoch (before a restore) is not trusted: everything again.
      expect((await store.document('d', 1, 'another-epoch')).full).toBe(true);
      expect((await store.document('d', 7)).full).toBe(true); // ahead of the server: everything again
    });

    it('a transaction that read a deleted key as absent commits on its first run (the demo edits a removed card)', async () => {
      const store = await open();
      await store.write([tx(1, {}, { card: '"x"' }), tx(2, { card: 1 }, { card: null })]);
      // Another client never saw the card: it reads "absent" (version 0) and creates it again.
      expect(await store.write([tx(1, { card: 0 }, { card: '"new"' }, 'client-bbbb')])).toMatchObject([{ status: 'committed', change: { version: 3 } }]);
      // Absent is not "any version": a key that exists now still conflicts with a read of absent.
      expect(await store.write([tx(3, { card: 0 }, { card: '"mine"' })])).toMatchObject([{ status: 'conflict', current: { card: { version: 3, value: '"new"' } } }]);
    });
  });

  describe('document size bound', () => {
    const write = (writes: Record<string, string | null>): WriteRequest => ({ kind: 'transact', doc: 'd', reads: {}, writes, clientId: null, seq: null, user: null });
    const bounded = (maxDocBytes: number) => open({ maxDocBytes });

    it('deleting absent keys stores no tombstones: a flood of such deletes cannot grow what a returning client is sent', async () => {
      const store = await bounded(2000);
      const absent = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`${'k'.repeat(150)}${i}`, null]));
      for (let i = 0; i < 20; i++) expect(await store.write([write(absent)])).toMatchObject([{ status: 'committed' }]);
      const { epoch } = await store.document('d', undefined);
      expect((await store.document('d', 0, epoch)).keys).toEqual({});
    });

    it('tombstones count by their key: creating and deleting keys over and over is bounded, and pruning gives the bytes back', async () => {
      const store = await bounded(2000);
      const key = (i: number) => `${'k'.repeat(190)}${i}`;
      let refused = 0;
      for (let i = 0; i < 30; i++) {
        const [created] = await store.write([write({ [key(i)]: '1' })]);
        if (created!.status === 'refused') {
          refused++;
          expect(created).toMatchObject({ code: 'limit_exceeded' });
          continue;
        }
        expect(await store.write([write({ [key(i)]: null })])).toMatchObject([{ status: 'committed' }]);
      }
      expect(refused).toBeGreaterThan(0); // ~10 tombstones of ~192 bytes fill 2,000 bytes
      const { epoch } = await store.document('d', undefined);
      const delta = await store.document('d', 0, epoch);
      expect(JSON.stringify(delta.keys).length).toBeLessThan(2000 + 30 * 40); // keys plus their version markup
      // Far behind the version, tombstones are pruned and their bytes are free again.
      for (let i = 0; i < TOMBSTONE_VERSIONS_KEPT * 2 + 10; i++) await store.write([write({ small: String(i % 10) })]);
      await store.prune();
      expect(await store.write([write({ [key(99)]: '1' })])).toMatchObject([{ status: 'committed' }]);
    });
  });

    it('positions: the head of each channel and the version of each document, 0 when unknown', async () => {
      const store = await open();
      const api = (channel: string): WriteRequest => ({ kind: 'publish', channel, data: '1', clientId: null, seq: null, user: null });
      await store.write([api('a'), api('a'), api('b'), { kind: 'transact', doc: 'd', reads: {}, writes: { k: '1' }, clientId: null, seq: null, user: null }]);
      const positions = await store.positions(['a', 'b', 'none'], ['d', 'none']);
      expect([...positions.channels]).toEqual([['a', 2], ['b', 1], ['none', 0]]);
      expect([...positions.docs]).toEqual([['d', 1], ['none', 0]]);
      expect(await store.positions([], [])).toEqual({ channels: new Map(), docs: new Map() });
    });

    describe('two store instances on one database (two server processes)', () => {
      it('publishes from both at once to one channel get consecutive offsets, each event once', async () => {
        const a = await open();
        const b = await attach(a);
        const batch = (store: EventStore, clientId: string, from: number) =>
          store.write(Array.from({ length: 10 }, (_, i) => pub(from + i, `"${clientId}-${from + i}"`, clientId)));
        const rounds = 15;
        const outcomes = await Promise.all([a, b].map(async (store, n) => {
          const results = [];
          for (let r = 0; r < rounds; r++) results.push(...(await batch(store, `client-${n}`, r * 10 + 1)));
          return results;
        }));
        expect(outcomes.flat().every((o) => o.status === 'stored')).toBe(true);
        const history = await a.history('c', { offset: 0 }, 1000);
        expect(history.events.map((e) => e.offset)).toEqual(Array.from({ length: 2 * rounds * 10 }, (_, i) => i + 1));
        expect(new Set(history.events.map((e) => e.data)).size).toBe(2 * rounds * 10);
        // Per client, in its sequence order.
        for (const n of [0, 1]) {
          const mine = history.events.map((e) => JSON.parse(e.data) as string).filter((d) => d.startsWith(`client-${n}-`));
          expect(mine).toEqual(Array.from({ length: rounds * 10 }, (_, i) => `client-${n}-${i + 1}`));
        }
        expect((await b.history('c', undefined, 1)).head).toBe(2 * rounds * 10);
      });

      it('one write sent through both at once (a client that moved while its old connection still wrote) is stored once', async () => {
        const a = await open();
        const b = await attach(a);
        for (let seq = 1; seq <= 20; seq++) {
          const [x, y] = await Promise.all([a.write([pub(seq)]), b.write([pub(seq)])]);
          expect([x![0]!.status, y![0]!.status].sort()).toEqual(['duplicate', 'stored']);
        }
        expect((await a.history('c', { offset: 0 }, 100)).events.map((e) => e.data)).toEqual(Array.from({ length: 20 }, (_, i) => `"w${i + 1}"`));
      });

      it('a channel first written through both at once has one epoch', async () => {
        const a = await open();
        const b = await attach(a);
        const api = (data: string): WriteRequest => ({ kind: 'publish', channel: 'fresh', data, clientId: null, seq: null, user: null });
        const [[x], [y]] = await Promise.all([a.write([api('1')]), b.write([api('2')])]);
        expect(x!.status === 'stored' && y!.status === 'stored' && x!.event.epoch === y!.event.epoch).toBe(true);
        expect((await b.history('fresh', { offset: 0 }, 10)).events.map((e) => e.offset)).toEqual([1, 2]);
      });

      it('transactions from both at once on one key are serialised: every commit counted, versions consecutive', async () => {
        const a = await open();
        const b = await attach(a);
        const increments = 25;
        const run = async (store: EventStore, clientId: string) => {
          let seq = 0;
          let commits = 0;
          let conflicts = 0;
          const versions: number[] = [];
          while (commits < increments) {
            const doc = await store.document('counter', undefined);
            const key = doc.keys.n;
            const read = key && 'value' in key ? key.version : 0;
            const value = key && 'value' in key ? Number(key.value) : 0;
            const [outcome] = await store.write([{ kind: 'transact', doc: 'counter', reads: { n: read }, writes: { n: String(value + 1) }, clientId, seq: ++seq, user: 'u1' }]);
            if (outcome!.status === 'committed') {
              commits++;
              versions.push(outcome!.change.version);
            } else {
              expect(outcome!.status).toBe('conflict');
              conflicts++;
            }
          }
          return { versions, conflicts };
        };
        const [x, y] = await Promise.all([run(a, 'client-x'), run(b, 'client-y')]);
        const all = [...x.versions, ...y.versions].sort((p, q) => p - q);
        expect(all).toEqual(Array.from({ length: 2 * increments }, (_, i) => i + 1));
        const final = await b.document('counter', undefined);
        expect(final.version).toBe(2 * increments);
        expect(final.keys.n).toEqual({ version: 2 * increments, value: String(2 * increments) });
      });
    });
  });
}
