/**
 * The worker engine under the unusual, against a real server: every case here was broken once
 * (issue 9); each test fails on the code before its fix.
 */
import { copyFileSync, rmSync } from 'node:fs';
import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import type { WriteRequest } from '../server/storage/event-store.js';
import { backupSqlite, restoreSqlite } from '../server/storage/sqlite-backup.js';
import type { ChannelDelivery, DocSnapshot } from './api.js';
import { Documents } from './documents.js';
import { takeLead, type OutboxEntry } from './db.js';
import { Harness, eventually } from './testing/harness.js';

const SECRET = 'engine-test-secret-of-at-least-32-characters';

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

function token(sub: string): Promise<string> {
  return new SignJWT({ channels: ['*'] }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));
}

async function storedData(h: Harness, channel: string): Promise<unknown[]> {
  return (await h.server.store.history(channel, { offset: 0 }, 10_000)).events.map((e) => JSON.parse(e.data) as unknown);
}

describe('heartbeats: idle links cost little, busy links are watched closely', () => {
  it('pings at the idle pace while nothing waits; a write on a blackholed link is noticed at the fast pace', async () => {
    harness = await Harness.start({ heartbeatMs: 200, idleHeartbeatMs: 1500 });
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    const before = engine.frames.of('ping');
    await new Promise((resolve) => setTimeout(resolve, 1400));
    // At the fast pace this would be ~7 pings.
    expect(engine.frames.of('ping') - before).toBeLessThanOrEqual(1);
    harness.proxy.blackhole();
    const wrote = engine.connection.publish(tab.tabId, 'c', 'through a dead link');
    // Busy now: 2 fast intervals of silence (plus a tick), far below the idle pace's 3 s.
    await eventually(() => engine.status(tab).connection === 'offline', 1500, 'offline at the fast pace');
    await harness.proxy.restore();
    expect(await wrote).toEqual({ ok: true, value: { offset: 1 } });
  });

  it('an idle link that goes dark is still noticed, at the idle pace', async () => {
    harness = await Harness.start({ heartbeatMs: 200, idleHeartbeatMs: 700 });
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    harness.proxy.blackhole();
    const cut = Date.now();
    await eventually(() => engine.status(tab).connection === 'offline', 5000, 'offline at the idle pace');
    // Not at the fast pace: nothing was waiting.
    expect(Date.now() - cut).toBeGreaterThan(2 * 200);
  });
});

describe('calls', () => {
  it("100 calls fired at once all answer: the worker keeps within the server's in-flight limit instead of drawing limit_exceeded", async () => {
    let running = 0;
    let most = 0;
    harness = await Harness.start({
      maxRpcInFlight: 4,
      procedures: {
        slow: async ([n]) => {
          most = Math.max(most, ++running);
          await new Promise((resolve) => setTimeout(resolve, 5));
          running--;
          return n;
        },
      },
    });
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    const answers = await Promise.all(Array.from({ length: 100 }, (_, n) => engine.connection.call('slow', [n], { timeoutMs: 20_000 })));
    expect(answers).toEqual(Array.from({ length: 100 }, (_, n) => ({ ok: true, value: n })));
    expect(most).toBe(4); // the limit was reached (the test would pass vacuously otherwise), never passed
  });

  it('a call that timed out here keeps its server slot until the server answers it: the next calls wait instead of drawing limit_exceeded', async () => {
    harness = await Harness.start({
      maxRpcInFlight: 2,
      procedures: { slow: () => new Promise((resolve) => setTimeout(() => resolve('late'), 800)), quick: () => 'quick' },
    });
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    const gaveUp = await Promise.all([1, 2].map(() => engine.connection.call('slow', [], { timeoutMs: 100 })));
    expect(gaveUp.map((o) => !o.ok && o.error.code)).toEqual(['timeout', 'timeout']);
    const next = await Promise.all([1, 2, 3].map(() => engine.connection.call('quick', [], { timeoutMs: 5000 })));
    expect(next).toEqual([1, 2, 3].map(() => ({ ok: true, value: 'quick' })));
  });
});

