/**
 * The PostgreSQL store: the shared conformance suite on a new database per store, plus what only
 * a networked database has: processes migrating at once, a schema newer than the server, and
 * writers in separate OS processes. Needs PostgreSQL (trust auth) at TETHER_TEST_PG_URL,
 * default postgres://postgres@127.0.0.1:5432/test; every database it creates is dropped after.
 */
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { Client } from 'pg';
import { openPostgresStore } from './postgres.js';
import { openSqliteStore } from './sqlite.js';
import type { EventStore, RetentionPolicy, WriteRequest } from './event-store.js';
import { describeEventStore } from './conformance.js';

// Every write is a durable commit over a connection: the suite's 2,000-write tests take ~4 s here, more on a busy machine.
vi.setConfig({ testTimeout: 30_000 });

const ADMIN_URL = process.env.TETHER_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const retention: RetentionPolicy = { maxEvents: 1000, maxAgeMs: 3600_000 };
const here = dirname(fileURLToPath(import.meta.url));

let admin: Promise<Client> | undefined;
const databases: string[] = [];

/** A new, empty database; returns its URL. */
async function createDatabase(): Promise<string> {
  admin ??= (async () => {
    const client = new Client({ connectionString: ADMIN_URL });
    await client.connect();
    return client;
  })();
  const name = `tether_test_${randomBytes(6).toString('hex')}`;
  await (await admin).query(`CREATE DATABASE ${name}`);
  databases.push(name);
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Runs `work` on a connection of its own to the database at `url`, outside any store. */
async function onDatabase<T>(url: string, work: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

afterAll(async () => {
  // The stores are closed by then (afterEach); FORCE ends any connection a failed test left open.
  if (admin === undefined) return;
  const client = await admin;
  try {
    // A few at a time: each drop waits for a checkpoint, one after another they outlast a hook's timeout.
    const pending = [...databases];
    const drop = async (): Promise<void> => {
      for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
        await onDatabase(ADMIN_URL, (db) => db.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
      }
    };
    await Promise.all([drop(), drop(), drop(), drop()]);
  } finally {
    await client.end();
  }
}, 60_000);

const urls = new WeakMap<EventStore, string>();
async function openOn(url: string, options: { maxEvents: number; maxDocBytes?: number }): Promise<EventStore> {
  const { maxDocBytes, ...policy } = options;
  const store = await openPostgresStore({ url, retention: { ...retention, ...policy }, ...(maxDocBytes === undefined ? {} : { maxDocBytes }) });
  urls.set(store, url);
  return store;
}

describeEventStore('PostgreSQL', {
  async open(options) {
    return openOn(await createDatabase(), options);
  },
  async attach(to, options) {
    const url = urls.get(to);
    if (url === undefined) throw new Error('attach: the store was not opened by this harness');
    return openOn(url, options);
  },
});

let stores: EventStore[] = [];
afterEach(async () => {
  await Promise.all(stores.map((s) => s.close()));
  stores = [];
});
function keep<T extends EventStore>(store: T): T {
  stores.push(store);
  return store;
}

const api = (channel: string, data: string): WriteRequest => ({ kind: 'publish', channel, data, clientId: null, seq: null, user: null });

describe('PostgreSQL: several processes on one database', () => {
  it('stores opened at the same moment on a new database all migrate it safely, once', async () => {
    const url = await createDatabase();
    const opened = await Promise.all([1, 2, 3].map(() => openPostgresStore({ url, retention })));
    opened.forEach(keep);
    const [a, b, c] = opened as [EventStore, EventStore, EventStore];
    expect(await a.write([api('x', '1')])).toMatchObject([{ status: 'stored', event: { offset: 1 } }]);
    expect(await b.write([api('x', '2')])).toMatchObject([{ status: 'stored', event: { offset: 2 } }]);
    expect((await c.history('x', { offset: 0 }, 10)).events.map((e) => e.data)).toEqual(['1', '2']);
    // One migration ran: one schema version row, one documents epoch for everyone.
    expect(await onDatabase(url, async (db) => (await db.query('SELECT version FROM schema_version')).rows)).toEqual([{ version: 1 }]);
    const epochs = new Set(await Promise.all(opened.map(async (s) => (await s.document('d', undefined)).epoch)));
    expect(epochs.size).toBe(1);
  });

  it('refuses a database with a newer schema, with a clear error', async () => {
    const url = await createDatabase();
    await (await openPostgresStore({ url, retention })).close();
    await onDatabase(url, (db) => db.query('UPDATE schema_version SET version = 99'));
    await expect(openPostgresStore({ url, retention })).rejects.toThrow(
      'the events DB has schema version 99, newer than this server knows (1); upgrade the server',
    );
  });

  it('answers ping while open; close() twice does not throw', async () => {
    const store = await openPostgresStore({ url: await createDatabase(), retention });
    expect(store.kind).toBe('postgres');
    await expect(store.ping()).resolves.toBeUndefined();
    await store.close();
    await expect(store.close()).resolves.toBeUndefined();
    await expect(store.ping()).rejects.toThrow();
  });

  it('batches naming the same channels and documents in opposite orders, from two stores at once, all apply without a deadlock', async () => {
    const url = await createDatabase();
    const a = keep(await openPostgresStore({ url, retention }));
    const b = keep(await openPostgresStore({ url, retention }));
    const tx = (doc: string, value: string): WriteRequest => ({ kind: 'transact', doc, reads: {}, writes: { k: value }, clientId: null, seq: null, user: null });
    const rounds = 20;
    const run = async (store: EventStore, names: string[], tag: string) => {
      const statuses: string[] = [];
      for (let r = 0; r < rounds; r++) {
        const batch = names.flatMap((name) => [api(name, `"${tag}${r}"`), tx(name, `"${tag}${r}"`)]);
        for (const outcome of await store.write(batch)) statuses.push(outcome.status);
      }
      return statuses;
    };
    const [x, y] = await Promise.all([run(a, ['p', 'q', 'r'], 'a'), run(b, ['r', 'q', 'p'], 'b')]);
    expect([...x, ...y].filter((s) => s !== 'stored' && s !== 'committed')).toEqual([]);
    for (const name of ['p', 'q', 'r']) {
      expect((await a.history(name, { offset: 0 }, 100)).events.map((e) => e.offset)).toEqual(Array.from({ length: 2 * rounds }, (_, i) => i + 1));
      expect((await b.document(name, undefined)).version).toBe(2 * rounds);
    }
    // Rows are locked in one order, so the batches waited for each other and never deadlocked
    // (retries would hide a deadlock from callers, at 1 s each to detect). Closed first: a
    // connection reports its statistics when it ends.
    stores = stores.filter((s) => s !== a && s !== b);
    await Promise.all([a.close(), b.close()]);
    const { rows } = await onDatabase(url, (db) => db.query<{ deadlocks: number }>('SELECT deadlocks::int AS deadlocks FROM pg_stat_database WHERE datname = current_database()'));
    expect(rows).toEqual([{ deadlocks: 0 }]);
  });

  it('writers in two OS processes publishing to one channel at once get consecutive offsets, each event once', async () => {
    const url = await createDatabase(); // not migrated yet: the two processes also migrate it at once
    // The child runs this store's own source, bundled (pg stays external and resolves from the repo).
    const bundle = await build({
      stdin: { contents: CHILD, resolveDir: here, sourcefile: 'postgres-child.ts', loader: 'ts' },
      bundle: true, platform: 'node', format: 'esm', packages: 'external', target: 'node20', write: false, logLevel: 'warning',
    });
    const code = bundle.outputFiles[0]!.text;
    const children = ['p0', 'p1'].map((name) => runChild(code, { CHILD_URL: url, CHILD_NAME: name }));
    try {
      // Both have opened the store (and migrated) before either writes: the writes overlap.
      await Promise.all(children.map((child) => child.ready));
      for (const child of children) child.go();
      const results = await Promise.all(children.map((child) => child.done));
      for (const statuses of results) expect(statuses).toEqual(Array.from({ length: 200 }, () => 'stored'));
    } finally {
      // One that failed must not leave the other waiting for its start signal forever.
      for (const child of children) child.kill();
    }

    const store = keep(await openPostgresStore({ url, retention }));
    const history = await store.history('shared', { offset: 0 }, 1000);
    expect(history.head).toBe(400);
    expect(history.events.map((e) => e.offset)).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
    const data = history.events.map((e) => JSON.parse(e.data) as string);
    expect(new Set(data).size).toBe(400);
    // Every client's writes are there once, in its sequence order.
    for (const name of ['p0', 'p1']) {
      for (let lane = 0; lane < 4; lane++) {
        const mine = data.filter((d) => d.startsWith(`${name}-lane-${lane}:`));
        expect(mine).toEqual(Array.from({ length: 50 }, (_, i) => `${name}-lane-${lane}:${i + 1}`));
      }
    }
  }, 30_000);
});

describe('PostgreSQL: as SQLite, where the SQL differs', () => {
  it('pages history by bytes like SQLite: stops once the budget is reached, always at least one event', async () => {
    const pg = keep(await openPostgresStore({ url: await createDatabase(), retention }));
    const sqlite = keep(openSqliteStore({ path: ':memory:', retention }));
    const writes = ['"aaaaaaaa"', '"bb"', '"cccccccccccccccc"', '"d"', '"eeeeeeee"'].map((data) => api('c', data));
    await pg.write(writes);
    await sqlite.write(writes);
    const page = async (store: EventStore, from: number, limit: number, maxBytes?: number) =>
      (await store.history('c', { offset: from }, limit, maxBytes)).events.map((e) => [e.offset, e.data]);
    for (const [from, limit, maxBytes] of [[0, 10, 1], [0, 10, 10], [0, 10, 11], [0, 10, 25], [0, 2, 1000], [1, 10, 20], [0, 10, undefined], [5, 10, 1]] as const) {
      expect(await page(pg, from, limit, maxBytes), `from ${from}, limit ${limit}, maxBytes ${maxBytes}`).toEqual(await page(sqlite, from, limit, maxBytes));
    }
    expect(await page(pg, 0, 10, 11)).toEqual([[1, '"aaaaaaaa"'], [2, '"bb"']]);
  });

  it('text PostgreSQL cannot store (U+0000) is refused for that write alone, never failing the rest of the batch', async () => {
    const store = keep(await openPostgresStore({ url: await createDatabase(), retention }));
    const tx = (seq: number, writes: Record<string, string | null>): WriteRequest => ({ kind: 'transact', doc: 'd', reads: { 'a\u0000b': 0 }, writes, clientId: 'client-aaaa', seq, user: 'u1' });
    // A key with U+0000 is absent (reads of it hold at version 0, a delete of it deletes nothing); writing one is refused.
    const outcomes = await store.write([tx(1, { 'a\u0000b': '1' }), tx(2, { ok: '1', 'gone\u0000': null }), api('c', '1')]);
    expect(outcomes).toMatchObject([{ status: 'refused', code: 'invalid_argument' }, { status: 'committed' }, { status: 'stored' }]);
    // Refused for good: the sequence moved on, and a resend gets the same answer.
    expect(await store.write([tx(1, { 'a\u0000b': '1' })])).toEqual([outcomes[0]]);
    expect((await store.document('d', undefined)).keys).toEqual({ ok: { version: 1, value: '1' } });
    // A user id with U+0000 (from a token) cannot own a client: its writes are refused, nothing is stored.
    const stranger: WriteRequest = { kind: 'publish', channel: 'c', data: '2', clientId: 'client-bbbb', seq: 1, user: 'u\u0000' };
    expect(await store.write([stranger, api('c', '3')])).toMatchObject([{ status: 'refused', code: 'invalid_argument' }, { status: 'stored', event: { offset: 2 } }]);
    await expect(store.handshake('client-bbbb', 'u\u0000', 1)).rejects.toThrow('contains the character U+0000');
    // An epoch a client sends is compared, never stored: one with U+0000 is just another epoch.
    expect(await store.history('c', { offset: 1, epoch: 'x\u0000' }, 10)).toMatchObject({ reset: true, head: 2 });
    expect(await store.document('d', 1, 'x\u0000')).toMatchObject({ full: true, version: 1 });
  });
});

/** The child process: opens the store, says ready, waits for go, then 4 clients publish 50 writes each (batches of 1–3). */
const CHILD = `
import { openPostgresStore } from './postgres.js';
const url = process.env.CHILD_URL;
const name = process.env.CHILD_NAME;
const store = await openPostgresStore({ url, retention: { maxEvents: 10000, maxAgeMs: 3600000 }, maxConnections: 4 });
try {
  const go = new Promise((resolve) => process.once('message', resolve));
  process.send('ready');
  await go;
  const lanes = await Promise.all([0, 1, 2, 3].map(async (lane) => {
    const clientId = name + '-lane-' + lane;
    const statuses = [];
    for (let seq = 1; seq <= 50;) {
      const size = Math.min(1 + (seq % 3), 51 - seq);
      const batch = Array.from({ length: size }, (_, i) => ({
        kind: 'publish', channel: 'shared', data: JSON.stringify(clientId + ':' + (seq + i)), clientId, seq: seq + i, user: 'u1',
      }));
      for (const outcome of await store.write(batch)) statuses.push(outcome.status);
      seq += size;
    }
    return statuses;
  }));
  process.stdout.write(JSON.stringify(lanes.flat()));
} finally {
  await store.close();
  process.disconnect();
}
`;

/** Starts a child running `code` (an ES module, from stdin) with an IPC channel for the start signal. */
function runChild(code: string, env: Record<string, string>): { ready: Promise<void>; go(): void; done: Promise<string[]>; kill(): void } {
  const child = spawn(process.execPath, ['--input-type=module'], {
    // From the repository root, so that `pg` resolves from its node_modules.
    cwd: resolve(here, '../..'),
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe', 'ipc'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolveExit, reject) => {
    child.once('error', reject);
    // 'close', not 'exit': by then stdout has been read to the end.
    child.once('close', (status) => resolveExit(status));
  });
  const ready = new Promise<void>((resolveReady, reject) => {
    child.once('message', () => resolveReady());
    void exited.then((status) => reject(new Error(`the child exited (${status}) before it was ready: ${stderr}`)), reject);
  });
  child.stdin!.end(code);
  const done = exited.then((status) => {
    if (status !== 0) throw new Error(`the child exited with ${status}: ${stderr}`);
    return JSON.parse(stdout) as string[];
  });
  return {
    ready,
    done,
    go: () => child.send('go'),
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    },
  };
}
