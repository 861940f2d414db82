import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from './sqlite.js';
import { backupSqlite, restoreSqlite } from './sqlite-backup.js';
import type { EventStore, WriteRequest } from './event-store.js';
import { describeEventStore } from './conformance.js';

const retention = { maxEvents: 1000, maxAgeMs: 3600_000 };

/** Each store gets a file of its own (a second instance opens the same file, as a restarted server does). */
const files = new WeakMap<EventStore, string>();
describeEventStore('SQLite', {
  async open(options) {
    const path = join(mkdtempSync(join(tmpdir(), 'tether-unit-')), 'events.db');
    const store = openSqliteStore({ path, retention: { ...retention, ...options }, ...(options.maxDocBytes === undefined ? {} : { maxDocBytes: options.maxDocBytes }) });
    files.set(store, path);
    return store;
  },
  async attach(to, options) {
    const path = files.get(to)!;
    const store = openSqliteStore({ path, retention: { ...retention, ...options }, ...(options.maxDocBytes === undefined ? {} : { maxDocBytes: options.maxDocBytes }) });
    files.set(store, path);
    return store;
  },
});

let stores: EventStore[] = [];
afterEach(async () => {
  await Promise.all(stores.map((s) => s.close()));
  stores = [];
});

function open(path: string) {
  const store = openSqliteStore({ path, retention });
  stores.push(store);
  return store;
}

const pub = (seq: number, data = `"w${seq}"`, clientId = 'client-aaaa', user: string | null = 'u1'): WriteRequest => ({
  kind: 'publish', channel: 'c', data, clientId, seq, user,
});

describe('backup and restore', () => {
  it('a restored backup has the data of the backup and new epochs for every channel and for documents', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-unit-'));
    const path = join(dir, 'events.db');
    const live = open(path);
    await live.write([pub(1), { kind: 'transact', doc: 'd', reads: {}, writes: { k: '1' }, clientId: null, seq: null, user: null }]);
    const before = { channel: (await live.history('c', undefined, 1)).epoch, docs: (await live.document('d', undefined)).epoch };
    await backupSqlite(path, join(dir, 'backup.db'));
    await live.write([pub(2)]);
    await live.close();
    stores = [];
    restoreSqlite(join(dir, 'backup.db'), path);
    const restored = open(path);
    const history = await restored.history('c', { offset: 0, epoch: before.channel }, 10);
    expect(history).toMatchObject({ reset: true, head: 1 });
    expect(history.epoch).not.toBe(before.channel);
    expect(history.events.map((e) => e.data)).toEqual(['"w1"']);
    const doc = await restored.document('d', 1, before.docs);
    expect(doc).toMatchObject({ full: true, version: 1, keys: { k: { version: 1, value: '1' } } });
    expect(doc.epoch).not.toBe(before.docs);
    // The client's sequence: the backup knew write 1 only.
    expect(await restored.handshake('client-aaaa', 'u1', 3)).toEqual({ lastSeq: 2, movedFrom: 1 });
  });
});