describe('no write blocks the writes behind it', () => {
  it('publishes through the real server and gets the offset', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    expect(await engine.connection.publish(tab.tabId, 'c', 'hey')).toEqual({ ok: true, value: { offset: 1 } });
    await eventually(() => engine.status(tab).pending === 0);
  });

  it('sizes are UTF-8 bytes: a 30,000 × "€" publish (90 KB) fails at once, the next write goes through', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    await engine.connection.publish(tab.tabId, 'c', 'first'); // online: the server's limit is known
    const big = await engine.connection.publish(tab.tabId, 'c', '€'.repeat(30_000));
    expect(big).toMatchObject({ ok: false, error: { code: 'message_too_big' } });
    expect(await engine.connection.publish(tab.tabId, 'c', 'after')).toEqual({ ok: true, value: { offset: 2 } });
    expect(await storedData(harness, 'c')).toEqual(['first', 'after']);
    expect(engine.frames.of('handshake')).toBe(1); // no close-1009 reconnect loop
  });

  it('a limit lowered while writes waited fails those writes clearly; the rest are delivered in order', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    await engine.connection.publish(tab.tabId, 'c', 'online');
    harness.proxy.refuse();
    await eventually(() => engine.status(tab).connection === 'offline');
    const results = [
      engine.connection.publish(tab.tabId, 'c', 'small-1'),
      engine.connection.publish(tab.tabId, 'c', 'x'.repeat(40_000)),
      engine.connection.publish(tab.tabId, 'c', 'small-2'),
    ];
    await eventually(() => engine.status(tab).pending === 3);
    await harness.restartServer({ maxMessageBytes: 16 * 1024 });
    await harness.proxy.restore();
    const [first, big, second] = await Promise.all(results);
    expect(first).toMatchObject({ ok: true });
    expect(big).toMatchObject({ ok: false, error: { code: 'message_too_big' } });
    expect(second).toMatchObject({ ok: true });
    expect(await storedData(harness, 'c')).toEqual(['online', 'small-1', 'small-2']);
    await eventually(() => engine.status(tab).pending === 0);
  });

  it('a write the server refuses at the frame level (a document key over 200 characters) fails alone', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    const bad = engine.connection.transact(tab.tabId, 'd', {}, { ['k'.repeat(201)]: 1 }, true);
    const good = engine.connection.publish(tab.tabId, 'c', 'behind it');
    expect(await bad).toMatchObject({ ok: false, error: { code: 'invalid_message' } });
    expect(await good).toMatchObject({ ok: true });
    await eventually(() => engine.status(tab).pending === 0);
  });

  it.each([
    ['internal', 'the store throws (disk full): `internal`'],
    ['out_of_order', 'the server answers `out_of_order` (two workers of one origin during a deploy)'],
  ] as const)('%s: one paced resend per window of errors, no resend storm — %s', async (failure: 'internal' | 'out_of_order', _why: string) => {
    harness = await Harness.start();
    const store = harness.server.store;
    // Every write fails for a while after the first one arrives, then the store recovers.
    let failingUntil: number | undefined;
    const write = store.write.bind(store);
    store.write = async (requests) => {
      if (requests.some((r) => r.kind === 'publish')) failingUntil ??= Date.now() + 400;
      if (failingUntil !== undefined && Date.now() < failingUntil) {
        if (failure === 'internal') throw new Error('disk on fire');
        return requests.map(() => ({ status: 'out_of_order' as const, expected: 1 }));
      }
      return write(requests);
    };
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => engine.connection.publish(tab.tabId, 'c', i)));
    expect(results.every((r) => r.ok)).toBe(true);
    expect(await storedData(harness, 'c')).toEqual(Array.from({ length: 200 }, (_, i) => i));
    // 200 writes failing for 400 ms: a few paced resends of the window (each ≤ 200 frames), never one per error.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(engine.frames.of('publish')).toBeLessThanOrEqual(200 * 8);
    expect(engine.frames.of('publish')).toBeGreaterThan(200); // the failures did happen
  }, 30_000);
});

describe('the client keeps to the server rate limit', () => {
  it('draining a large outbox never trips the rate limit (no 4007 disconnect and reconnect loop)', async () => {
    harness = await Harness.start({ rateLimit: 200 });
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    harness.proxy.refuse();
    await eventually(() => engine.status(tab).connection === 'offline');
    const results = Array.from({ length: 1200 }, (_, i) => engine.connection.publish(tab.tabId, 'c', i));
    await eventually(() => engine.status(tab).pending === 1200);
    await harness.proxy.restore();
    expect((await Promise.all(results)).every((r) => r.ok)).toBe(true);
    expect((await storedData(harness, 'c')).length).toBe(1200);
    // One handshake before the cut, one after: the drain itself never got the connection closed.
    expect(engine.frames.of('handshake')).toBe(2);
  }, 30_000);
});

describe('a burst of writes goes in few frames', () => {
  it('1,000 publishes made at once: `writes` frames of up to 100, each stored once, in order, on one connection', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => engine.connection.publish(tab.tabId, 'burst', i)));
    expect(results.every((r) => r.ok)).toBe(true);
    expect(results.map((r) => (r.ok ? r.value.offset : null))).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(await storedData(harness, 'burst')).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(engine.frames.of('publish')).toBe(1000);
    // Batched: at most a few dozen frames (100 writes each at most), never one per write.
    expect(engine.frames.of('writes')).toBeGreaterThanOrEqual(10);
    expect(engine.frames.of('writes')).toBeLessThan(100);
    expect(engine.frames.of('handshake')).toBe(1);
  }, 30_000);

  it('frames stay under the server size limit (UTF-8 bytes) and a tiny rate limit (smaller frames, no 4007)', async () => {
    harness = await Harness.start({ maxMessageBytes: 4096, rateLimit: 3 });
    const engine = harness.engine();
    const tab = engine.attach();
    await eventually(() => engine.status(tab).connection === 'online');
    // ~1,100 UTF-8 bytes each (3 per character): three fit in a frame, four do not.
    const text = (i: number) => `${i}:${'€'.repeat(360)}`;
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => engine.connection.publish(tab.tabId, 'big', text(i))));
    expect(results.every((r) => r.ok)).toBe(true);
    expect(await storedData(harness, 'big')).toEqual(Array.from({ length: 40 }, (_, i) => text(i)));
    expect(engine.frames.of('handshake')).toBe(1); // never closed for a frame too big or too many frames
  }, 60_000);
});

describe("a tab's own transactions, before the worker numbered them", () => {
  it('a transaction reading what the previous one wrote ({ local }) commits on it: 50 keystrokes, no conflict, the text whole', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    const snapshots: DocSnapshot[] = [];
    await engine.connection.openDoc(tab.tabId, 'l1', 'typing', (snapshot) => void snapshots.push(snapshot));
    await eventually(() => snapshots.at(-1)?.synced);
    // As a tab typing fast does: each keystroke reads the text its previous keystroke wrote,
    // sent before the worker has stored (numbered) that one.
    const typed = Array.from({ length: 50 }, (_, i) => {
      const text = 'x'.repeat(i + 1);
      const reads = i === 0 ? { text: 0 } : { text: { local: i } };
      return engine.connection.transact(tab.tabId, 'typing', reads, { text }, true, i + 1);
    });
    const outcomes = await Promise.all(typed);
    expect(outcomes.map((o) => (o.ok ? o.value.committed : o.error.code))).toEqual(Array.from({ length: 50 }, () => true));
    expect((await harness.server.store.document('typing', undefined)).keys.text).toMatchObject({ value: JSON.stringify('x'.repeat(50)) });
    // Each snapshot says how far it includes this tab's transactions, never going back.
    const seen = snapshots.map((s) => s.seen ?? 0);
    expect(seen.at(-1)).toBe(50);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
  }, 30_000);

  it('a read of a transaction that was never stored (refused: too big) conflicts instead of committing on a value that never was', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    await engine.connection.openDoc(tab.tabId, 'l2', 'refused', () => {});
    const big = engine.connection.transact(tab.tabId, 'refused', { n: 0 }, { n: 'x'.repeat(70_000) }, true, 1);
    const after = engine.connection.transact(tab.tabId, 'refused', { n: { local: 1 } }, { n: 'derived' }, true, 2);
    expect(await big).toMatchObject({ ok: false, error: { code: 'message_too_big' } });
    expect(await after).toMatchObject({ ok: true, value: { committed: false } });
    expect((await harness.server.store.document('refused', undefined)).keys.n).toBeUndefined();
  }, 30_000);

  it("local numbers are per tab: another tab's `{ local: 1 }` is not this tab's first transaction", async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const [a, b] = [engine.attach(), engine.attach()];
    expect(await engine.connection.transact(a.tabId, 'per-tab', { k: 0 }, { k: 'from a' }, true, 1)).toMatchObject({ ok: true, value: { committed: true } });
    expect(await engine.connection.transact(b.tabId, 'per-tab', { k: { local: 1 } }, { k: 'from b' }, true, 1)).toMatchObject({ ok: true, value: { committed: false } });
    expect((await harness.server.store.document('per-tab', undefined)).keys.k).toMatchObject({ value: JSON.stringify('from a') });
  }, 30_000);
});

describe('client and server disagree on sequences', () => {
  it('a server restored from an older backup: the client moves on explicitly, nothing stuck, nothing lost', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const tab = engine.attach();
    for (const n of [1, 2]) expect(await engine.connection.publish(tab.tabId, 'c', n)).toMatchObject({ ok: true, value: { offset: n } });
    await harness.restartServer(); // checkpoints the WAL into the file
    copyFileSync(harness.dbFile, `${harness.dbFile}.backup`);
    for (const n of [3, 4]) expect(await engine.connection.publish(tab.tabId, 'c', n)).toMatchObject({ ok: true });
    await harness.restartServer({}, () => {
      // The operator restores the backup (a clean close leaves no WAL behind).
      for (const suffix of ['-wal', '-shm']) rmSync(`${harness!.dbFile}${suffix}`, { force: true });
      copyFileSync(`${harness!.dbFile}.backup`, harness!.dbFile);
    });
    // Before: the server expected write 3 forever ("out_of_order") and write 5 never landed.
    expect(await engine.connection.publish(tab.tabId, 'c', 5)).toMatchObject({ ok: true });
    expect(await storedData(harness, 'c')).toEqual([1, 2, 5]);
  }, 20_000);

  it('site data cleared under a live worker: new writes are numbered on, never acknowledged as duplicates of old ones', async () => {
    harness = await Harness.start();
    const db = Harness.newDatabase();
    const engine = harness.engine(db);
    const tab = engine.attach();
    for (const n of [1, 2, 3]) expect(await engine.connection.publish(tab.tabId, 'c', n)).toMatchObject({ ok: true, value: { offset: n } });
    const handle = await db();
    await Promise.all([handle.clear('clients'), handle.clear('outbox')]); // the user clears the site's data
    expect(await engine.connection.publish(tab.tabId, 'c', 'after clearing')).toMatchObject({ ok: true, value: { offset: 4 } });
    expect(await storedData(harness, 'c')).toEqual([1, 2, 3, 'after clearing']);
  });

  it('a browser profile older than the server (restored): its counter moves past what the server applied', async () => {
    harness = await Harness.start();
    const db = Harness.newDatabase();
    const first = harness.engine(db);
    const tab = first.attach();
    for (const n of [1, 2, 3]) await first.connection.publish(tab.tabId, 'c', n);
    first.close();
    const handle = await db();
    const [record] = await handle.getAll('clients');
    await handle.put('clients', { ...record!, nextSeq: 2 }); // the profile's state from before writes 2 and 3
    const second = harness.engine(db);
    const tab2 = second.attach();
    await eventually(() => second.status(tab2).connection === 'online');
    expect(await second.connection.publish(tab2.tabId, 'c', 'new')).toMatchObject({ ok: true, value: { offset: 4 } });
    expect(await storedData(harness, 'c')).toEqual([1, 2, 3, 'new']);
  });

  it('two workers of one profile (a deploy) writing bursts at the same time: no sequence used twice, every write stored once', async () => {
    harness = await Harness.start();
    const db = Harness.newDatabase();
    const [oldWorker, newWorker] = [harness.engine(db), harness.engine(db)];
    const [oldTab, newTab] = [oldWorker.attach(), newWorker.attach()];
    await eventually(() => oldWorker.status(oldTab).connection === 'online' && newWorker.status(newTab).connection === 'online');
    // Each numbers its next burst from what it stored last; the other numbered writes meanwhile.
    const bursts: Promise<unknown>[] = [];
    for (let round = 0; round < 10; round++) {
      for (const [name, engine, tab] of [['old', oldWorker, oldTab], ['new', newWorker, newTab]] as const) {
        for (let i = 0; i < 30; i++) bursts.push(engine.connection.publish(tab.tabId, 'deploy', `${name}-${round}-${i}`));
      }
      await new Promise((resolve) => setTimeout(resolve, round % 3));
    }
    const results = (await Promise.all(bursts)) as { ok: boolean }[];
    expect(results.every((r) => r.ok)).toBe(true);
    const stored = (await storedData(harness, 'deploy')) as string[];
    expect(stored).toHaveLength(600);
    expect(new Set(stored).size).toBe(600);
  }, 30_000);

  it('a worker restart resends what was queued, and the server answers the resends with their first outcome', async () => {
    harness = await Harness.start();
    const db = Harness.newDatabase();
    const first = harness.engine(db);
    const tab = first.attach();
    expect(await first.connection.publish(tab.tabId, 'c', 'a')).toMatchObject({ ok: true });
    harness.proxy.refuse();
    await eventually(() => first.status(tab).connection === 'offline');
    void first.connection.publish(tab.tabId, 'c', 'b');
    void first.connection.publish(tab.tabId, 'c', 'c');
    await eventually(() => first.status(tab).pending === 2);
    first.close();
    await harness.proxy.restore();
    const second = harness.engine(db);
    const tab2 = second.attach();
    await eventually(() => second.status(tab2).connection === 'online' && second.status(tab2).pending === 0);
    expect(await storedData(harness, 'c')).toEqual(['a', 'b', 'c']);
  });
});

describe('a leader tab goes away (no SharedWorker): its successor stores nothing twice', () => {
  it('writes the old leader stored, sent again under their keys by their tab: each stored and delivered once, in order; a key already answered gets its answer', async () => {
    harness = await Harness.start();
    const db = Harness.newDatabase();
    await takeLead(await db(), { id: 'L1', term: 1 });
    const first = harness.engine(db, { fence: 'L1' });
    const tab = first.attach();
    await eventually(() => first.status(tab).connection === 'online');
    expect(await first.connection.publish(tab.tabId, 'c', 'before', `p:${tab.tabId}:0`)).toEqual({ ok: true, value: { offset: 1 } });
    harness.proxy.refuse();
    await eventually(() => first.status(tab).connection === 'offline');
    for (let id = 1; id <= 20; id++) void first.connection.publish(tab.tabId, 'c', `w${id}`, `p:${tab.tabId}:${id}`);
    await eventually(() => first.status(tab).pending === 20);
    first.close(); // the leader tab closed

    await takeLead(await db(), { id: 'L2', term: 2 });
    const second = harness.engine(db, { fence: 'L2' });
    const same = second.attach(); // the same tab (`tab-1`), now through the new leader
    expect(same.tabId).toBe(tab.tabId);
    // Its relay sends again everything not settled, and writes made since: 20 + 5.
    const outcomes = Array.from({ length: 25 }, (_, i) => second.connection.publish(same.tabId, 'c', `w${i + 1}`, `p:${same.tabId}:${i + 1}`));
    await harness.proxy.restore();
    const settled = await Promise.all(outcomes);
    expect(settled).toEqual(Array.from({ length: 25 }, (_, i) => ({ ok: true, value: { offset: i + 2 } })));
    expect(await storedData(harness, 'c')).toEqual(['before', ...Array.from({ length: 25 }, (_, i) => `w${i + 1}`)]);
    // Sent again once more (its answer was lost with a leader): the same answer, nothing stored.
    expect(await second.connection.publish(same.tabId, 'c', 'w3', `p:${same.tabId}:3`)).toEqual({ ok: true, value: { offset: 4 } });
    expect(await storedData(harness, 'c')).toHaveLength(26);
  });

  it('a deposed leader that wakes up (its tab was frozen) stores no write: the database names another leader', async () => {
    harness = await Harness.start();
    const db = Harness.newDatabase();
    await takeLead(await db(), { id: 'L1', term: 1 });
    const old = harness.engine(db, { fence: 'L1' });
    const tab = old.attach();
    await eventually(() => old.status(tab).connection === 'online');
    expect(await old.connection.publish(tab.tabId, 'c', 'while leading')).toMatchObject({ ok: true });
    expect(await takeLead(await db(), { id: 'L2', term: 2 })).toBe(true); // another tab took over meanwhile
    // The deposed one's late record (elected, then replaced before it got to write) changes nothing.
    expect(await takeLead(await db(), { id: 'L1', term: 1 })).toBe(false);
    expect(await old.connection.publish(tab.tabId, 'c', 'after', `p:${tab.tabId}:9`)).toMatchObject({ ok: false, error: { code: 'connection_lost' } });
    expect(await (await old.connection.writerOf('')).outbox.list()).toEqual([]);
    expect(await storedData(harness, 'c')).toEqual(['while leading']);
  });
});

describe('every event reaches every tab that asked for it', () => {
  it('a reloaded tab joining a subscription another tab keeps alive gets what it missed since its own offset, then live events, each once', async () => {
    harness = await Harness.start();
    const engine = harness.engine();
    const keeper = engine.attach();
    const kept: ChannelDelivery[] = [];
    await engine.connection.subscribe(keeper.tabId, 'k', 'ch', (d) => void kept.push(d));
    await eventually(() => kept.find((d) => d.kind === 'subscribed'));
    for (const n of [1, 2, 3, 4, 5]) await engine.connection.publish(keeper.tabId, 'ch', n);
    await eventually(() => kept.filter((d) => d.kind === 'event').length === 5);
    const epoch = (kept.find((d) => d.kind === 'subscribed') as { epoch: string }).epoch;

    // The other tab had seen up to offset 2 before its reload; it comes back now.
    const back = engine.attach();
    const got: ChannelDelivery[] = [];
    await engine.connection.subscribe(back.tabId, 'b', 'ch', (d) => void got.push(d), { offset: 2, epoch });
    void engine.connection.publish(keeper.tabId, 'ch', 6);
    await eventually(() => got.filter((d) => d.kind === 'event').length === 4, 5000, `events 3–6 in ${JSON.stringify(got)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(got.flatMap((d) => (d.kind === 'event' ? [d.offset] : []))).toEqual([3, 4, 5, 6]);
    expect(got.flatMap((d) => (d.kind === 'event' ? [d.data] : []))).toEqual([3, 4, 5, 6]);

    // A tab that comes back from another epoch (the channel was reset meanwhile) is told, not left with a gap.
    const stale = engine.attach();
    const told: ChannelDelivery[] = [];
    await engine.connection.subscribe(stale.tabId, 's', 'ch', (d) => void told.push(d), { offset: 4, epoch: 'an-old-epoch' });
    await eventually(() => told.find((d) => d.kind === 'reset'), 5000, 'a reset');
  });
});

describe('catching up past a page the server cut by bytes', () => {
  it('a reloaded tab that missed 60 events of 20 KB (1.2 MB: pages of about 256 KiB) gets all of them, in order', async () => {
    harness = await Harness.start({ apiKey: 'k' });
    const engine = harness.engine();
    const keeper = engine.attach();
    const kept: ChannelDelivery[] = [];
    await engine.connection.subscribe(keeper.tabId, 'k', 'big', (d) => void kept.push(d));
    const subscribed = await eventually(() => kept.find((d) => d.kind === 'subscribed') as { epoch: string } | undefined);
    const payload = 'x'.repeat(20_000);
    for (let n = 1; n <= 60; n++) {
      const response = await fetch(`http://127.0.0.1:${harness.server.port}/api/publish`, {
        method: 'POST',
        headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
        body: JSON.stringify({ channel: 'big', data: { n, payload } }),
      });
      expect(response.status).toBe(200);
    }
    await eventually(() => kept.filter((d) => d.kind === 'event').length === 60);
    const back = engine.attach();
    const got: ChannelDelivery[] = [];
    await engine.connection.subscribe(back.tabId, 'b', 'big', (d) => void got.push(d), { offset: 0, epoch: subscribed.epoch });
    await eventually(() => got.filter((d) => d.kind === 'event').length === 60, 8000, 'all 60 events');
    expect(got.flatMap((d) => (d.kind === 'event' ? [d.offset] : []))).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
  });
});

describe('restoring a backup under live clients', () => {
  it('clients that held offsets and versions from the lost future get a reset and the full state, never a silent gap', async () => {
    harness = await Harness.start();
    const h = harness;
    const engine = h.engine();
    const tab = engine.attach();
    const deliveries: ChannelDelivery[] = [];
    await engine.connection.subscribe(tab.tabId, 's1', 'ch', (d) => void deliveries.push(d));
    let view: DocSnapshot | undefined;
    await engine.connection.openDoc(tab.tabId, 'd1', 'd', (snapshot) => void (view = snapshot));
    await eventually(() => deliveries.some((d) => d.kind === 'subscribed') && view?.synced);
    for (const n of [1, 2]) await engine.connection.publish(tab.tabId, 'ch', n);
    await engine.connection.transact(tab.tabId, 'd', {}, { k: 1 }, true);

    const backup = `${h.dbFile}.backup`;
    await backupSqlite(h.dbFile, backup); // online, while the server runs

    for (const n of [3, 4]) await engine.connection.publish(tab.tabId, 'ch', n);
    await engine.connection.transact(tab.tabId, 'd', {}, { k: 2, lost: 'x' }, true);
    await eventually(() => deliveries.filter((d) => d.kind === 'event').length === 4 && view?.version === 2);

    // The disk dies; the operator restores last night's backup. Before this client reconnects,
    // others write again: the same offsets and versions now hold other events and values.
    h.proxy.refuse();
    await eventually(() => engine.status(tab).connection === 'offline', 5000, 'offline');
    await h.restartServer({}, () => restoreSqlite(backup, h.dbFile));
    const api = (data: string): WriteRequest => ({ kind: 'publish', channel: 'ch', data, clientId: null, seq: null, user: null });
    await h.server.store.write([api('"other-3"'), api('"other-4"')]);
    await h.server.store.write([{ kind: 'transact', doc: 'd', reads: {}, writes: { k: '"other"' }, clientId: null, seq: null, user: null }]);
    deliveries.length = 0;
    await h.proxy.restore();

    // The channel: the lost offsets are reported (the events after them follow), not skipped silently.
    await eventually(() => engine.status(tab).connection === 'online', 15_000, 'back online');
    await eventually(() => deliveries.find((d) => d.kind === 'reset'), 5000, `a reset in ${JSON.stringify(deliveries)}`);
    // The document: the full state of the restored server, not a delta from a version it never had.
    const server = await h.server.store.document('d', undefined);
    await eventually(() => view?.synced && JSON.stringify(view.view) === JSON.stringify({ k: 'other' }), 8000, `the view ${JSON.stringify(view?.view)} equals the server's`);
    expect(server.version).toBe(2);
  }, 30_000);
});

describe('tokens and users', () => {
  it('tokens valid for more than 24.8 days stay connected', async () => {
    harness = await Harness.start({ tokenSecret: SECRET });
    const longLived = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setExpirationTime('30d').sign(new TextEncoder().encode(SECRET));
    const engine = harness.engine();
    const tab = engine.attach(async () => longLived);
    await eventually(() => engine.status(tab).connection === 'online');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(engine.status(tab).connection).toBe('online');
    expect(engine.frames.of('handshake')).toBe(1);
  });

  it('a failing token function after a reload never orphans writes: kept, counted, sent as the last user once it works', async () => {
    harness = await Harness.start({ tokenSecret: SECRET });
    const db = Harness.newDatabase();
    const before = harness.engine(db);
    const aliceTab = before.attach(() => token('alice'));
    await before.connection.publish(aliceTab.tabId, 'c', 'online as alice');
    before.close();
    harness.proxy.refuse();

    // The reload, offline: the token endpoint cannot be reached either.
    let tokenWorks = false;
    const after = harness.engine(db);
    const tab = after.attach(async () => {
      if (!tokenWorks) throw new Error('fetch /tether-token failed');
      return token('alice');
    });
    const queued = after.connection.publish(tab.tabId, 'c', 'written offline');
    await eventually(() => after.status(tab).pending === 1, 8000, 'the write counted in pending');
    expect(after.status(tab).error).toMatchObject({ code: 'unauthorized' });

    tokenWorks = true;
    await harness.proxy.restore();
    expect(await queued).toMatchObject({ ok: true, value: { offset: 2 } });
    await eventually(() => after.status(tab).pending === 0 && after.status(tab).error === null);
    expect(await storedData(harness, 'c')).toEqual(['online as alice', 'written offline']);
  }, 20_000);

  it("a tab's writes belong to its own user at once, not to the token the socket used last", async () => {
    harness = await Harness.start({ tokenSecret: SECRET });
    const engine = harness.engine();
    const alice = engine.attach(() => token('alice'));
    await engine.connection.publish(alice.tabId, 'c', 'from alice');
    const bob = engine.attach(() => token('bob'));
    // Before: Bob's write went into Alice's outbox (sent under her token), or waited for a reconnect.
    expect(await engine.connection.publish(bob.tabId, 'c', 'from bob')).toMatchObject({ ok: true });
    expect(await storedData(harness, 'c')).toEqual(['from alice', 'from bob']);
    // Alice's tab writes as Alice still: her write waits for her token, it is never sent as Bob's.
    void engine.connection.publish(alice.tabId, 'c', 'alice again');
    await eventually(() => engine.status(alice).pending === 1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await storedData(harness, 'c')).toEqual(['from alice', 'from bob']);
  });
});

describe('the worker keeps its storage bounded', () => {
  it('cached documents unused for 30 days are dropped, unless they list conflicts; conflicts are capped at 100', async () => {
    const db = Harness.newDatabase();
    const old = Date.now() - 31 * 24 * 3600 * 1000;
    const handle = await db();
    await handle.put('docs', { url: 'ws://x/ws', doc: 'stale', version: 3, keys: {}, conflicts: [], at: old });
    await handle.put('docs', { url: 'ws://x/ws', doc: 'fresh', version: 3, keys: {}, conflicts: [], at: Date.now() });
    await handle.put('docs', { url: 'ws://x/ws', doc: 'unseen-conflict', version: 3, keys: {}, conflicts: [{ writes: {}, current: {}, at: old }], at: old });
    const documents = new Documents('ws://x/ws', db, () => true, () => []);
    await eventually(async () => (await handle.get('docs', ['ws://x/ws', 'stale'])) === undefined, 2000, 'the stale document dropped');
    expect(await handle.get('docs', ['ws://x/ws', 'fresh'])).toBeDefined();
    expect(await handle.get('docs', ['ws://x/ws', 'unseen-conflict'])).toBeDefined();

    let conflicts = 0;
    await documents.add('tab', 'l', 'board', (snapshot) => void (conflicts = snapshot.conflicts.length));
    for (let seq = 1; seq <= 120; seq++) {
      documents.rejected({ type: 'conflict', seq, doc: 'board', current: {}, version: 0 }, { op: 'transact', doc: 'board', reads: {}, writes: { k: seq }, clientId: 'c', seq, url: 'ws://x/ws', user: '', createdAt: 0 }, true);
    }
    documents.changed('board');
    expect(conflicts).toBe(100);
  });
});

describe('deleted keys in the cached view', () => {
  it('an acknowledgement that arrives after the broadcast of a later delete does not resurrect the key', async () => {
    const db = Harness.newDatabase();
    const documents = new Documents('ws://x/ws', db, () => true, () => []);
    let view: Record<string, unknown> = {};
    await documents.add('tab', 'l1', 'board', (snapshot) => void (view = snapshot.view));
    documents.handle({ type: 'doc', doc: 'board', version: 0, full: true, keys: {} });
    documents.handle({ type: 'doc', doc: 'board', version: 1, full: false, keys: { card: { version: 1, value: 'mine' } } });
    documents.handle({ type: 'doc', doc: 'board', version: 2, full: false, keys: { card: { version: 2, deleted: true } } });
    documents.committed('board', { card: 'mine' }, 1); // the ack of version 1, late
    documents.changed('board');
    expect(view).toEqual({});
    // Also after a full state that no longer lists the key (a reload, a reconnect):
    documents.handle({ type: 'doc', doc: 'board', version: 5, full: true, keys: {} });
    documents.committed('board', { card: 'mine' }, 3);
    documents.changed('board');
    expect(view).toEqual({});
  });
});

describe('answers out of order', () => {
  it('a later transaction acknowledged before an earlier one: the view does not go back to the earlier one', async () => {
    const db = Harness.newDatabase();
    const entry = (seq: number, text: string): OutboxEntry => ({ op: 'transact', doc: 'notes', reads: {}, writes: { text }, clientId: 'c', seq, url: 'ws://x/ws', user: '', createdAt: 0 });
    let queue = [entry(1, 'a'), entry(2, 'ab'), entry(3, 'abc')];
    const documents = new Documents('ws://x/ws', db, () => true, () => queue);
    const texts: unknown[] = [];
    await documents.add('tab', 'l1', 'notes', (snapshot) => void texts.push(snapshot.view['text']));
    documents.handle({ type: 'doc', doc: 'notes', version: 0, full: true, keys: {} });
    // The server answers the `writes` frame [1, 2] after the single write 3.
    documents.committed('notes', { text: 'abc' }, 3, { clientId: 'c', seq: 3 });
    queue = queue.filter((e) => e.seq !== 3);
    documents.changed('notes');
    documents.handle({ type: 'doc', doc: 'notes', version: 3, full: false, keys: { text: { version: 3, value: 'abc' } } });
    queue = [];
    documents.changed('notes');
    expect(texts.at(-1)).toBe('abc');
    expect(texts.slice(texts.indexOf('abc'))).toEqual(texts.slice(texts.indexOf('abc')).map(() => 'abc')); // never 'ab' again
  });
});
